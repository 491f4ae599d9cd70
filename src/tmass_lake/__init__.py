"""tmass-lake: the 2MASS Extended Mission as a HATS data lake.

``open_lake(url)`` opens a built lake (see :mod:`tmass_lake.lake`); the conversion is
:mod:`tmass_lake.convert`, the command line ``tmass-lake``.
"""

from tmass_lake.lake import Lake, open_lake

__all__ = ["Lake", "open_lake"]
