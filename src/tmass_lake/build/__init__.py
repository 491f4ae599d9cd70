"""Build: IRSA files to HATS collections (map → plan → reduce → finish) on Dask."""

from tmass_lake.build.arguments import BuildArguments
from tmass_lake.build.pipeline import BuildError, build_table

__all__ = ["BuildArguments", "BuildError", "build_table"]
