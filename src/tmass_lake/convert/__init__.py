"""Conversion: IRSA inputs into HATS collections and a whole lake, on Dask.

``sources → schema → conversion → lake API``: this package is the conversion. A table build
runs map → plan → reduce → finish (:mod:`~tmass_lake.convert.collection`, or
:mod:`~tmass_lake.convert.parquet_table` for tables without positions) inside a build session
(lock, scratch, JSON resume plan); :mod:`~tmass_lake.convert.lake_build` runs the pipelines.
"""

from tmass_lake.convert.lake_build import LakeArguments, build_lake
from tmass_lake.convert.parameters import (
    BuildParameters,
    TableArguments,
    resolve_parameters,
    table_arguments,
)
from tmass_lake.convert.pipelines import load_pipelines
from tmass_lake.convert.table import build_table

__all__ = ["BuildParameters", "LakeArguments", "TableArguments", "build_lake", "build_table",
           "load_pipelines", "resolve_parameters", "table_arguments"]
