"""tmass-lake: the 2MASS Extended Mission as a HATS data lake."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tmass_lake.lake import Lake

__all__ = ["open_lake"]


def open_lake(url: str, **storage_options: Any) -> Lake:
    """Open a tmass-lake root (see :func:`tmass_lake.lake.open_lake`); imports lsdb on first use."""
    from tmass_lake.lake import open_lake as _open_lake

    return _open_lake(url, **storage_options)
