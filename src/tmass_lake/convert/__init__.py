"""Conversion: IRSA inputs into HATS collections and a whole lake, on Dask.

``sources → schema → conversion → lake API``: this package is the conversion. A table build
runs map → plan → reduce → finish (:mod:`~tmass_lake.convert.collection`, or
:mod:`~tmass_lake.convert.parquet_table` for tables without positions) inside a build session
(lock, scratch, JSON resume plan); :mod:`~tmass_lake.convert.lake_build` runs the pipelines.

The names below are loaded on first use (PEP 562), so that a light module of the package
(:mod:`~tmass_lake.convert.pipelines`, :mod:`~tmass_lake.convert.manifest`) can be imported by
the command line without the whole build machinery.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
LAZY_EXPORTS = {
    "LakeArguments": "tmass_lake.convert.lake_build", "build_lake": "tmass_lake.convert.lake_build",
    "BuildParameters": "tmass_lake.convert.parameters", "TableArguments": "tmass_lake.convert.parameters",
    "resolve_parameters": "tmass_lake.convert.parameters",
    "table_arguments": "tmass_lake.convert.parameters",
    "load_pipelines": "tmass_lake.convert.pipelines", "build_table": "tmass_lake.convert.table",
}


def __getattr__(name: str) -> Any:
    if name not in LAZY_EXPORTS:
        raise AttributeError(f"module 'tmass_lake.convert' has no attribute {name!r}")
    return getattr(import_module(LAZY_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
