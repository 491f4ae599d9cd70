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
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Literal

import hats
import nested_pandas as npd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from hats.io import pixel_catalog_file
from matplotlib.figure import Figure
from nested_pandas.series.packer import pack_sorted_df_into_struct
from upath import UPath

from tmass_lake.lake.stats import BANDS, DEFAULT_THRESHOLDS, Thresholds, light_curve_stats
from tmass_lake.schema import list_tables, load_schema
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


@dataclass(frozen=True)
class ProductTables:
    """The three tables of a product's multi-epoch join, from the schema files."""

    product: str
    info: str
    detections: str
    link: str | None
    key: str
    kind: str

    @property
    def mag_columns(self) -> dict[str, str]:
        """Detection columns to stats names (``{b}_m``, ``{b}_msigcom``)."""
        if self.kind == "point":
            return {}
        return {f"{b}_{s}_k20fe": f"{b}_{t}" for b in BANDS for s, t in (("m", "m"), ("msig", "msigcom"))}


@cache
def product_tables(product: str, kind: str = "point") -> ProductTables:
    """Resolve ``product`` (``calibration``, ``cal``, ``6x``, ``survey``...) to its tables."""
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


@dataclass(frozen=True)
class LinkSource:
    """Where group membership comes from: the link table's Parquet files, or None (detections)."""

    files: tuple[str, ...] = ()
    storage_options: str = "{}"  # JSON: hashable, so datasets can be cached per worker
    key: str = "cntr"  # the detection key (cntr, ext_key)
    column: str = "cntr"  # the link table's column holding it (cntr in every link table)

    @property
    def table(self) -> bool:
        return bool(self.files)

    def pairs(self, gcntr: np.ndarray) -> pd.DataFrame:
        """The (gcntr, key) links of the given groups (range + set filter pushed to Parquet)."""
        if len(gcntr) == 0:
            return pd.DataFrame({"gcntr": np.zeros(0, np.int64), self.key: np.zeros(0, np.int64)})
        ds = _dataset(self.files, self.storage_options)
        g = pc.field("gcntr")
        flt = (g >= int(gcntr.min())) & (g <= int(gcntr.max())) & g.isin(pa.array(np.unique(gcntr)))
        t = ds.to_table(columns=["gcntr", self.column], filter=flt)
        return pd.DataFrame({"gcntr": t.column("gcntr").to_numpy(),
                             self.key: t.column(self.column).to_numpy()})


@cache
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


def _groups(df: npd.NestedFrame, nested: str) -> tuple[np.ndarray, pd.DataFrame]:
    """(group position per flat row, flat detections) of a joined partition."""
    if len(df) == 0:
        return np.zeros(0, np.int64), df[nested].nest.to_flat().iloc[:0]
    lengths = np.asarray(df[nested].array.list_lengths, dtype=np.int64)
    flat = df[nested].nest.to_flat()
    group = np.repeat(np.arange(len(df)), lengths)
    return group, flat.reset_index(drop=True)


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
    """Reads detection rows by key or gcntr from any partition (for groups cut by partitions)."""

    url: str  # the detection catalogue (LAKE/<table>/<table>)
    storage_options: str  # JSON
    columns: tuple[str, ...]
    radius_arcsec: float = 60.0

    def fetch(self, column: str, values: np.ndarray, ra: np.ndarray, dec: np.ndarray,
              expected: np.ndarray) -> pd.DataFrame:
        """Rows whose ``column`` is in ``values`` (``expected`` rows of each): the partitions
        within ``radius_arcsec`` of (``ra``, ``dec``) first, every partition if still short."""
        cat = _hats_catalog(self.url, self.storage_options)
        pixels: set = set()
        for r, d in zip(ra, dec, strict=True):
            with contextlib.suppress(Exception):  # a cone outside the coverage has no pixels
                pixels |= set(cat.filter_by_cone(float(r), float(d), self.radius_arcsec).get_healpix_pixels())
        rows = self._read(cat, sorted(pixels), column, values)
        found = _count_by(values, rows[column].to_numpy(dtype=np.int64))
        if (found < expected).any():
            log.warning("%s: %d %s values have rows beyond %g\"; scanning every partition",
                        self.url, int((found < expected).sum()), column, self.radius_arcsec)
            rows = self._read(cat, cat.get_healpix_pixels(), column, values)
        return rows

    def _read(self, cat: Any, pixels: list, column: str, values: np.ndarray) -> pd.DataFrame:
        so = json.loads(self.storage_options)
        fs, _ = filesystem(self.url, so)
        paths = [filesystem(str(pixel_catalog_file(cat.catalog_base_dir, p)), so)[1] for p in pixels]
        cols = list(dict.fromkeys([*self.columns, "gcntr", column]))
        flt = pc.field(column).isin(pa.array(np.unique(values)))
        table = pads.dataset(paths, filesystem=fs, format="parquet").to_table(columns=cols, filter=flt) \
            if paths else None
        if table is None:
            return pd.DataFrame({c: pd.Series(dtype="int64") for c in cols})
        return table.to_pandas(types_mapper=pd.ArrowDtype)


@dataclass(frozen=True)
class IndexCounts:
    """How many detection rows carry each ``gcntr``, from the detections' gcntr index catalog."""

    url: str  # the index catalog (LAKE/<table>/<table>_gcntr_index)
    storage_options: str  # JSON

    def counts(self, gcntr: np.ndarray) -> np.ndarray:
        if len(gcntr) == 0:
            return np.zeros(0, np.int64)
        g = pc.field("gcntr")
        flt = (g >= int(gcntr.min())) & (g <= int(gcntr.max())) & g.isin(pa.array(np.unique(gcntr)))
        t = _index_dataset(self.url, self.storage_options).to_table(columns=["gcntr"], filter=flt)
        return _count_by(gcntr, t.column("gcntr").to_numpy())


@cache
def _index_dataset(url: str, storage_options: str) -> pads.Dataset:
    fs, path = filesystem(url, json.loads(storage_options))
    return pads.dataset(f"{path.rstrip('/')}/dataset", filesystem=fs, format="parquet")  # skips _metadata


@cache
def _hats_catalog(url: str, storage_options: str) -> Any:
    return hats.read_hats(UPath(url, **json.loads(storage_options)))


@dataclass(frozen=True)
class _Finish:
    """What each light-curve task needs besides its partition."""

    links: LinkSource
    source: DetectionSource | None
    counts: IndexCounts | None
    nested: str
    stats: bool
    thresholds: Thresholds
    rename: tuple[tuple[str, str], ...]
    det_columns: tuple[str, ...]


def _link_members(df: npd.NestedFrame, group: np.ndarray, flat: pd.DataFrame, ctx: _Finish,
                  ) -> tuple[np.ndarray, pd.DataFrame]:
    """Exactly the link pairs of the partition's groups, each once, with their detection rows."""
    key, cols = ctx.links.key, list(ctx.det_columns)
    gcntr = df["gcntr"].to_numpy(dtype=np.int64)
    pairs = ctx.links.pairs(gcntr)
    pos = pd.Index(gcntr).get_indexer(pairs["gcntr"].to_numpy(dtype=np.int64))
    need = pairs[key].to_numpy(dtype=np.int64)
    rows = flat.drop_duplicates(key, ignore_index=True)  # a row joined under any group serves all
    at = pd.Index(rows[key].to_numpy(dtype=np.int64)).get_indexer(need)
    if ctx.source is not None and (at < 0).any():
        miss = at < 0
        keys, where = np.unique(need[miss]), np.unique(pos[miss])
        more = ctx.source.fetch(key, keys, df["ra"].to_numpy(dtype=float)[where],
                                df["dec"].to_numpy(dtype=float)[where], np.ones(len(keys), np.int64))
        rows = pd.concat([rows, more[cols]], ignore_index=True).drop_duplicates(key, ignore_index=True)
        at = pd.Index(rows[key].to_numpy(dtype=np.int64)).get_indexer(need)
    ok = at >= 0
    return pos[ok], rows.iloc[at[ok]].reset_index(drop=True)


def _gcntr_members(df: npd.NestedFrame, group: np.ndarray, flat: pd.DataFrame, ctx: _Finish,
                   ) -> tuple[np.ndarray, pd.DataFrame]:
    """Members by the detections' own gcntr; groups short of their row count are re-read."""
    if ctx.source is None:
        return group, flat
    gcntr = df["gcntr"].to_numpy(dtype=np.int64)
    expected = ctx.counts.counts(gcntr) if ctx.counts is not None else df["napp"].to_numpy(dtype=np.int64)
    short = np.bincount(group, minlength=len(df)) < expected
    if not short.any():
        return group, flat
    rows = ctx.source.fetch("gcntr", gcntr[short], df["ra"].to_numpy(dtype=float)[short],
                            df["dec"].to_numpy(dtype=float)[short], expected[short])
    pos = pd.Index(gcntr).get_indexer(rows["gcntr"].to_numpy(dtype=np.int64))
    keep = ~short[group]
    return (np.concatenate([group[keep], pos]),
            pd.concat([flat[keep], rows[list(ctx.det_columns)]], ignore_index=True))


def _finish_partition(df: npd.NestedFrame, ctx: _Finish) -> npd.NestedFrame:
    """Members (exactly the links, or by gcntr), sorted by epoch, statistics, re-nested."""
    nested, cols = ctx.nested, list(ctx.det_columns)
    group, flat = _groups(df, nested)
    flat = flat[cols]
    if len(df):
        members = _link_members if ctx.links.table else _gcntr_members
        group, flat = members(df, group, flat, ctx)
    order = np.lexsort((flat["jdate"].to_numpy(dtype=float, na_value=np.nan), group))
    flat = flat.iloc[order]
    group = group[order]
    base = pd.DataFrame(df.drop(columns=[nested]))
    parts = [base]
    if ctx.stats:
        st = light_curve_stats(group, len(base), flat.rename(columns=dict(ctx.rename)),
                               ra0=base["ra"].to_numpy(dtype=float),
                               dec0=base["dec"].to_numpy(dtype=float), thresholds=ctx.thresholds)
        parts.append(pd.DataFrame({c: pd.array(st[c].to_numpy(), dtype=pd.ArrowDtype(pa.from_numpy_dtype(
            st[c].dtype))) for c in st.columns}, index=base.index))
    flat.index = pd.Index(group)
    packed = pack_sorted_df_into_struct(flat, name=nested)
    if len(packed) != len(base):
        packed = packed.reindex(pd.RangeIndex(len(base)))
    packed.index = base.index
    parts.append(packed.to_frame())
    return npd.NestedFrame(pd.concat(parts, axis=1))


def light_curves(lake: Lake, product: str = "calibration", *, kind: Literal["point", "extended"] = "point",
                 detection_columns: list[str] | None = None, source_columns: list[str] | None = None,
                 links: Literal["auto", "table", "detections"] = "auto", stats: bool = True,
                 thresholds: Thresholds = DEFAULT_THRESHOLDS, complete: bool = True,
                 search_filter: Any = None, nested_name: str = NESTED, margin: bool = True,
                 repair_arcsec: float = 60.0) -> lsdb.Catalog:
    """One row per merged source of ``product`` with its detections nested, sorted by epoch.

    ``detection_columns`` (default: key, epoch, position and errors, J/H/K magnitudes and
    errors, quality flags) are nested under ``nested_name``; ``source_columns`` (default
    ``gcntr, ra, dec, napp``) come from the information table. ``links``: ``"table"`` uses the
    lake's link table (every (gcntr, key) link once, a detection linked to two groups under
    both), ``"detections"`` the detections' own ``gcntr`` (each detection under one group, the
    lowest of its groups), ``"auto"`` the table when present. ``complete=True`` restores members
    beyond the partition margins (searching ``repair_arcsec`` around the group first), so every
    link appears exactly once;
    ``margin=False`` joins without the detections' margin (cheaper reads; more repairs).
    ``search_filter`` (an lsdb search) restricts the sources. ``stats`` adds
    :func:`~tmass_lake.lake.stats.light_curve_stats` columns and flags (``thresholds``).
    """
    tables = product_tables(product, kind)
    link_src = _link_source(lake, tables, links)
    det_default = POINT_COLUMNS if kind == "point" else EXTENDED_COLUMNS
    det_schema = load_schema(tables.detections)
    det_cols = [c for c in dict.fromkeys([tables.key, *(detection_columns or det_default)])
                if c in det_schema.names]
    if "jdate" not in det_cols:
        det_cols.append("jdate")
    info_names = load_schema(tables.info).names
    src_cols = [c for c in dict.fromkeys([*SOURCE_COLUMNS, *(source_columns or [])]) if c in info_names]
    counts = None
    if complete and not link_src.table:  # rows carrying each gcntr: the gcntr index, else napp
        index = lake.index_url(tables.detections, "gcntr")
        counts = IndexCounts(index, _json(lake.storage_options)) if index else None
        if counts is None and "napp" not in src_cols:
            raise ValueError(f"{tables.info} has no napp: use links='table' or complete=False")
    info = lake.open(tables.info, columns=src_cols,
                     **({"search_filter": search_filter} if search_filter is not None else {}))
    # rows in no group have a null gcntr: never joined (lsdb cannot nest on a null key)
    det = lake.open(tables.detections, columns=[*det_cols, "gcntr"], filters=[("gcntr", ">", 0)],
                    margin=margin)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Right catalog does not have a margin", RuntimeWarning)
        cat = info.join_nested(det, left_on="gcntr", right_on="gcntr", nested_column_name=nested_name,
                               how="left")
    source = None
    if complete:
        source = DetectionSource(lake.main_catalog_url(tables.detections), _json(lake.storage_options),
                                 tuple(det_cols),
                                 repair_arcsec)
    ctx = _Finish(link_src, source, counts, nested_name, stats, thresholds, tuple(tables.mag_columns.items()),
                  tuple(det_cols))
    meta = _finish_partition(cat.meta, ctx)
    return cat.map_partitions(_finish_partition, ctx, meta=meta)


def plot_light_curve(row: pd.Series | npd.NestedFrame, nested_name: str = NESTED,
                     path: str | None = None) -> Figure:
    """J, H, K magnitude against epoch for one merged source (a row of :func:`light_curves`)."""
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
