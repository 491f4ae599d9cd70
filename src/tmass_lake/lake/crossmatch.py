"""Epoch-aware crossmatch of 2MASS detections against proper-motion catalogues (Gaia, AllWISE).

2MASS observed in 1997-2001; Gaia DR3 positions are for 2016.0 and AllWISE ones for
MJD 55400 (2010.56). A star moving 1"/yr has moved 17" between 2MASS and Gaia. The
:class:`EpochCrossmatch` algorithm propagates every right-hand (reference) position by its proper
motion to the epoch of each left-hand 2MASS detection (``jdate``) before measuring the
separation. It is an lsdb crossmatch algorithm, so it runs partition by partition on Dask with
the right catalogue's margin, exactly like lsdb's default k-d tree match.

Margins and fast movers: a reference star near a partition boundary is in a task's right
partition only if its catalogued position lies inside the right catalogue's margin, and for a
star with proper motion ``pm`` that position can be ``pm * |dt|`` away from where 2MASS saw it.
Stars slower than ``(margin - radius) / max|dt|`` always are; the faster ones (for Gaia DR3
with its 10" margin, a few thousand above ~480 mas/yr) are gathered once, before the partition
tasks run, from the right partitions around the left footprint with the proper-motion filter
pushed down to Parquet (:func:`fast_movers`), and that small table goes to every task, which
adds the ones it lacks. Recall at partition edges is then the same as inside, at any speed
(``fast_movers=False`` skips it: then stars faster than that may be missed near partition
boundaries, and the crossmatch warns, or raises with ``margin_policy="raise"``).
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

import dask
import lsdb
import nested_pandas as npd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from hats.io import pixel_catalog_file
from hats.io.file_io import read_parquet_file_to_pandas
from hats.pixel_math.healpix_shim import order2mindist
from hats.pixel_math.spatial_index import SPATIAL_INDEX_COLUMN
from lsdb.core.crossmatch.abstract_crossmatch_algorithm import AbstractCrossmatchAlgorithm
from lsdb.core.crossmatch.crossmatch_args import CrossmatchArgs
from mocpy import MOC
from scipy.spatial import KDTree

from tmass_lake.lake.stats import DAYS_PER_YEAR, JD_J2000

if TYPE_CHECKING:
    from lsdb import Catalog

log = logging.getLogger(__name__)

MJD_OFFSET = 2400000.5
MAS_TO_RAD = math.pi / (180.0 * 3.6e6)
ARCSEC_TO_RAD = math.pi / (180.0 * 3600.0)
TWOMASS_JD_RANGE = (2450600.5, 2451955.5)
"""Extended Mission observing span (1997-06-01 to 2001-02-15), used when the lake has no stats."""
DEFAULT_MAX_PM_MAS_YR = 1000.0
"""Fastest motion the margin check assumes when the reference catalogue has no local statistics."""
FASTEST_STAR_MAS_YR = 10_500.0
"""Barnard's star (10.4"/yr), the fastest known: how far around the left footprint fast movers are
gathered from when the reference has no local statistics."""

EpochFormat = Literal["jd", "mjd", "jyear"]


class MarginWarning(UserWarning):
    """The right catalogue's margin may be too narrow for fast-moving stars."""


def to_jyear(values: np.ndarray | float, fmt: EpochFormat) -> np.ndarray | float:
    """Convert JD, MJD or Julian-year epochs to Julian years.

    Parameters
    ----------
    values : numpy.ndarray or float
        Epochs in ``fmt``.
    fmt : {"jd", "mjd", "jyear"}
        Julian date, modified Julian date or Julian year.

    Returns
    -------
    numpy.ndarray or float
        The epochs as Julian years (``2000.0`` is JD 2451545.0), a float for a scalar input.

    Raises
    ------
    ValueError
        If ``fmt`` is none of the three.

    Examples
    --------
    >>> to_jyear(2451545.0, "jd")
    2000.0
    >>> round(to_jyear(55400.0, "mjd"), 4)
    2010.5558
    """
    v = np.asarray(values, dtype=float)
    if fmt == "jyear":
        out = v
    elif fmt == "jd":
        out = 2000.0 + (v - JD_J2000) / DAYS_PER_YEAR
    elif fmt == "mjd":
        out = 2000.0 + (v + MJD_OFFSET - JD_J2000) / DAYS_PER_YEAR
    else:
        raise ValueError(f"unknown epoch format {fmt!r} (jd, mjd or jyear)")
    return float(out) if np.ndim(out) == 0 else out


@dataclass(frozen=True)
class ReferenceProfile:
    """Where a reference catalogue keeps its astrometry, and its epoch.

    ``epoch_column`` (per-row epoch, in ``epoch_format``) wins over the constant ``epoch``
    (Julian year); rows where it is null take ``epoch``. Proper motions are in mas/yr with
    ``pmra`` = mu_alpha cos delta. A proper motion is applied only when its significance is at
    least ``min_pm_snr`` (needs the error columns); below that the catalogued position is used as
    is. :data:`GAIA_DR3` and :data:`ALLWISE` are the profiles of the two public references.

    Parameters
    ----------
    name : str
        The reference's name, used in column suffixes (``_gaia_dr3``) and messages.
    url : str or None, optional
        Where the public copy is (the LSDB HATS catalogue), used when a lake has none.
    ra, dec : str, default "ra", "dec"
        Position columns (degrees).
    pmra, pmdec : str, default "pmra", "pmdec"
        Proper-motion columns (mas/yr, ``pmra`` = mu_alpha cos delta).
    pmra_error, pmdec_error : str or None, optional
        Their uncertainty columns (mas/yr), needed when ``min_pm_snr`` > 0.
    epoch : float or None, optional
        The catalogue's epoch as a Julian year (Gaia DR3: 2016.0).
    epoch_column : str or None, optional
        A per-row epoch column, in ``epoch_format``.
    epoch_format : {"jyear", "jd", "mjd"}, default "jyear"
        Units of ``epoch_column``.
    min_pm_snr : float, default 0.0
        Proper motions less significant than this are not applied.
    id_column : str or None, optional
        The reference's identifier (``source_id``), used to tell stars apart.

    Examples
    --------
    >>> ReferenceProfile("my_ref", epoch=2015.5, id_column="id").columns
    ['ra', 'dec', 'pmra', 'pmdec', 'id']
    """

    name: str
    url: str | None = None
    ra: str = "ra"
    dec: str = "dec"
    pmra: str = "pmra"
    pmdec: str = "pmdec"
    pmra_error: str | None = None
    pmdec_error: str | None = None
    epoch: float | None = None
    epoch_column: str | None = None
    epoch_format: EpochFormat = "jyear"
    min_pm_snr: float = 0.0
    id_column: str | None = None

    @property
    def columns(self) -> list[str]:
        """Columns the epoch-aware match reads."""
        cols = [self.ra, self.dec, self.pmra, self.pmdec, self.id_column, self.epoch_column]
        if self.min_pm_snr > 0:
            cols += [self.pmra_error, self.pmdec_error]
        return [c for c in dict.fromkeys(cols) if c]


GAIA_DR3 = ReferenceProfile(
    name="gaia_dr3", url="https://data.lsdb.io/hats/gaia_dr3", pmra_error="pmra_error",
    pmdec_error="pmdec_error", epoch=2016.0, epoch_column="ref_epoch", id_column="source_id",
)
ALLWISE = ReferenceProfile(
    name="allwise", url="https://data.lsdb.io/hats/wise/allwise", pmra_error="sigpmra",
    pmdec_error="sigpmdec", epoch=to_jyear(55400.0, "mjd"), min_pm_snr=5.0, id_column="designation",
)
"""AllWISE positions are for MJD 55400; its proper motions are noisy (tens to hundreds of mas/yr),
so only motions detected at 5 sigma are applied."""
PROFILES = {p.name: p for p in (GAIA_DR3, ALLWISE)}


def detect_profile(catalog: Catalog, name: str | None = None) -> ReferenceProfile:
    """Recognise Gaia DR3 (``ref_epoch``) or AllWISE (``sigpmra``/``w1mpro``) by name or columns.

    Parameters
    ----------
    catalog : lsdb.Catalog
        The reference catalogue (its columns and name are looked at).
    name : str or None, optional
        A profile name (``gaia_dr3``, ``allwise``) or any name hinting at one (``...gaia...``,
        ``...wise...``); default: the catalogue's name.

    Returns
    -------
    ReferenceProfile
        :data:`GAIA_DR3` or :data:`ALLWISE`.

    Raises
    ------
    ValueError
        If neither the name nor the columns tell which reference it is.
    """
    if name in PROFILES:
        return PROFILES[name]
    cols = set(catalog.all_columns) if hasattr(catalog, "all_columns") else set(catalog.columns)
    label = (name or catalog.name or "").lower()
    if "ref_epoch" in cols or "gaia" in label:
        return GAIA_DR3
    if {"sigpmra", "w1mpro"} & cols or "wise" in label:
        return ALLWISE
    raise ValueError(f"cannot tell the epoch and proper-motion columns of {catalog.name!r}: pass "
                     "reference=ReferenceProfile(...) (or 'gaia_dr3'/'allwise')")


def _unit_vectors(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    r, d = np.radians(ra), np.radians(dec)
    cd = np.cos(d)
    return np.stack([cd * np.cos(r), cd * np.sin(r), np.sin(d)], axis=1)


def _motion_vectors(ra: np.ndarray, dec: np.ndarray, pmra: np.ndarray, pmdec: np.ndarray,
                    ) -> np.ndarray:
    """Tangent-plane velocity (rad/yr) of each star as a 3-vector."""
    r, d = np.radians(ra), np.radians(dec)
    e_ra = np.stack([-np.sin(r), np.cos(r), np.zeros_like(r)], axis=1)
    e_dec = np.stack([-np.sin(d) * np.cos(r), -np.sin(d) * np.sin(r), np.cos(d)], axis=1)
    return (pmra[:, None] * e_ra + pmdec[:, None] * e_dec) * MAS_TO_RAD


def _norm(v: np.ndarray) -> np.ndarray:
    return np.sqrt(np.einsum("ij,ij->i", v, v))


def _normalise(v: np.ndarray) -> np.ndarray:
    return v / _norm(v)[:, None]


def _chord(arcsec: float | np.ndarray) -> float | np.ndarray:
    return 2.0 * np.sin(0.5 * np.asarray(arcsec) * ARCSEC_TO_RAD)


def _numeric(df: pd.DataFrame, col: str) -> np.ndarray:
    return pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float, na_value=np.nan)


class EpochCrossmatch(AbstractCrossmatchAlgorithm):
    """Nearest neighbours after moving the right catalogue to each left row's epoch.

    An lsdb crossmatch algorithm (``left.crossmatch(right, algorithm=EpochCrossmatch(...))``):
    every right (reference) star is moved by its proper motion to the epoch of each left row
    before the separation is measured. Extra columns: ``_dist_arcsec`` (separation at the left
    row's epoch) and ``_dt_yr`` (left epoch minus right epoch, years). Usually made by
    :func:`crossmatch`.

    Parameters
    ----------
    radius_arcsec : float, default 1.0
        Match radius (arcsec) at the left row's epoch.
    n_neighbors : int, default 1
        Matches kept per left row at most, nearest first.
    reference : ReferenceProfile, default GAIA_DR3
        The right catalogue's astrometry columns and epoch.
    left_epoch : str or float, default "jdate"
        The left rows' epoch column, or one epoch for every row.
    left_epoch_format : {"jd", "mjd", "jyear"}, default "jd"
        Units of ``left_epoch``.
    max_pm_mas_yr : float or None, optional
        The fastest proper motion to plan the margin for (default: from the right catalogue's
        Parquet statistics when it is local, else 1000 mas/yr).
    margin_policy : {"warn", "raise", "ignore"}, default "warn"
        What a right catalogue without a margin (or, with ``fast_movers=False``, one too narrow
        for the fastest stars) does.
    left_epoch_range : tuple of float or None, optional
        (first, last) left epoch in Julian years (default: the left column's statistics, else
        the Extended Mission's span).
    fast_movers : bool, default True
        Gather the reference stars fast enough to leave the right margin before the tasks run
        and add them to every task (see the module documentation).

    Attributes
    ----------
    fast_movers : nested_pandas.NestedFrame or None
        The gathered fast movers, once :meth:`validate` has run (``None`` when none were needed).
    """

    extra_columns = pd.DataFrame({
        "_dist_arcsec": pd.Series(dtype=pd.ArrowDtype(pa.float64())),
        "_dt_yr": pd.Series(dtype=pd.ArrowDtype(pa.float64())),
    })

    def __init__(self, radius_arcsec: float = 1.0, n_neighbors: int = 1, *,
                 reference: ReferenceProfile = GAIA_DR3, left_epoch: str | float = "jdate",
                 left_epoch_format: EpochFormat = "jd", max_pm_mas_yr: float | None = None,
                 margin_policy: Literal["warn", "raise", "ignore"] = "warn",
                 left_epoch_range: tuple[float, float] | None = None, fast_movers: bool = True) -> None:
        super().__init__()
        self.radius_arcsec = float(radius_arcsec)
        self.n_neighbors = int(n_neighbors)
        self.reference = reference
        self.left_epoch = left_epoch
        self.left_epoch_format = left_epoch_format
        self.max_pm_mas_yr = max_pm_mas_yr
        self.margin_policy = margin_policy
        self.left_epoch_range = left_epoch_range
        self.gather_fast_movers = fast_movers
        self.fast_movers: npd.NestedFrame | None = None
        """Reference stars fast enough to leave the right margin, added to every task's right rows."""

    # -- validation ----------------------------------------------------------------------
    def validate(self, left: Catalog, right: Catalog) -> None:
        """Check the arguments and columns, and the right margin (:meth:`check_margin`).

        Called once by lsdb while it builds the crossmatch graph.

        Parameters
        ----------
        left : lsdb.Catalog
            The 2MASS catalogue (needs the ``left_epoch`` column).
        right : lsdb.Catalog
            The reference catalogue (needs the profile's columns).

        Raises
        ------
        ValueError
            If the radius or ``n_neighbors`` is out of range, a column is missing, or the margin
            is too narrow (see :meth:`check_margin`).
        """
        super().validate(left, right)
        if not self.radius_arcsec > 0:
            raise ValueError("radius_arcsec must be positive")
        if self.n_neighbors < 1:
            raise ValueError("n_neighbors must be at least 1")
        ref = self.reference
        missing = [c for c in ref.columns if c not in right.columns]
        if missing:
            raise ValueError(f"right catalogue {right.name!r} lacks columns {missing} "
                             f"(open it with columns={ref.columns + ['...']})")
        if isinstance(self.left_epoch, str) and self.left_epoch not in left.columns:
            raise ValueError(f"left catalogue {left.name!r} has no epoch column {self.left_epoch!r}")
        self.check_margin(left, right)

    def required_margin_arcsec(self, left: Catalog, right: Catalog) -> tuple[float, float, float]:
        """The right margin this match needs to find every star without gathering fast movers.

        Parameters
        ----------
        left : lsdb.Catalog
            The 2MASS catalogue.
        right : lsdb.Catalog
            The reference catalogue.

        Returns
        -------
        tuple of float
            (required margin in arcsec = radius + max proper motion x max |dt|, max |dt| in
            years between the two catalogues' epochs, max proper motion in mas/yr).
        """
        need, max_dt, max_pm, _ = self._requirement(left, right)
        return need, max_dt, max_pm

    def _requirement(self, left: Catalog, right: Catalog) -> tuple[float, float, float, bool]:
        """(required margin, max |dt|, max proper motion, whether that motion is known)."""
        lo, hi = self.left_epoch_range or _left_epoch_range(left, self.left_epoch, self.left_epoch_format)
        ref_epochs = _right_epoch_range(right, self.reference)
        max_dt = max(abs(hi - ref_epochs[0]), abs(lo - ref_epochs[1]), abs(hi - ref_epochs[1]),
                     abs(lo - ref_epochs[0]))
        max_pm = self.max_pm_mas_yr
        if max_pm is None:
            max_pm = _max_pm_from_statistics(right, self.reference)
        known = max_pm is not None
        max_pm = max_pm if known else DEFAULT_MAX_PM_MAS_YR
        return self.radius_arcsec + max_pm * max_dt / 1000.0, max_dt, max_pm, known

    def check_margin(self, left: Catalog, right: Catalog) -> None:
        """Check the right margin against the radius and the fastest motion.

        Raises if the margin is narrower than the radius; when it is narrower than the fastest
        motion needs, gathers the fast movers into :attr:`fast_movers` (or, with
        ``fast_movers=False``, warns or raises by ``margin_policy``).

        Parameters
        ----------
        left : lsdb.Catalog
            The 2MASS catalogue.
        right : lsdb.Catalog
            The reference catalogue.

        Raises
        ------
        ValueError
            If the margin is narrower than the radius, or ``margin_policy="raise"`` and the right
            catalogue has no margin (or, without fast movers, too narrow a one).

        Warns
        -----
        MarginWarning
            With ``margin_policy="warn"``, in the same cases.
        """
        if right.margin is None:
            msg = (f"right catalogue {right.name!r} has no margin: matches across its partition "
                   "boundaries will be missed")
            if self.margin_policy == "raise":
                raise ValueError(msg)
            if self.margin_policy == "warn":
                warnings.warn(msg, MarginWarning, stacklevel=4)
            return
        threshold = right.margin.hc_structure.catalog_info.margin_threshold or 0.0
        if threshold < self.radius_arcsec:
            raise ValueError(f"crossmatch radius {self.radius_arcsec}\" exceeds the right margin "
                             f"threshold {threshold}\"")
        need, max_dt, max_pm, known = self._requirement(left, right)
        if threshold + 1e-9 >= need:
            return
        covered = max(threshold - self.radius_arcsec, 0.0) / max(max_dt, 1e-9) * 1000.0
        if self.gather_fast_movers:
            fastest = max_pm if known else FASTEST_STAR_MAS_YR
            self.fast_movers = fast_movers(left, right, self.reference, covered,
                                           self.radius_arcsec + fastest * max_dt / 1000.0)
            log.info("%d reference stars faster than %.0f mas/yr added to every partition",
                     len(self.fast_movers), covered)
            return
        if self.margin_policy != "ignore":
            msg = (f"right margin of {right.name!r} is {threshold:g}\" but radius + max_pm x max|dt| = "
                   f"{self.radius_arcsec:g}\" + {max_pm:.0f} mas/yr x {max_dt:.1f} yr = {need:.1f}\": "
                   f"stars faster than {covered:.0f} mas/yr may be missed near partition boundaries")
            if self.margin_policy == "raise":
                raise ValueError(msg)
            warnings.warn(msg, MarginWarning, stacklevel=4)

    # -- the match -----------------------------------------------------------------------
    def crossmatch(self, crossmatch_args: CrossmatchArgs, how: str, suffixes: tuple[str, str],
                   suffix_method: str = "all_columns") -> npd.NestedFrame:
        """lsdb's crossmatch of one pair of partitions, the fast movers in reach added to the right.

        Parameters
        ----------
        crossmatch_args : CrossmatchArgs
            The partitions and their pixel information.
        how : str
            ``"inner"`` or ``"left"``.
        suffixes : tuple of str
            Suffixes of the left and right columns.
        suffix_method : str, default "all_columns"
            lsdb's suffix method.

        Returns
        -------
        nested_pandas.NestedFrame
            The matched rows.
        """
        return super().crossmatch(self._with_fast_movers(crossmatch_args), how, suffixes, suffix_method)

    def crossmatch_nested(self, crossmatch_args: CrossmatchArgs, nested_column_name: str,
                          how: str) -> npd.NestedFrame:
        """lsdb's nested crossmatch of one pair of partitions, the fast movers in reach added.

        Parameters
        ----------
        crossmatch_args : CrossmatchArgs
            The partitions and their pixel information.
        nested_column_name : str
            The nested column holding each left row's matches.
        how : str
            ``"inner"`` or ``"left"``.

        Returns
        -------
        nested_pandas.NestedFrame
            The left rows with their matches nested.
        """
        return super().crossmatch_nested(self._with_fast_movers(crossmatch_args), nested_column_name, how)

    def _with_fast_movers(self, args: CrossmatchArgs) -> CrossmatchArgs:
        """``args`` with the fast movers that can reach its left rows and that its right rows lack."""
        fast, left = self.fast_movers, args.left_df
        if fast is None or not len(fast) or left is None or not len(left):
            return args
        linfo, rinfo = args.left_catalog_info, args.right_catalog_info
        l_xyz = _unit_vectors(_numeric(left, linfo.ra_column), _numeric(left, linfo.dec_column))
        t_left = np.asarray(to_jyear(_numeric(left, self.left_epoch), self.left_epoch_format)) \
            if isinstance(self.left_epoch, str) else np.array([float(self.left_epoch)])
        ok = np.isfinite(l_xyz).all(axis=1)
        if not ok.any() or not np.isfinite(t_left).any():
            return args
        t_right = _right_epochs(fast, self.reference)
        dt_abs = np.maximum(np.abs(np.nanmin(t_left) - t_right), np.abs(np.nanmax(t_left) - t_right))
        pm = np.hypot(np.nan_to_num(_numeric(fast, self.reference.pmra)),
                      np.nan_to_num(_numeric(fast, self.reference.pmdec)))
        p0 = _unit_vectors(_numeric(fast, rinfo.ra_column), _numeric(fast, rinfo.dec_column))
        near = fast.iloc[_in_reach(l_xyz[ok], p0, pm, dt_abs, 2.0 * self.radius_arcsec)]
        right = args.right_df
        if right is not None and len(right) and len(near):
            near = near[~_same_stars(near, right, self.reference, rinfo)]
        if not len(near):
            return args
        mask = args.right_native_mask
        if mask is not None:
            mask = np.concatenate([mask, np.zeros(len(near), bool)])
        joined = near if right is None or not len(right) else pd.concat([right, near])
        return replace(args, right_df=npd.NestedFrame(joined), right_native_mask=mask)

    def perform_crossmatch(self, crossmatch_args: CrossmatchArgs,
                           ) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
        """Match one pair of partitions with :func:`match_moving`.

        Parameters
        ----------
        crossmatch_args : CrossmatchArgs
            The partitions and their pixel information.

        Returns
        -------
        tuple
            (left row positions, right row positions, extra columns ``_dist_arcsec`` and
            ``_dt_yr``), one entry per match.
        """
        left, right = crossmatch_args.left_df, crossmatch_args.right_df
        linfo, rinfo = crossmatch_args.left_catalog_info, crossmatch_args.right_catalog_info
        ref = self.reference
        l_xyz = _unit_vectors(_numeric(left, linfo.ra_column), _numeric(left, linfo.dec_column))
        if isinstance(self.left_epoch, str):
            t_left = np.asarray(to_jyear(_numeric(left, self.left_epoch), self.left_epoch_format))
        else:
            t_left = np.full(len(left), float(self.left_epoch))
        r_ra, r_dec = _numeric(right, rinfo.ra_column), _numeric(right, rinfo.dec_column)
        pmra = np.nan_to_num(_numeric(right, ref.pmra))
        pmdec = np.nan_to_num(_numeric(right, ref.pmdec))
        if ref.min_pm_snr > 0 and ref.pmra_error and ref.pmdec_error:
            with np.errstate(divide="ignore", invalid="ignore"):
                snr = np.hypot(pmra / _numeric(right, ref.pmra_error),
                               pmdec / _numeric(right, ref.pmdec_error))
            weak = ~(np.nan_to_num(snr) >= ref.min_pm_snr)
            pmra[weak] = 0.0
            pmdec[weak] = 0.0
        t_right = _right_epochs(right, ref)
        l_idx, r_idx, dist, dt = match_moving(l_xyz, t_left, r_ra, r_dec, pmra, pmdec, t_right,
                                              self.radius_arcsec, self.n_neighbors)
        extra = pd.DataFrame({
            "_dist_arcsec": pd.Series(dist, dtype=pd.ArrowDtype(pa.float64())),
            "_dt_yr": pd.Series(dt, dtype=pd.ArrowDtype(pa.float64())),
        })
        return l_idx, r_idx, extra


def _same_stars(rows: pd.DataFrame, right: pd.DataFrame, ref: ReferenceProfile, info: Any) -> np.ndarray:
    """Which of ``rows`` are already in ``right`` (by the reference's id column, else by position)."""
    if ref.id_column and ref.id_column in rows.columns and ref.id_column in right.columns:
        return rows[ref.id_column].isin(right[ref.id_column]).to_numpy()
    keys = [info.ra_column, info.dec_column]
    return pd.MultiIndex.from_frame(rows[keys]).isin(pd.MultiIndex.from_frame(right[keys]))


def _footprint(left: Catalog, reach_arcsec: float) -> MOC:
    """The left catalogue's coverage grown by ``reach_arcsec`` (at least)."""
    order = 0
    while order < 29 and order2mindist(order + 1) * 60.0 >= reach_arcsec:
        order += 1
    moc = left.hc_structure.moc
    if moc is None:
        pixels = left.get_healpix_pixels()
        moc = MOC.from_healpix_cells(np.array([p.pixel for p in pixels], np.uint64),
                                     np.array([p.order for p in pixels], np.uint8), max_depth=29)
    if order < moc.max_order:
        moc = moc.degrade_to_order(order)
    return moc.add_neighbours()


def _touching(region: MOC, pixels: list) -> list:
    """The HEALPix ``pixels`` (partitions) that intersect ``region``."""
    if not pixels:
        return []
    depth = min(region.max_order, max(p.order for p in pixels))
    if depth < region.max_order:
        region = region.degrade_to_order(depth)
    cells = np.unique(region.flatten().astype(np.int64))  # at order ``depth``
    out = []
    for p in pixels:
        if p.order >= depth:
            hit = np.isin(p.pixel >> (2 * (p.order - depth)), cells)
        else:
            shift = 2 * (depth - p.order)
            i = np.searchsorted(cells, p.pixel << shift)
            hit = i < len(cells) and cells[i] < (p.pixel + 1) << shift
        if hit:
            out.append(p)
    return out


def _and_filters(filters: Any, extra: list[list[tuple]]) -> Any:
    """The pyarrow filters ``filters`` AND ``extra`` (disjunctive normal form, or an Expression)."""
    if not filters:
        return extra
    if isinstance(filters, pc.Expression):
        return filters & pq.filters_to_expression(extra)
    groups = [filters] if isinstance(filters[0], tuple) else filters
    return [[*g, *e] for g in groups for e in extra]


FAST_MOVER_BATCH = 16
"""Right partitions read per fast-mover task (their proper-motion columns are small)."""


def fast_movers(left: Catalog, right: Catalog, ref: ReferenceProfile, min_pm_mas_yr: float,
                reach_arcsec: float) -> npd.NestedFrame:
    """The rows of ``right`` moving faster than ``min_pm_mas_yr`` near the left catalogue.

    Tasks on the current Dask scheduler, each over a few right partitions around the footprint,
    read the proper motions with the filter pushed down to Parquet (``|pmra|`` or ``|pmdec|``
    above the speed over the square root of two; exact speed and significance after), then the
    whole rows of the fast stars only (a ``_healpix_29`` filter: the row groups holding them), as
    lsdb reads partitions. A catalogue not on storage (``lsdb.from_dataframe``) is filtered in
    memory.

    Parameters
    ----------
    left : lsdb.Catalog
        The 2MASS catalogue, whose coverage (MOC, else partitions) sets the area.
    right : lsdb.Catalog
        The reference catalogue; its loaded columns and filters are kept.
    ref : ReferenceProfile
        Its proper-motion (and error) columns.
    min_pm_mas_yr : float
        Only stars faster than this (mas/yr), and as significant as ``ref.min_pm_snr``.
    reach_arcsec : float
        How far around the left coverage (arcsec, at least) a star's catalogued position may be.

    Returns
    -------
    nested_pandas.NestedFrame
        The fast stars, indexed by ``_healpix_29`` like lsdb partitions (empty: ``right.meta``).
    """
    region = _footprint(left, reach_arcsec)
    config, path = right.loading_config, right.hc_structure.catalog_path
    if path is None or config is None:
        candidates = right.search(lsdb.MOCSearch(region, fine=False)).compute()
        return candidates[_faster(candidates, ref, min_pm_mas_yr)]
    hc = right.hc_structure
    base, suffix = hc.catalog_base_dir, hc.catalog_info.npix_suffix
    files = [pixel_catalog_file(base, p, npix_suffix=suffix)
             for p in _touching(region, hc.get_healpix_pixels())]
    size = max(1, min(FAST_MOVER_BATCH, len(files) // 8))
    reads = [dask.delayed(_fast_rows)(files[i:i + size], list(right.columns), hc.schema, config.filters,
                                      ref, min_pm_mas_yr) for i in range(0, len(files), size)]
    found = [f for batch in dask.compute(*reads) for f in batch]
    return npd.NestedFrame(pd.concat(found)) if found else right.meta


def _fast_rows(files: list, columns: list[str], schema: pa.Schema, filters: Any, ref: ReferenceProfile,
               min_pm_mas_yr: float) -> list[npd.NestedFrame]:
    """The stars faster than ``min_pm_mas_yr`` in some right partitions."""
    a = min_pm_mas_yr / math.sqrt(2.0)
    faster = [[(ref.pmra, ">", a)], [(ref.pmra, "<", -a)], [(ref.pmdec, ">", a)], [(ref.pmdec, "<", -a)]]
    cols = [c for c in dict.fromkeys([ref.pmra, ref.pmdec, ref.pmra_error, ref.pmdec_error]) if c in columns]
    out = []
    for path in files:
        speeds = pq.read_table(path.path, columns=[*cols, SPATIAL_INDEX_COLUMN], filesystem=path.fs,
                               filters=_and_filters(filters, faster)).to_pandas()
        index = speeds[SPATIAL_INDEX_COLUMN].to_numpy()[_faster(speeds, ref, min_pm_mas_yr)]
        if not len(index):
            continue
        rows = read_parquet_file_to_pandas(path, columns=[*columns, SPATIAL_INDEX_COLUMN], schema=schema,
                                           is_dir=False, filters=_and_filters(filters, [
                                               [(SPATIAL_INDEX_COLUMN, "in", np.unique(index).tolist())]]))
        rows = rows.set_index(SPATIAL_INDEX_COLUMN)
        out.append(npd.NestedFrame(rows[_faster(rows, ref, min_pm_mas_yr)]))
    return out


def _faster(df: pd.DataFrame, ref: ReferenceProfile, min_pm_mas_yr: float) -> np.ndarray:
    pmra, pmdec = np.nan_to_num(_numeric(df, ref.pmra)), np.nan_to_num(_numeric(df, ref.pmdec))
    fast = np.hypot(pmra, pmdec) > min_pm_mas_yr
    if ref.min_pm_snr > 0 and ref.pmra_error and ref.pmdec_error:
        with np.errstate(divide="ignore", invalid="ignore"):
            snr = np.hypot(pmra / _numeric(df, ref.pmra_error), pmdec / _numeric(df, ref.pmdec_error))
        fast &= np.nan_to_num(snr) >= ref.min_pm_snr
    return fast


def match_moving(l_xyz: np.ndarray, t_left: np.ndarray, r_ra: np.ndarray, r_dec: np.ndarray,
                 pmra: np.ndarray, pmdec: np.ndarray, t_right: np.ndarray, radius_arcsec: float,
                 n_neighbors: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Match left unit vectors at epochs ``t_left`` to moving right stars.

    Candidates come from a k-d tree of the right stars moved to the left rows' median epoch,
    searched within ``radius + tolerance``; the few stars that move more than the tolerance
    over the left rows' epoch spread get their own wider ball search. Every candidate is then
    moved to its left row's own epoch and kept if within ``radius``.

    Parameters
    ----------
    l_xyz : numpy.ndarray
        Left positions as unit vectors, shape (n, 3).
    t_left : numpy.ndarray
        Left epochs (Julian years); rows with a non-finite epoch are not matched.
    r_ra, r_dec : numpy.ndarray
        Right catalogued positions (degrees).
    pmra, pmdec : numpy.ndarray
        Right proper motions (mas/yr, ``pmra`` = mu_alpha cos delta; 0 for none).
    t_right : numpy.ndarray
        Right epochs (Julian years).
    radius_arcsec : float
        Match radius at the left epoch (arcsec).
    n_neighbors : int, default 1
        Matches kept per left row at most, nearest first.

    Returns
    -------
    tuple of numpy.ndarray
        (left index, right index, separation in arcsec, left minus right epoch in years), one
        entry per match, sorted by left index.
    """
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros(0))
    if len(l_xyz) == 0 or len(r_ra) == 0:
        return empty
    ok_left = np.isfinite(t_left) & np.isfinite(l_xyz).all(axis=1)
    if not ok_left.any():
        return empty
    t_mid = float(np.median(t_left[ok_left]))
    t_l = np.where(ok_left, t_left, t_mid)
    spread = float(np.max(np.abs(t_l - t_mid)))
    tol = max(0.5 * radius_arcsec, 0.2)
    # Only right stars that can reach the left rows' cap at some left epoch take part.
    p0 = _unit_vectors(r_ra, r_dec)
    sel = _in_reach(l_xyz[ok_left], p0, np.hypot(pmra, pmdec), np.abs(t_mid - t_right) + spread,
                    radius_arcsec + tol)
    if len(sel) == 0:
        return empty
    r_ra, r_dec, pmra, pmdec, t_right, p0 = (x[sel] for x in (r_ra, r_dec, pmra, pmdec, t_right, p0))
    vel = _motion_vectors(r_ra, r_dec, pmra, pmdec)
    r_mid = _normalise(p0 + vel * (t_mid - t_right)[:, None])
    good_r = np.isfinite(r_mid).all(axis=1)
    r_mid = np.where(good_r[:, None], r_mid, 2.0)  # far off the unit sphere: never a candidate
    pm = np.hypot(pmra, pmdec)
    wander = pm * spread / 1000.0  # arcsec a star moves between t_mid and the extreme epochs
    fast = good_r & (wander > tol)

    tree = KDTree(r_mid, compact_nodes=True, balanced_tree=True)
    reach = float(_chord(radius_arcsec + tol))
    slack = float(_chord(tol))
    if n_neighbors == 1 and 3 * len(r_mid) < len(l_xyz):
        li, ri = _nearest_candidates(tree, r_mid, l_xyz, reach, slack, fast)
    else:
        li, ri = _knn_candidates(tree, l_xyz, reach, slack, n_neighbors, fast)
    if fast.any():
        # Fast stars: drop their k-NN pairs and search a ball covering their whole path instead.
        slow_pair = ~fast[ri]
        li, ri = li[slow_pair], ri[slow_pair]
        f_idx = np.flatnonzero(fast)
        ltree = KDTree(l_xyz, compact_nodes=False, balanced_tree=False)
        radii = _chord(radius_arcsec + tol + wander[f_idx])
        lists = ltree.query_ball_point(r_mid[f_idx], r=radii)
        lens = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
        if lens.sum():
            li = np.concatenate([li, np.concatenate([np.asarray(x, np.int64) for x in lists])])
            ri = np.concatenate([ri, np.repeat(f_idx, lens)])
    if len(li) == 0:
        return empty
    dt = t_l[li] - t_right[ri]
    moved = _normalise(p0[ri] + vel[ri] * dt[:, None])
    chord = _norm(l_xyz[li] - moved)
    sep = np.degrees(2.0 * np.arcsin(np.minimum(0.5 * chord, 1.0))) * 3600.0
    keep = (sep <= radius_arcsec) & ok_left[li]
    li, ri, sep, dt = li[keep], ri[keep], sep[keep], dt[keep]
    counts = np.bincount(li, minlength=len(l_xyz))
    multi = counts[li] > n_neighbors  # only rows with surplus candidates need ranking
    if multi.any():
        m = np.flatnonzero(multi)
        order = m[np.lexsort((sep[m], li[m]))]
        lm = li[order]
        rank = np.arange(len(lm)) - np.searchsorted(lm, lm)
        keep = np.ones(len(li), dtype=bool)
        keep[order[rank >= n_neighbors]] = False
        li, ri, sep, dt = li[keep], ri[keep], sep[keep], dt[keep]
    order = np.argsort(li, kind="stable")
    return li[order], sel[ri[order]], sep[order], dt[order]


def _in_reach(l_xyz: np.ndarray, p0: np.ndarray, pm: np.ndarray, dt_abs: np.ndarray, reach_arcsec: float,
              ) -> np.ndarray:
    """Indices of right stars that can come within ``reach`` of the cap around the left rows."""
    center = l_xyz.sum(axis=0)
    norm = float(np.sqrt(center @ center))
    ok = np.isfinite(p0).all(axis=1)
    if norm == 0.0:
        return np.flatnonzero(ok)
    center /= norm
    cap = float(np.arccos(np.clip((l_xyz @ center).min(), -1.0, 1.0)))
    limit = cap + reach_arcsec * ARCSEC_TO_RAD + np.nan_to_num(pm) * dt_abs * MAS_TO_RAD
    return np.flatnonzero(ok & (p0 @ center >= np.cos(np.minimum(limit, np.pi))))


def _nearest_candidates(tree: KDTree, r_mid: np.ndarray, l_xyz: np.ndarray, reach: float, slack: float,
                        fast: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Candidates for a single nearest neighbour when the right side is much smaller (multi-epoch
    detections against a reference catalogue).

    One k=1 query; a row needs more candidates only if another star could come within
    ``d1 + 2 slack``, which requires that star to be within ``2 d1 + 2 slack`` of the nearest
    one (triangle inequality): each right star's distance to its own nearest neighbour decides.
    """
    d1, i1 = tree.query(l_xyz, k=1, distance_upper_bound=reach)
    found = np.isfinite(d1)
    if len(r_mid) > 1:
        dr, _ = tree.query(r_mid, k=2)
        iso = dr[:, 1]
    else:
        iso = np.full(len(r_mid), np.inf)
    j = np.minimum(i1, len(r_mid) - 1)
    more = found & ((iso[j] <= 2.0 * d1 + 2.0 * slack) | fast[j])
    done = found & ~more
    li, ri = np.flatnonzero(done), i1[done]
    rows = np.flatnonzero(more)
    if len(rows):
        l2, r2 = _knn_candidates(tree, l_xyz[rows], reach, slack, 1, fast)
        li, ri = np.concatenate([li, rows[l2]]), np.concatenate([ri, r2])
    return li.astype(np.int64), ri.astype(np.int64)


def _knn_candidates(tree: KDTree, l_xyz: np.ndarray, reach: float, slack: float, n_neighbors: int,
                    fast: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Candidate (left, right) pairs: every neighbour within chord ``reach`` that could still be
    among a row's ``n_neighbors`` nearest once slow stars move by up to ``slack`` (chord).

    A k-NN query with k = n_neighbors + 1; rows whose k-th neighbour is within the
    n_neighbors-th slow neighbour's distance + 2 * slack are queried again with a larger k.
    """
    n_right = len(fast)
    rows = np.arange(len(l_xyz))
    out_l, out_r = [], []
    k = n_neighbors + 1
    while len(rows):
        kk = min(k, n_right)
        dist, idx = tree.query(l_xyz[rows], k=kk, distance_upper_bound=reach)
        dist, idx = dist.reshape(len(rows), kk), idx.reshape(len(rows), kk)
        found = np.isfinite(dist)
        slow = np.where(found & ~fast[np.minimum(idx, n_right - 1)], dist, np.inf)
        ref = np.sort(slow, axis=1)[:, min(n_neighbors, kk) - 1]
        more = found[:, -1] & (dist[:, -1] <= ref + 2.0 * slack) & (kk < n_right)
        done = ~more
        out_l.append(np.repeat(rows[done], found[done].sum(axis=1)))
        out_r.append(idx[done][found[done]])
        rows = rows[more]
        k *= 4
    if not out_l:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(out_l).astype(np.int64), np.concatenate(out_r).astype(np.int64)


def _right_epochs(df: pd.DataFrame, ref: ReferenceProfile) -> np.ndarray:
    if ref.epoch_column and ref.epoch_column in df.columns:
        t = np.asarray(to_jyear(_numeric(df, ref.epoch_column), ref.epoch_format))
        if ref.epoch is not None:
            t = np.where(np.isfinite(t), t, ref.epoch)
        return t
    if ref.epoch is None:
        raise ValueError(f"reference {ref.name!r} has neither an epoch column nor an epoch")
    return np.full(len(df), float(ref.epoch))


def _column_stats(catalog: Catalog, columns: list[str]) -> pd.DataFrame | None:
    """Parquet footer min/max of ``columns``, for local catalogues only (remote _metadata is big)."""
    try:
        if catalog.hc_structure.catalog_path is None:  # in memory (lsdb.from_dataframe): no statistics
            return None
        path = str(catalog.hc_structure.catalog_path)
        if "://" in path and not path.startswith("file://"):
            return None
        stats = catalog.hc_structure.aggregate_column_statistics(include_columns=columns,
                                                                 warn_on_modified_catalog=False)
        return stats if len(stats) else None
    except Exception as e:  # noqa: BLE001 - statistics are an optimisation only
        log.debug("no column statistics for %s: %s", catalog.name, e)
        return None


def _left_epoch_range(left: Catalog, column: str | float, fmt: EpochFormat) -> tuple[float, float]:
    if not isinstance(column, str):
        return float(column), float(column)
    stats = _column_stats(left, [column])
    if stats is not None and column in stats.index:
        lo, hi = float(stats.loc[column, "min_value"]), float(stats.loc[column, "max_value"])
        return float(to_jyear(lo, fmt)), float(to_jyear(hi, fmt))
    lo, hi = TWOMASS_JD_RANGE
    return float(to_jyear(lo, "jd")), float(to_jyear(hi, "jd"))


def _right_epoch_range(right: Catalog, ref: ReferenceProfile) -> tuple[float, float]:
    if ref.epoch_column:
        stats = _column_stats(right, [ref.epoch_column])
        if stats is not None and ref.epoch_column in stats.index:
            lo = float(to_jyear(float(stats.loc[ref.epoch_column, "min_value"]), ref.epoch_format))
            hi = float(to_jyear(float(stats.loc[ref.epoch_column, "max_value"]), ref.epoch_format))
            return lo, hi
    if ref.epoch is None:
        raise ValueError(f"reference {ref.name!r} has no epoch")
    return float(ref.epoch), float(ref.epoch)


def _max_pm_from_statistics(right: Catalog, ref: ReferenceProfile) -> float | None:
    """The fastest motion the reference's Parquet statistics allow (None: no local statistics)."""
    stats = _column_stats(right, [ref.pmra, ref.pmdec])
    if stats is None or not {ref.pmra, ref.pmdec} <= set(stats.index):
        return None
    ext = [abs(float(stats.loc[c, k])) for c in (ref.pmra, ref.pmdec) for k in ("min_value", "max_value")]
    return float(math.hypot(max(ext[:2]), max(ext[2:])))


def crossmatch(left: Catalog, right: Catalog, *, radius_arcsec: float = 1.0, epoch_aware: bool = True,
               n_neighbors: int = 1, reference: ReferenceProfile | str | None = None,
               left_epoch: str | float = "jdate", left_epoch_format: EpochFormat = "jd",
               suffixes: tuple[str, str] | None = None, how: Literal["inner", "left"] = "inner",
               max_pm_mas_yr: float | None = None,
               margin_policy: Literal["warn", "raise", "ignore"] = "warn", fast_movers: bool = True,
               output_catalog_name: str | None = None) -> Catalog:
    """Crossmatch 2MASS rows (``left``) with a reference catalogue (``right``).

    ``epoch_aware=True`` uses :class:`EpochCrossmatch` (reference positions moved to each
    detection's ``jdate``); ``False`` is lsdb's plain positional k-d tree match.

    Parameters
    ----------
    left : lsdb.Catalog
        2MASS detections (with the ``left_epoch`` column when epoch-aware).
    right : lsdb.Catalog
        The reference catalogue, best with a margin (:func:`~tmass_lake.lake.api.open_reference`
        loads its astrometry columns).
    radius_arcsec : float, default 1.0
        Match radius (arcsec), at each detection's epoch when epoch-aware.
    epoch_aware : bool, default True
        Move the reference stars by their proper motions to each detection's epoch.
    n_neighbors : int, default 1
        Matches kept per left row at most, nearest first.
    reference : ReferenceProfile or str or None, optional
        The reference's astrometry columns and epoch (a profile, or ``"gaia_dr3"``/``"allwise"``);
        ``None`` recognises it by its name or columns. Its ``ra``/``dec`` are taken from
        ``right``'s HATS properties.
    left_epoch : str or float, default "jdate"
        The left epoch column, or one epoch for every row.
    left_epoch_format : {"jd", "mjd", "jyear"}, default "jd"
        Units of ``left_epoch``.
    suffixes : tuple of str or None, optional
        Column suffixes of the two sides (default ``("_2mass", "_<reference name>")``).
    how : {"inner", "left"}, default "inner"
        ``"left"`` keeps left rows without a match.
    max_pm_mas_yr : float or None, optional
        The fastest proper motion to plan the margin for (default: from the reference's local
        Parquet statistics, else 1000 mas/yr).
    margin_policy : {"warn", "raise", "ignore"}, default "warn"
        What a right catalogue without a margin (or, with ``fast_movers=False``, one too narrow
        for the fastest stars) does.
    fast_movers : bool, default True
        Gather the reference stars fast enough to leave the right margin before the partition
        tasks run, so stars at partition edges are found at any speed (see the module
        documentation).
    output_catalog_name : str or None, optional
        Name of the resulting catalogue.

    Returns
    -------
    lsdb.Catalog
        The lazy matches: both sides' columns suffixed, plus ``_dist_arcsec`` and, when
        epoch-aware, ``_dt_yr`` (detection epoch minus reference epoch, years).

    Raises
    ------
    ValueError
        If the reference cannot be recognised, lacks a column, or its margin is narrower than the
        radius (or, with ``margin_policy="raise"``, missing).

    Warns
    -----
    MarginWarning
        With ``margin_policy="warn"``, when the right catalogue has no margin (or, with
        ``fast_movers=False``, too narrow a one for the fastest stars).

    See Also
    --------
    tmass_lake.lake.api.Lake.crossmatch : The same from a lake, opening both sides.

    Examples
    --------
    >>> from tmass_lake.lake import crossmatch, open_lake, open_reference
    >>> lake = open_lake("lake")  # doctest: +SKIP
    >>> gaia = open_reference(lake.reference_url("gaia_dr3"), reference="gaia_dr3")  # doctest: +SKIP
    >>> matches = crossmatch(lake["pt_src_c"], gaia, radius_arcsec=1.0)  # doctest: +SKIP
    """
    profile = reference if isinstance(reference, ReferenceProfile) else detect_profile(right, reference)
    if right.hc_structure.catalog_info.ra_column and profile.ra != right.hc_structure.catalog_info.ra_column:
        profile = replace(profile, ra=right.hc_structure.catalog_info.ra_column,
                          dec=right.hc_structure.catalog_info.dec_column)
    suffixes = suffixes or ("_2mass", f"_{profile.name}")
    if not epoch_aware:
        return left.crossmatch(right, radius_arcsec=radius_arcsec, n_neighbors=n_neighbors,
                               suffixes=suffixes, suffix_method="all_columns", how=how,
                               output_catalog_name=output_catalog_name)
    algo = EpochCrossmatch(radius_arcsec, n_neighbors, reference=profile, left_epoch=left_epoch,
                           left_epoch_format=left_epoch_format, max_pm_mas_yr=max_pm_mas_yr,
                           margin_policy=margin_policy, fast_movers=fast_movers)
    return left.crossmatch(right, algorithm=algo, suffixes=suffixes, suffix_method="all_columns",
                           how=how, output_catalog_name=output_catalog_name)
