"""The lake API: open a tmass-lake root, crossmatch with epoch-aware proper motions, light curves.

``open_lake(url)`` gives a :class:`Lake`; ``lake["pt_src_c"]`` is an lsdb catalogue with its
margin; :func:`crossmatch` and :func:`light_curves` are thin layers over lsdb operations.
"""

from tmass_lake.errors import ManifestError, NotALakeError, UnfinishedTableError
from tmass_lake.lake.api import Lake, open_lake, open_reference
from tmass_lake.lake.crossmatch import (
    ALLWISE,
    GAIA_DR3,
    EpochCrossmatch,
    MarginWarning,
    ReferenceProfile,
    crossmatch,
)
from tmass_lake.lake.lightcurves import light_curves, plot_light_curve
from tmass_lake.lake.stats import Thresholds, light_curve_stats

__all__ = [
    "ALLWISE", "GAIA_DR3", "EpochCrossmatch", "Lake", "ManifestError", "MarginWarning", "NotALakeError",
    "ReferenceProfile", "Thresholds", "UnfinishedTableError",
    "crossmatch", "light_curve_stats", "light_curves", "open_lake", "open_reference", "plot_light_curve",
]
