"""Multi-epoch light curves: merged sources with their working-database detections nested.

For a product (``survey``, ``6x``, ``calibration``, ``calibration_sc``) the merged-source
information table (``cf_info``...) gives one row per source (``gcntr``, mean position) and the
cross-reference (link) table lists every member detection. The result is an lsdb catalogue
partitioned like the information table, one row per merged source, with a nested column of
its detections and per-source statistics (:mod:`tmass_lake.lake.stats`).

How the join avoids a global shuffle: members of a group lie close to the group's mean
position and carry its ``gcntr``, so each information partition is joined on ``gcntr`` with the
detection partition covering the same sky plus that partition's margin (lsdb ``join_nested``).
Membership. The link table is the membership: a detection can be linked to several groups (in
IRSA's calibration products links outnumber detections), while its working-database row carries
one ``gcntr`` (the lowest of its groups; null when it is in none). With ``links="table"`` (the
default when the lake stores the link table as Parquet, read per partition with a ``gcntr`` range
and set filter) every task takes the link pairs of its groups and gives each pair its detection
row: a row joined under any group of the partition serves every group it is linked to; a row not
there (a group cut by a partition edge, a fast-moving star) is read by its key from the detection
partitions within ``repair_arcsec`` of the group (then, if still missing, all of them). So the
nested rows are exactly the links, each once. With ``links="detections"`` the detections' own
``gcntr`` decides (each detection under one group); groups short of the number of rows carrying
their gcntr (counted in the detections' gcntr index catalog, else ``napp``, which counts links)
are re-read the same way by ``gcntr``. One pass, no shuffle, and exact.

The lake build stores each product's result as a collection (``cf_lightcurves``...,
:mod:`tmass_lake.convert.lightcurves`), finished by the same :class:`LightCurveJob`;
:func:`light_curves` opens it when it holds what is asked and joins on the fly otherwise.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from dataclasses import asdict, dataclass
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any, Literal

import hats
import nested_pandas as npd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from hats.io import pixel_catalog_file
from hats.pixel_math import HealpixPixel
from matplotlib.figure import Figure
from nested_pandas.series.dtype import NestedDtype
from upath import UPath

from tmass_lake.lake.stats import (
    BANDS,
    DEFAULT_THRESHOLDS,
    STAT_COLUMNS,
    STAT_INPUTS,
    Thresholds,
    light_curve_stats,
)
from tmass_lake.schema import light_curve_collection, list_tables, load_schema
from tmass_lake.storage import filesystem

if TYPE_CHECKING:  # annotations only: the API module imports this one
    import lsdb

    from tmass_lake.lake.api import Lake

log = logging.getLogger(__name__)

PRODUCT_ALIASES = {"cal": "calibration", "sc": "calibration_sc", "lmc": "calibration_sc",
                   "six_x": "6x", "6x2": "6x"}
SOURCE_COLUMNS = ["gcntr", "ra", "dec", "napp"]
POINT_COLUMNS = ["jdate", "ra", "dec", "err_maj", "err_min", "err_ang",
                 *[f"{b}_{s}" for b in BANDS for s in ("m", "cmsig", "msigcom")],
                 "ph_qual", "rd_flg", "bl_flg", "cc_flg", "rel"]
EXTENDED_COLUMNS = ["jdate", "ra", "dec", *[f"{b}_{s}_k20fe" for b in BANDS for s in ("m", "msig")],
                    "cc_flg", "rel"]
NESTED = "detections"
OPENED_PER_WORKER = 16
"""Datasets and catalogs a worker keeps open between tasks (bounded: a long-lived cluster serves
many lakes)."""


@dataclass(frozen=True)
class ProductTables:
    """The three tables of a product's multi-epoch join, from the schema files.

    Parameters
    ----------
    product : str
        ``survey``, ``6x``, ``calibration`` or ``calibration_sc``.
    info : str
        The merged-source information table (``cf_info``...): one row per merged source.
    detections : str
        The working-database detections (``pt_src_c``...).
    link : str or None
        The cross-reference table (``cf_link``...) listing every (group, detection) pair.
    key : str
        The detections' key column (``cntr``, ``ext_key``).
    kind : str
        ``"point"`` or ``"extended"``.
    """

    product: str
    info: str
    detections: str
    link: str | None
    key: str
    kind: str

    @property
    def collection(self) -> str:
        """The light-curve collection the lake build stores for these tables (``cf_lightcurves``)."""
        return light_curve_collection(self.info)

    @property
    def mag_columns(self) -> dict[str, str]:
        """Detection columns renamed for :func:`~tmass_lake.lake.stats.light_curve_stats`.

        Extended sources' ``{b}_m_k20fe``/``{b}_msig_k20fe`` become ``{b}_m``/``{b}_msigcom``;
        point sources need no renaming (empty).
        """
        if self.kind == "point":
            return {}
        return {f"{b}_{s}_k20fe": f"{b}_{t}" for b in BANDS for s, t in (("m", "m"), ("msig", "msigcom"))}


@cache
def product_tables(product: str, kind: str = "point") -> ProductTables:
    """The tables of a product's light curves, read from the schema files.

    Parameters
    ----------
    product : str
        ``survey``, ``6x``, ``calibration``, ``calibration_sc`` or an alias (``cal``, ``sc``,
        ``lmc``, ``six_x``, ``6x2``).
    kind : {"point", "extended"}, default "point"
        Point or extended sources.

    Returns
    -------
    ProductTables
        Its merged-source, detection and link tables and the detection key.

    Raises
    ------
    KeyError
        If no merged-source table of that product and kind has detections (the message lists
        the products).

    Examples
    --------
    >>> cal = product_tables("cal")
    >>> cal.info, cal.detections, cal.link, cal.collection
    ('cf_info', 'pt_src_c', 'cf_link', 'cf_lightcurves')
    """
    product = PRODUCT_ALIASES.get(product, product)
    det_kind = {"point": "point_detections", "extended": "extended_detections"}[kind]
    for name in list_tables():
        s = load_schema(name)
        det = s.links.get("detections")
        if s.kind != "merged_sources" or s.product != product or not det:
            continue
        if load_schema(det).kind != det_kind:
            continue
        link = next((t for t in list_tables() if load_schema(t).kind == "cross_reference"
                     and load_schema(t).links.get("merged") == name), None)
        return ProductTables(product, name, det, link, s.links.get("detection_key", "cntr"), kind)
    products = sorted({load_schema(t).product for t in list_tables()
                       if load_schema(t).kind == "merged_sources"})
    raise KeyError(f"no {kind} merged-source table for product {product!r} (products: {products})")


@cache
def info_tables(info: str) -> ProductTables:
    """The tables joined for a merged-source table.

    Parameters
    ----------
    info : str
        A merged-source information table (``ecf_info``: calibration, extended).

    Returns
    -------
    ProductTables
        Its product's tables (of the right kind).

    Raises
    ------
    KeyError
        If ``info`` is not the merged-source table of a product with detections.
    """
    product = load_schema(info).product
    for kind in ("point", "extended"):
        with contextlib.suppress(KeyError):
            if (tables := product_tables(product, kind)).info == info:
                return tables
    raise KeyError(f"{info} is not the merged-source table of a product with detections")


@dataclass(frozen=True)
class LinkSource:
    """Where group membership comes from: the link table's Parquet files, or none (detections).

    Parameters
    ----------
    files : tuple of str, default ()
        The link table's Parquet files; empty: the detections' own ``gcntr`` decide.
    storage_options : str, default "{}"
        The filesystem's fsspec options as JSON (hashable, so datasets can be cached per worker).
    key : str, default "cntr"
        The detection key (``cntr``, ``ext_key``).
    column : str, default "cntr"
        The link table's column holding that key.
    """

    files: tuple[str, ...] = ()
    storage_options: str = "{}"  # JSON: hashable, so datasets can be cached per worker
    key: str = "cntr"  # the detection key (cntr, ext_key)
    column: str = "cntr"  # the link table's column holding it (cntr in every link table)

    @property
    def table(self) -> bool:
        """Whether membership comes from the link table."""
        return bool(self.files)

    def pairs(self, gcntr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The links of some groups.

        Parameters
        ----------
        gcntr : numpy.ndarray
            Group identifiers; a range and set filter on them is pushed down to Parquet.

        Returns
        -------
        tuple of numpy.ndarray
            (``gcntr``, detection key) of every link of those groups, as int64.
        """
        if len(gcntr) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        ds = _dataset(self.files, self.storage_options)
        g = pc.field("gcntr")
        flt = (g >= int(gcntr.min())) & (g <= int(gcntr.max())) & g.isin(pa.array(np.unique(gcntr)))
        t = ds.to_table(columns=["gcntr", self.column], filter=flt)
        return _ints(t, "gcntr"), _ints(t, self.column)


@lru_cache(maxsize=OPENED_PER_WORKER)
def _dataset(files: tuple[str, ...], storage_options: str) -> pads.Dataset:
    so = json.loads(storage_options)
    fs, _ = filesystem(files[0], so)
    paths = [filesystem(f, so)[1] for f in files]
    return pads.dataset(paths, filesystem=fs, format="parquet")


def _link_source(lake: Lake, tables: ProductTables, links: str) -> LinkSource:
    if links not in ("auto", "table", "detections"):
        raise ValueError("links must be 'auto', 'table' or 'detections'")
    have = (tables.link is not None and tables.link in lake.tables
            and lake.entry(tables.link).format == "parquet")
    if links == "table" and not have:
        raise KeyError(f"links='table' needs the link table {tables.link} as Parquet in {lake.url}")
    if links == "detections" or not have:
        return LinkSource(key=tables.key)
    files = tuple(lake.parquet_files(tables.link))
    names = load_schema(tables.link).names
    column = tables.key if tables.key in names else next(c for c in names if c != "gcntr")
    return LinkSource(files, _json(lake.storage_options), tables.key, column)


def _json(storage_options: dict) -> str:
    return json.dumps(storage_options, sort_keys=True, default=str)


def _groups(df: npd.NestedFrame, nested: str) -> tuple[np.ndarray, pa.Table]:
    """(group position per flat row, flat detections) of a joined partition."""
    flat = df[nested].nest.to_flat().reset_index(drop=True)
    if len(df) == 0:
        return np.zeros(0, np.int64), pa.Table.from_pandas(flat.iloc[:0], preserve_index=False)
    lengths = np.asarray(df[nested].array.list_lengths, dtype=np.int64)
    return np.repeat(np.arange(len(df)), lengths), pa.Table.from_pandas(flat, preserve_index=False)


def _ints(table: pa.Table, column: str) -> np.ndarray:
    return table.column(column).to_numpy().astype(np.int64, copy=False)


def _floats(table: pa.Table, column: str) -> np.ndarray:
    """A numeric column as float64, nulls as NaN."""
    col = table.column(column)
    if pa.types.is_floating(col.type):  # nulls come out as NaN
        return col.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    return pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)


def _count_by(keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """How many times each of ``keys`` occurs in ``values``."""
    u, c = np.unique(values, return_counts=True)
    out = np.zeros(len(keys), np.int64)
    if len(u):
        pos = np.clip(np.searchsorted(u, keys), 0, len(u) - 1)
        hit = u[pos] == keys
        out[hit] = c[pos[hit]]
    return out


@dataclass(frozen=True)
class DetectionSource:
    """Reads detection rows by key or gcntr from any partition (for groups cut by partitions).

    Parameters
    ----------
    url : str
        The detection catalogue (``LAKE/<table>/<table>``).
    storage_options : str
        Its filesystem's fsspec options as JSON.
    columns : tuple of str
        The detection columns read, the key first.
    radius_arcsec : float, default 60.0
        How far around a group :meth:`fetch` first looks for its rows.
    margin_url : str or None, optional
        The detection catalogue's margin, read by :meth:`near`.
    """

    url: str  # the detection catalogue (LAKE/<table>/<table>)
    storage_options: str  # JSON
    columns: tuple[str, ...]
    radius_arcsec: float = 60.0
    margin_url: str | None = None  # its margin catalogue, read by :meth:`near`

    def fetch(self, column: str, values: np.ndarray, ra: np.ndarray, dec: np.ndarray,
              expected: np.ndarray) -> pa.Table:
        """Rows whose ``column`` is in ``values``, looked for near the groups first.

        Parameters
        ----------
        column : str
            The column matched (the detection key or ``gcntr``).
        values : numpy.ndarray
            The values wanted.
        ra, dec : numpy.ndarray
            Positions (degrees) around which to look: the partitions within ``radius_arcsec``.
        expected : numpy.ndarray
            Rows expected for each of ``values``; if any is short, every partition is read.

        Returns
        -------
        pyarrow.Table
            The rows found (``columns``, ``gcntr`` and ``column``).
        """
        cat = _hats_catalog(self.url, self.storage_options)
        pixels: set = set()
        for r, d in zip(ra, dec, strict=True):
            with contextlib.suppress(Exception):  # a cone outside the coverage has no pixels
                pixels |= set(cat.filter_by_cone(float(r), float(d), self.radius_arcsec).get_healpix_pixels())
        rows = self._read(cat, sorted(pixels), column, values)
        found = _count_by(values, _ints(rows, column))
        if (found < expected).any():
            log.warning("%s: %d %s values have rows beyond %g\"; scanning every partition",
                        self.url, int((found < expected).sum()), column, self.radius_arcsec)
            rows = self._read(cat, cat.get_healpix_pixels(), column, values)
        return rows

    def near(self, pixel: HealpixPixel, gcntr: np.ndarray) -> pa.Table:
        """The rows of some groups that a partition-wise join on ``pixel`` sees.

        Parameters
        ----------
        pixel : HealpixPixel
            The partition of the merged sources.
        gcntr : numpy.ndarray
            The groups.

        Returns
        -------
        pyarrow.Table
            Their rows in the detection partitions overlapping ``pixel`` and in those partitions'
            margins, each row once (keyed by the first of ``columns``).
        """
        cat = _hats_catalog(self.url, self.storage_options)
        lo, hi = _pixel_range(pixel)
        parts = [p for p in cat.get_healpix_pixels() if _overlaps(p, lo, hi)]
        rows = self._read(cat, parts, "gcntr", gcntr)
        if self.margin_url is None:
            return rows
        margin = _hats_catalog(self.margin_url, self.storage_options)
        edge = self._read(margin, sorted(set(parts) & set(margin.get_healpix_pixels())), "gcntr", gcntr)
        key = _ints(edge, self.columns[0])
        _, first = np.unique(key, return_index=True)
        new = first[~np.isin(key[first], _ints(rows, self.columns[0]))]
        return pa.concat_tables([rows, edge.take(np.sort(new))]) if len(new) else rows

    def _read(self, cat: Any, pixels: list, column: str, values: np.ndarray) -> pa.Table:
        so = json.loads(self.storage_options)
        fs, _ = filesystem(self.url, so)
        paths = [filesystem(str(pixel_catalog_file(cat.catalog_base_dir, p)), so)[1] for p in pixels]
        cols = list(dict.fromkeys([*self.columns, "gcntr", column]))
        if not paths:
            return cat.schema.empty_table().select(cols)
        flt = pc.field(column).isin(pa.array(np.unique(values)))
        return pads.dataset(paths, filesystem=fs, format="parquet").to_table(columns=cols, filter=flt)


@dataclass(frozen=True)
class IndexCounts:
    """How many detection rows carry each ``gcntr``, from the detections' gcntr index catalog.

    Parameters
    ----------
    url : str
        The index catalog (``LAKE/<table>/<table>_gcntr_index``).
    storage_options : str
        Its filesystem's fsspec options as JSON.
    """

    url: str  # the index catalog (LAKE/<table>/<table>_gcntr_index)
    storage_options: str  # JSON

    def counts(self, gcntr: np.ndarray) -> np.ndarray:
        """Rows carrying each of some groups' ``gcntr``.

        Parameters
        ----------
        gcntr : numpy.ndarray
            The groups.

        Returns
        -------
        numpy.ndarray
            The number of detection rows of each, as int64.
        """
        if len(gcntr) == 0:
            return np.zeros(0, np.int64)
        g = pc.field("gcntr")
        flt = (g >= int(gcntr.min())) & (g <= int(gcntr.max())) & g.isin(pa.array(np.unique(gcntr)))
        t = _index_dataset(self.url, self.storage_options).to_table(columns=["gcntr"], filter=flt)
        return _count_by(gcntr, _ints(t, "gcntr"))


@lru_cache(maxsize=OPENED_PER_WORKER)
def _index_dataset(url: str, storage_options: str) -> pads.Dataset:
    fs, path = filesystem(url, json.loads(storage_options))
    return pads.dataset(f"{path.rstrip('/')}/dataset", filesystem=fs, format="parquet")  # skips _metadata


def _pixel_range(pixel: HealpixPixel) -> tuple[int, int]:
    """``[lo, hi)`` of the order-29 indexes inside ``pixel``."""
    shift = 2 * (29 - pixel.order)
    return pixel.pixel << shift, (pixel.pixel + 1) << shift


def _overlaps(pixel: HealpixPixel, lo: int, hi: int) -> bool:
    a, b = _pixel_range(pixel)
    return a < hi and lo < b


@lru_cache(maxsize=OPENED_PER_WORKER)
def _hats_catalog(url: str, storage_options: str) -> Any:
    return hats.read_hats(UPath(url, **json.loads(storage_options)))


@dataclass(frozen=True)
class LightCurveJob:
    """How one partition's light curves are finished: every link exactly once, statistics, nesting.

    The on-the-fly join (:func:`light_curves`) and the stored collections the lake build writes
    (:mod:`tmass_lake.convert.lightcurves`) both finish their partitions with :meth:`finish`.
    Made by :func:`light_curve_job`.

    Parameters
    ----------
    links : LinkSource
        Where membership comes from.
    source : DetectionSource or None
        Restores members missing from a partition; ``None``: no repair.
    counts : IndexCounts or None
        Rows carrying each gcntr (``links="detections"``); ``None``: the sources' ``napp``.
    nested : str
        The nested column's name.
    stats : bool
        Add the :func:`~tmass_lake.lake.stats.light_curve_stats` columns.
    thresholds : Thresholds
        The flags' thresholds.
    rename : tuple of (str, str)
        Detection columns renamed for the statistics (:attr:`ProductTables.mag_columns`).
    det_columns : tuple of str
        The nested detection columns, the key first.
    """

    links: LinkSource
    source: DetectionSource | None  # restores missing members; None: no repair
    counts: IndexCounts | None  # rows carrying each gcntr (links="detections"); None: napp
    nested: str
    stats: bool
    thresholds: Thresholds
    rename: tuple[tuple[str, str], ...]
    det_columns: tuple[str, ...]

    def finish(self, base: pd.DataFrame, group: np.ndarray, flat: pa.Table,
               ) -> tuple[pd.DataFrame, pa.StructArray]:
        """Merged sources and their candidate member rows into light curves.

        Keeps exactly the links (the link table's pairs, or the detections' ``gcntr``) and reads
        members missing from ``flat`` (beyond the partition and its margin) wherever they are.

        Parameters
        ----------
        base : pandas.DataFrame
            The merged sources (``gcntr``, ``ra``, ``dec``, and ``napp`` when it counts them).
        group : numpy.ndarray
            Each row of ``flat``'s position in ``base``.
        flat : pyarrow.Table
            Candidate member rows (at least ``det_columns``).

        Returns
        -------
        tuple
            (``base`` with the statistics columns when ``stats``, the detections as a
            ``pyarrow.StructArray``: one struct of lists per source, sorted by epoch).
        """
        flat = flat.select(list(self.det_columns))
        if len(base):
            members = self._link_members if self.links.table else self._gcntr_members
            group, flat = members(base, group, flat)
        idx = np.lexsort((_floats(flat, "jdate"), group))
        flat, group = flat.take(idx), group[idx]
        out = base
        if self.stats:
            rename = dict(self.rename)
            names = {rename.get(c, c): c for c in self.det_columns}
            numeric = pd.DataFrame({n: _floats(flat, c) for n, c in names.items() if n in STAT_INPUTS})
            st = light_curve_stats(group, len(base), numeric, ra0=base["ra"].to_numpy(dtype=float),
                                   dec0=base["dec"].to_numpy(dtype=float), thresholds=self.thresholds)
            out = pd.concat([base, pd.DataFrame(
                {c: pd.array(st[c].to_numpy(), dtype=pd.ArrowDtype(pa.from_numpy_dtype(st[c].dtype)))
                 for c in st.columns}, index=base.index)], axis=1)
        return out, nest_sorted(flat, group, len(base))

    def _link_members(self, base: pd.DataFrame, group: np.ndarray, flat: pa.Table,
                      ) -> tuple[np.ndarray, pa.Table]:
        """Exactly the link pairs of ``base``'s groups, each once, with their detection rows."""
        key = self.links.key
        gcntr = base["gcntr"].to_numpy(dtype=np.int64)
        link_gcntr, need = self.links.pairs(gcntr)
        pos = pd.Index(gcntr).get_indexer(link_gcntr)
        rows = _unique_rows(flat, key)  # a row joined under any group serves all its groups
        at = pd.Index(_ints(rows, key)).get_indexer(need)
        if self.source is not None and (at < 0).any():
            miss = at < 0
            keys, where = np.unique(need[miss]), np.unique(pos[miss])
            more = self.source.fetch(key, keys, base["ra"].to_numpy(dtype=float)[where],
                                     base["dec"].to_numpy(dtype=float)[where], np.ones(len(keys), np.int64))
            more = more.select(rows.column_names).cast(rows.schema)
            rows = _unique_rows(pa.concat_tables([rows, more]), key)
            at = pd.Index(_ints(rows, key)).get_indexer(need)
        ok = at >= 0
        return pos[ok], rows.take(at[ok])

    def _gcntr_members(self, base: pd.DataFrame, group: np.ndarray, flat: pa.Table,
                       ) -> tuple[np.ndarray, pa.Table]:
        """Members by the detections' own gcntr; groups short of their row count are re-read."""
        if self.source is None:
            return group, flat
        gcntr = base["gcntr"].to_numpy(dtype=np.int64)
        expected = self.counts.counts(gcntr) if self.counts is not None \
            else base["napp"].to_numpy(dtype=np.int64)
        short = np.bincount(group, minlength=len(base)) < expected
        if not short.any():
            return group, flat
        rows = self.source.fetch("gcntr", gcntr[short], base["ra"].to_numpy(dtype=float)[short],
                                 base["dec"].to_numpy(dtype=float)[short], expected[short])
        pos = pd.Index(gcntr).get_indexer(_ints(rows, "gcntr"))
        keep = np.flatnonzero(~short[group])
        return (np.concatenate([group[keep], pos]),
                pa.concat_tables([flat.take(keep), rows.select(flat.column_names).cast(flat.schema)]))

    def finish_partition(self, df: npd.NestedFrame) -> npd.NestedFrame:
        """A partition of the lsdb join (merged sources, candidate members nested), finished.

        Parameters
        ----------
        df : nested_pandas.NestedFrame
            The partition, candidate members nested under ``nested``.

        Returns
        -------
        nested_pandas.NestedFrame
            The merged sources with their statistics and exactly their members nested.
        """
        group, flat = _groups(df, self.nested)
        out, nested = self.finish(pd.DataFrame(df.drop(columns=[self.nested])), group, flat)
        out[self.nested] = pd.Series(nested, dtype=NestedDtype(nested.type), index=out.index)
        return npd.NestedFrame(out)


def _unique_rows(table: pa.Table, key: str) -> pa.Table:
    """``table`` with one row per ``key`` (the first)."""
    _, first = np.unique(_ints(table, key), return_index=True)
    return table if len(first) == table.num_rows else table.take(np.sort(first))


def nest_sorted(flat: pa.Table, group: np.ndarray, n: int) -> pa.StructArray:
    """Rows sorted by group as one struct of lists per group.

    Parameters
    ----------
    flat : pyarrow.Table
        The rows, already sorted by ``group``.
    group : numpy.ndarray
        Each row's group, 0 to ``n - 1``.
    n : int
        The number of groups (groups without rows get empty lists).

    Returns
    -------
    pyarrow.StructArray
        ``n`` structs with one list per column of ``flat`` (large lists past 2**31 rows).
    """
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(np.bincount(group, minlength=n), out=offsets[1:])
    large = offsets[-1] >= 2**31
    index = pa.array(offsets if large else offsets.astype(np.int32))
    lists = pa.LargeListArray if large else pa.ListArray
    return pa.StructArray.from_arrays([lists.from_arrays(index, flat.column(c).combine_chunks())
                                       for c in flat.column_names], names=flat.column_names)


def light_curve_job(lake: Lake, tables: ProductTables, *, detection_columns: list[str] | None = None,
                    links: Literal["auto", "table", "detections"] = "auto", stats: bool = True,
                    thresholds: Thresholds = DEFAULT_THRESHOLDS, complete: bool = True,
                    nested_name: str = NESTED, repair_arcsec: float = 60.0,
                    margin_url: str | None = None) -> LightCurveJob:
    """The :class:`LightCurveJob` of a product's tables in a lake.

    Parameters
    ----------
    lake : Lake
        The lake holding the tables.
    tables : ProductTables
        The product's tables (:func:`product_tables`).
    detection_columns : list of str or None, optional
        Detection columns to nest (default: key, epoch, position and errors, J/H/K magnitudes and
        errors, quality flags); the key and ``jdate`` are always nested.
    links : {"auto", "table", "detections"}, default "auto"
        Membership from the link table (``"auto"``: when the lake has it as Parquet) or from the
        detections' ``gcntr``.
    stats : bool, default True
        Add the per-source statistics and flags.
    thresholds : Thresholds, default DEFAULT_THRESHOLDS
        The flags' thresholds.
    complete : bool, default True
        Restore members beyond a partition and its margin.
    nested_name : str, default "detections"
        The nested column's name.
    repair_arcsec : float, default 60.0
        How far around a group missing members are looked for first.
    margin_url : str or None, optional
        The detections' margin catalogue, for :meth:`DetectionSource.near`.

    Returns
    -------
    LightCurveJob
        How each partition is finished.

    Raises
    ------
    KeyError
        With ``links="table"``, if the lake lacks the link table as Parquet.
    ValueError
        If ``links`` is not one of the three, or membership from the detections needs the
        sources' ``napp`` and there is neither a gcntr index nor ``napp``.
    """
    link_src = _link_source(lake, tables, links)
    det_schema = load_schema(tables.detections)
    det_default = POINT_COLUMNS if tables.kind == "point" else EXTENDED_COLUMNS
    det_cols = [c for c in dict.fromkeys([tables.key, *(detection_columns or det_default)])
                if c in det_schema.names]
    if "jdate" not in det_cols:
        det_cols.append("jdate")
    counts = None
    if complete and not link_src.table:  # rows carrying each gcntr: the gcntr index, else napp
        index = lake.index_url(tables.detections, "gcntr")
        counts = IndexCounts(index, _json(lake.storage_options)) if index else None
        if counts is None and "napp" not in load_schema(tables.info).names:
            raise ValueError(f"{tables.info} has no napp: use links='table' or complete=False")
    source = None
    if complete:
        source = DetectionSource(lake.main_catalog_url(tables.detections), _json(lake.storage_options),
                                 tuple(det_cols), repair_arcsec, margin_url)
    return LightCurveJob(link_src, source, counts, nested_name, stats, thresholds,
                         tuple(tables.mag_columns.items()), tuple(det_cols))


def source_columns_for(tables: ProductTables, source_columns: list[str] | None = None) -> list[str]:
    """The merged-source columns of the light curves.

    Parameters
    ----------
    tables : ProductTables
        The product's tables.
    source_columns : list of str or None, optional
        Columns wanted besides ``gcntr, ra, dec, napp``.

    Returns
    -------
    list of str
        ``gcntr, ra, dec, napp`` and ``source_columns``, each once, those the information table
        has.
    """
    names = load_schema(tables.info).names
    return [c for c in dict.fromkeys([*SOURCE_COLUMNS, *(source_columns or [])]) if c in names]


def light_curves(lake: Lake, product: str = "calibration", *, kind: Literal["point", "extended"] = "point",
                 detection_columns: list[str] | None = None, source_columns: list[str] | None = None,
                 links: Literal["auto", "table", "detections"] = "auto", stats: bool = True,
                 thresholds: Thresholds = DEFAULT_THRESHOLDS, complete: bool = True,
                 search_filter: Any = None, nested_name: str = NESTED, margin: bool = True,
                 repair_arcsec: float = 60.0, stored: bool | None = None) -> lsdb.Catalog:
    """One row per merged source of ``product`` with its detections nested, sorted by epoch.

    Parameters
    ----------
    lake : Lake
        The lake.
    product : str, default "calibration"
        ``survey``, ``6x``, ``calibration``, ``calibration_sc`` or an alias (``cal``, ``sc``...).
    kind : {"point", "extended"}, default "point"
        Point or extended sources.
    detection_columns : list of str or None, optional
        Detection columns nested under ``nested_name`` (default: key, epoch, position and errors,
        J/H/K magnitudes and errors, quality flags); the key and ``jdate`` always are.
    source_columns : list of str or None, optional
        Information-table columns besides ``gcntr, ra, dec, napp``.
    links : {"auto", "table", "detections"}, default "auto"
        ``"table"`` uses the lake's link table, ``"detections"`` the detections' ``gcntr``,
        ``"auto"`` the table when present.
    stats : bool, default True
        Add the :func:`~tmass_lake.lake.stats.light_curve_stats` columns and flags.
    thresholds : Thresholds, default DEFAULT_THRESHOLDS
        The flags' thresholds.
    complete : bool, default True
        Restore groups whose members lie beyond the partition margins (searching
        ``repair_arcsec`` around them first), so every link appears exactly once.
    search_filter : lsdb search or None, optional
        Restricts the merged sources (``lsdb.ConeSearch``...).
    nested_name : str, default "detections"
        The nested column's name.
    margin : bool, default True
        Join with the detections' margin; ``False``: cheaper reads, more repairs.
    repair_arcsec : float, default 60.0
        How far around a group missing members are looked for first.
    stored : bool or None, optional
        The lake build writes each product's light curves as a collection
        (``cf_lightcurves``...): ``None`` (default) opens it when the lake has it and it holds
        what is asked (a subset of its columns, the same links and thresholds), else joins on the
        fly; ``True`` requires it, ``False`` always joins.

    Returns
    -------
    lsdb.Catalog
        Lazy, partitioned like the information table: the source columns, the statistics (with
        ``stats``) and the nested detections.

    Raises
    ------
    KeyError
        If the product has no tables of that kind, the lake lacks one, or ``stored=True`` and
        the stored collection cannot serve the request (the message says why).
    ValueError
        If ``links`` is not one of the three, or membership needs ``napp`` that is missing.

    Examples
    --------
    >>> curves = light_curves(lake, "calibration", source_columns=["spos"])  # doctest: +SKIP
    >>> variables = curves.query("is_variable").compute()  # doctest: +SKIP
    >>> plot_light_curve(variables.iloc[[0]], path="variable.png")  # doctest: +SKIP
    """
    tables = product_tables(product, kind)
    if stored is not False:
        found = _stored(lake, tables, detection_columns=detection_columns, source_columns=source_columns,
                        links=links, stats=stats, thresholds=thresholds, search_filter=search_filter,
                        nested_name=nested_name, margin=margin)
        if isinstance(found, str):
            if stored:
                raise KeyError(f"{tables.collection} cannot be used: {found}")
            log.debug("joining %s on the fly: %s", tables.collection, found)
        else:
            return found
    job = light_curve_job(lake, tables, detection_columns=detection_columns, links=links, stats=stats,
                          thresholds=thresholds, complete=complete, nested_name=nested_name,
                          repair_arcsec=repair_arcsec)
    src_cols = source_columns_for(tables, source_columns)
    info = lake.open(tables.info, columns=src_cols,
                     **({"search_filter": search_filter} if search_filter is not None else {}))
    # rows in no group have a null gcntr: never joined (lsdb cannot nest on a null key)
    det = lake.open(tables.detections, columns=[*job.det_columns, "gcntr"], filters=[("gcntr", ">", 0)],
                    margin=margin)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Right catalog does not have a margin", RuntimeWarning)
        cat = info.join_nested(det, left_on="gcntr", right_on="gcntr", nested_column_name=nested_name,
                               how="left")
    return cat.map_partitions(_finish_partition, job, meta=job.finish_partition(cat.meta))


STORED_LINKS = "tmass_lake_links"
STORED_THRESHOLDS = "tmass_lake_thresholds"
"""``hats.properties`` keys of a stored light-curve collection: how it was joined."""


def _stored(lake: Lake, tables: ProductTables, *, detection_columns: list[str] | None,
            source_columns: list[str] | None, links: str, stats: bool, thresholds: Thresholds,
            search_filter: Any, nested_name: str, margin: bool) -> lsdb.Catalog | str:
    """The stored collection opened for this request, or why it cannot serve it."""
    if tables.collection not in lake.tables:
        return f"the lake has no {tables.collection}"
    cat = lake.open(tables.collection, margin=margin,
                    **({"search_filter": search_filter} if search_filter is not None else {}))
    extra = cat.hc_structure.catalog_info.__pydantic_extra__ or {}
    if links not in ("auto", extra.get(STORED_LINKS)):
        return f"built with links={extra.get(STORED_LINKS)!r}"
    if stats and json.loads(extra.get(STORED_THRESHOLDS, "{}")) != asdict(thresholds):
        return "built with other thresholds"
    nested = next(c for c, t in cat.dtypes.items() if isinstance(t, NestedDtype))
    have_src = [c for c in cat.columns if c != nested and c not in STAT_COLUMNS]
    want_src = source_columns_for(tables, source_columns)
    if not set(want_src) <= set(have_src):
        return f"it has no column(s) {sorted(set(want_src) - set(have_src))}"
    have_det = list(cat.dtypes[nested].column_dtypes)
    want_det = list(dict.fromkeys([tables.key, *(detection_columns or have_det)]))
    if not set(want_det) <= set(have_det):
        return f"its {nested} have no column(s) {sorted(set(want_det) - set(have_det))}"
    keep = [*want_src, *([c for c in cat.columns if c in STAT_COLUMNS] if stats else []), nested]
    if keep != list(cat.columns):
        cat = cat[keep]
    if want_det != have_det:
        cat = cat.map_partitions(_select_nested, nested, tuple(want_det))
    return cat.rename({nested: nested_name}) if nested_name != nested else cat


def _finish_partition(df: npd.NestedFrame, job: LightCurveJob) -> npd.NestedFrame:
    return job.finish_partition(df)


def _select_nested(df: npd.NestedFrame, nested: str, columns: tuple[str, ...]) -> npd.NestedFrame:
    out = df.copy()
    out[nested] = df[nested].nest[list(columns)]
    return out


def plot_light_curve(row: pd.Series | npd.NestedFrame, nested_name: str = NESTED,
                     path: str | None = None) -> Figure:
    """J, H, K magnitude against epoch for one merged source.

    Parameters
    ----------
    row : pandas.Series or nested_pandas.NestedFrame
        A row of :func:`light_curves` (of a frame: its first row).
    nested_name : str, default "detections"
        The nested detections' column.
    path : str or None, optional
        Also save the figure there (PNG, PDF... by the extension).

    Returns
    -------
    matplotlib.figure.Figure
        The figure: magnitudes with their errors against JD - 2450000, the title naming the
        source and its ``is_variable``/``is_moving`` flags.
    """
    if isinstance(row, pd.DataFrame):
        row = row.iloc[0]
    det = row[nested_name]
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.subplots()
    for b, color in zip(BANDS, ("tab:blue", "tab:green", "tab:red"), strict=True):
        m = f"{b}_m" if f"{b}_m" in det else f"{b}_m_k20fe"
        s = f"{b}_msigcom" if f"{b}_msigcom" in det else f"{b}_msig_k20fe"
        if m not in det:
            continue
        d = det[[c for c in ("jdate", m, s) if c in det]].dropna()
        ax.errorbar(d["jdate"] - 2450000.0, d[m], yerr=d.get(s), fmt=".", ms=3,
                    color=color, ecolor=color, alpha=0.7, elinewidth=0.6, label=b.upper())
    ax.invert_yaxis()
    ax.set_xlabel("JD - 2450000")
    ax.set_ylabel("magnitude")
    title = f"gcntr {row['gcntr']}  ({row['ra']:.5f}, {row['dec']:+.5f})  {len(det)} epochs"
    flags = [f for f in ("is_variable", "is_moving") if f in row and bool(row[f])]
    ax.set_title(title + (f"  [{', '.join(flags)}]" if flags else ""), fontsize=10)
    ax.legend(loc="best", fontsize=8)
    if path:
        fig.savefig(path, dpi=110)
    return fig
