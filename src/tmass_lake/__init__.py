"""tmass-lake: the 2MASS Extended Mission as a HATS data lake.

``open_lake(url)`` opens a built lake (see :mod:`tmass_lake.lake`); the conversion is
:mod:`tmass_lake.convert`, the command line ``tmass-lake``.

``Lake`` and ``open_lake`` are loaded on first use (PEP 562): importing a submodule such as
:mod:`tmass_lake.cli` does not import lsdb and Dask, so ``tmass-lake --help`` answers at once.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tmass_lake.lake import Lake, open_lake

__all__ = ["Lake", "open_lake"]
LAZY_EXPORTS = {"Lake": "tmass_lake.lake", "open_lake": "tmass_lake.lake"}


def __getattr__(name: str) -> Any:
    if name not in LAZY_EXPORTS:
        raise AttributeError(f"module 'tmass_lake' has no attribute {name!r}")
    return getattr(import_module(LAZY_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
