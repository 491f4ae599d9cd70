"""The lake build report: a text and JSON summary per table, sky coverage / partition PNGs and
the lake card (``index.html``, a page per table: :mod:`tmass_lake.convert.card`).

Written to ``LAKE/report/``: ``report.txt``, ``report.json``, ``index.html`` + ``card.css`` +
``tables/<table>.html``, and for every collection ``<table>_coverage.png`` (all-sky point density
from the catalog's skymap), ``<table>_orders.png`` (each partition coloured by its rows, the
orders counted in the title), ``<table>_fields.png`` where the rows sit in a few small fields
(zoomed footprints: calibration fields, 6x regions) and ``<table>_lightcurve.png`` for light-curve
collections; ``rows.png`` (rows per table).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import hats
import matplotlib
import nested_pandas as npd
import numpy as np
import pyarrow.parquet as pq
from cdshealpix.nested import healpix_to_lonlat, neighbours, vertices
from dask.distributed import Client
from hats.catalog.healpix_dataset.healpix_dataset import HealpixDataset
from hats.io.paths import pixel_catalog_file
from hats.io.skymap import read_skymap
from matplotlib import pyplot as plt
from matplotlib.collections import PolyCollection
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from tmass_lake.convert.card import (
    CSS,
    CSS_FILE,
    INDEX,
    TABLE_DIR,
    ColumnCard,
    Field,
    LakeCard,
    Plot,
    TableCard,
    index_page,
    table_page,
)
from tmass_lake.convert.manifest import HATS_TYPES, format_drift
from tmass_lake.convert.tasks import run_tasks
from tmass_lake.convert.writer import upath, write_catalog_summaries
from tmass_lake.lake import plot_light_curve
from tmass_lake.storage import ensure_dir, filesystem, join, retrying, url_of, write_text

log = logging.getLogger(__name__)

REPORT_DIR = "report"
COVERAGE_ORDER = 6
FIELDS_MAX = 48
"""At most this many separate patches of sky count as fields (zoomed); more is a survey."""
FIELDS_SKY_FRACTION = 0.02
"""Fields are drawn zoomed only while the rows cover less than this share of the sky."""
FIELD_PANELS = 12
FINE_ORDER = 10
PLOT_KINDS = ("fields", "coverage", "orders", "lightcurve")


def _orders(lake: str, entry: dict, storage_options: dict) -> dict[str, int]:
    """Partitions per HEALPix order of a collection's main catalog."""
    catalog = hats.read_hats(upath(join(lake, entry["path"], entry["catalog"]), storage_options))
    counts = Counter(p.order for p in catalog.get_healpix_pixels())
    return {str(k): counts[k] for k in sorted(counts)}


def _disk_bytes(lake: str, entry: dict, storage_options: dict) -> int | None:
    try:
        fs, root = filesystem(join(lake, entry["path"]), storage_options)
        return int(fs.du(root))
    except (OSError, NotImplementedError):
        return None


def table_rows(lake: str, manifest: dict, storage_options: dict) -> list[dict]:
    """One summary row per table of the manifest."""
    rows = []
    for name, e in sorted(manifest["tables"].items(), key=lambda kv: (kv[1]["family"], kv[0])):
        collection = e["type"] in HATS_TYPES
        rows.append({
            "table": name, "family": e["family"], "type": e["type"], "lines_read": e["lines_read"],
            "rows_written": e["rows"], "rows_quarantined": e["rows_quarantined"],
            "partitions": e["partitions"], "margin_rows": e.get("margin_rows", 0),
            "indexes": sorted(e.get("indexes") or {}), "bytes": e["bytes"],
            "disk_bytes": _disk_bytes(lake, e, storage_options),
            "seconds": e.get("lake_seconds", e["seconds"]),
            "orders": _orders(lake, e, storage_options) if collection else {},
        })
    return rows


def _png(fig, tight: bool = True) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight" if tight else None)
    return buf.getvalue()


def _catalog(lake: str, entry: dict, storage_options: dict) -> HealpixDataset:
    return hats.read_hats(upath(join(lake, entry["path"], entry["catalog"]), storage_options))


@dataclass(frozen=True)
class Sky:
    """A catalog's skymap, read once: rows per order-6 cell, and per cell of the finest order
    hats stored (at most :data:`FINE_ORDER`), only the cells with rows."""

    coarse: np.ndarray
    order: int
    pixels: np.ndarray
    counts: np.ndarray


def read_sky(catalog: HealpixDataset) -> Sky:
    order = max(min(catalog.catalog_info.skymap_order or COVERAGE_ORDER, FINE_ORDER), COVERAGE_ORDER)
    fine = read_skymap(catalog, order)
    pixels = np.flatnonzero(fine)
    counts = fine[pixels]
    del fine
    return Sky(read_skymap(catalog, COVERAGE_ORDER), order, pixels, counts)


def footprint(sky: Sky) -> tuple[list[Field], float]:
    """Where a catalog's rows are: its fields (connected patches of order-6 cells with rows,
    largest first; none when the rows spread over the sky) and the share of the sky covered."""
    cells = np.flatnonzero(sky.coarse)
    fraction = len(cells) / len(sky.coarse)
    if len(cells) == 0 or fraction >= FIELDS_SKY_FRACTION:
        return [], fraction
    near = np.asarray(neighbours(cells.astype(np.uint64), COVERAGE_ORDER)).astype(np.int64)
    at = np.searchsorted(cells, near).clip(0, len(cells) - 1)
    linked = (near >= 0) & (cells[at] == near)
    rows, cols = np.nonzero(linked)
    graph = coo_matrix((np.ones(len(rows)), (rows, at[rows, cols])), shape=(len(cells), len(cells)))
    n, label = connected_components(graph, directed=False)
    if n > FIELDS_MAX:
        return [], fraction
    order, pixels, counts = sky.order, sky.pixels, sky.counts
    group = label[np.searchsorted(cells, pixels >> (2 * (order - COVERAGE_ORDER)))]
    lon, lat = healpix_to_lonlat(pixels.astype(np.uint64), order)
    ra, dec = np.asarray(lon.deg), np.asarray(lat.deg)
    size = np.degrees(np.sqrt(4 * np.pi / (12 * 4**order)))
    fields = []
    for g in range(n):
        m = group == g
        if not m.any():
            continue
        w = counts[m].astype(float)
        r, d = np.radians(ra[m]), np.radians(dec[m])
        v = np.array([np.sum(w * np.cos(d) * np.cos(r)), np.sum(w * np.cos(d) * np.sin(r)),
                      np.sum(w * np.sin(d))])
        ra0 = float(np.degrees(np.arctan2(v[1], v[0])) % 360.0)
        dec0 = float(np.degrees(np.arcsin(v[2] / np.linalg.norm(v))))
        x = ((ra[m] - ra0 + 180.0) % 360.0 - 180.0) * np.cos(np.radians(dec[m]))
        fields.append(Field(ra0, dec0, float(np.ptp(x) + size), float(np.ptp(dec[m]) + size), int(w.sum())))
    return sorted(fields, key=lambda f: -f.rows), fraction


def partition_rows(catalog: HealpixDataset, sky: Sky) -> dict:
    """Rows of each partition (``{pixel: rows}``) from the skymap; empty if a partition is finer."""
    order, pixels, counts = sky.order, sky.pixels, sky.counts
    cum = np.concatenate([[0], np.cumsum(counts)])
    out = {}
    for p in catalog.get_healpix_pixels():
        if p.order > order:
            return {}
        shift = 2 * (order - p.order)
        lo, hi = np.searchsorted(pixels, [p.pixel << shift, (p.pixel + 1) << shift])
        out[p] = int(cum[hi] - cum[lo])
    return out


def _sky_cells(ax, ipix: np.ndarray, depth: np.ndarray, values: np.ndarray, cmap, norm) -> PolyCollection:
    """HEALPix cells as polygons on matplotlib's own Mollweide axes (RA increasing to the left;
    cells across the RA = 180 deg edge drawn on both sides, clipped by the ellipse)."""
    polys, vals = [], []
    for d in np.unique(depth):
        m = depth == d
        step = 2 ** max(0, 4 - int(d))  # big cells get points along their edges
        lon, lat = vertices(ipix[m].astype(np.uint64), int(d), step=step)
        clon, _ = healpix_to_lonlat(ipix[m].astype(np.uint64), int(d))
        c = np.asarray(clon.deg)[:, None]
        x = -((c + 180.0) % 360.0 - 180.0) - ((np.asarray(lon.deg) - c + 180.0) % 360.0 - 180.0)
        xy = np.radians(np.stack([x, np.asarray(lat.deg)], axis=-1))
        v = values[m]
        for shift in (0.0, -2 * np.pi, 2 * np.pi):
            moved = xy + np.array([shift, 0.0])
            keep = (moved[..., 0].min(axis=1) < np.pi) & (moved[..., 0].max(axis=1) > -np.pi)
            polys.extend(moved[keep])
            vals.extend(v[keep])
    if polys:  # projected once, all vertices together (not path by path at every draw)
        flat = np.concatenate(polys)
        sizes = np.cumsum([len(q) for q in polys])[:-1]
        polys = np.split(ax.transProjection.transform(flat), sizes)
    cells = PolyCollection(polys, array=np.asarray(vals), cmap=cmap, norm=norm, edgecolors="face",
                           linewidths=0.2, transform=ax.transAffine + ax.transAxes)
    ax.add_collection(cells, autolim=False)
    ticks = np.radians(np.arange(-150, 151, 30))
    ax.set_xticks(ticks, [f"{int(round(-np.degrees(t))) % 360}°" for t in ticks], fontsize=7)
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(True, lw=0.3, alpha=0.6)
    ax.set_xlabel("RA", fontsize=8)
    ax.set_ylabel("Dec", fontsize=8)
    return cells


def _sky_figure(ipix: np.ndarray, depth: np.ndarray, values: np.ndarray, norm, cmap: str, title: str,
                label: str) -> bytes:
    fig = Figure(figsize=(9, 5.2))
    ax = fig.add_axes((0.05, 0.2, 0.9, 0.72), projection="mollweide")
    cells = _sky_cells(ax, ipix, depth, values, matplotlib.colormaps[cmap], norm)
    cax = fig.add_axes((0.25, 0.12, 0.5, 0.03))
    fig.colorbar(cells, cax=cax, orientation="horizontal", label=label)
    ax.set_title(title, fontsize=10, pad=14)
    return _png(fig, tight=False)


def plot_orders(catalog: HealpixDataset, sky: Sky, name: str) -> bytes:
    """Every partition on the sky, coloured by its rows; the title counts partitions per order."""
    parts = partition_rows(catalog, sky)
    pixels = catalog.get_healpix_pixels()
    orders = Counter(p.order for p in pixels)
    counted = ", ".join(f"order {k}: {orders[k]}" for k in sorted(orders))
    ipix = np.array([p.pixel for p in pixels])
    depth = np.array([p.order for p in pixels])
    title = f"{name}: {len(pixels)} partitions ({counted})"
    if parts:
        values = np.array([max(parts[p], 1) for p in pixels], float)
        top = values.max()
        norm = LogNorm(values.min(), top) if top > values.min() else Normalize(0, top)
        return _sky_figure(ipix, depth, values, norm, "plasma", title, "rows in the partition")
    values = depth.astype(float)
    return _sky_figure(ipix, depth, values, Normalize(min(orders) - 0.5, max(orders) + 0.5), "plasma", title,
                       "HEALPix order")


def plot_coverage(sky: Sky, name: str) -> bytes:
    """All-sky point density (order :data:`COVERAGE_ORDER`): only the cells holding rows are drawn."""
    counts = sky.coarse
    pixels = np.flatnonzero(counts)
    area = 4 * np.pi * (180 / np.pi) ** 2 / len(counts)  # deg² per cell
    values = counts[pixels] / area
    norm = LogNorm(values.min(), values.max()) if len(values) and values.max() > values.min() else None
    return _sky_figure(pixels, np.full(len(pixels), COVERAGE_ORDER), values, norm, "viridis",
                       f"{name}: sky coverage (order {COVERAGE_ORDER} cells)", "sources / deg²")


def plot_fields(sky: Sky, name: str, fields: list[Field]) -> bytes:
    """Zoomed footprints of the largest fields, side by side in one mosaic (each scaled to its
    tile, its extent written under it): point density of the finest skymap's cells."""
    order, pixels, counts = sky.order, sky.pixels, sky.counts
    lon, lat = healpix_to_lonlat(pixels.astype(np.uint64), order)
    ra, dec = np.asarray(lon.deg), np.asarray(lat.deg)
    cell = 4 * np.pi * (180 * 60 / np.pi) ** 2 / (12 * 4**order)  # arcmin² per cell
    size = np.sqrt(cell) / 60  # deg
    shown = fields[:FIELD_PANELS]
    ncol = min(len(shown), 4)
    nrow = -(-len(shown) // ncol)
    fig = Figure(figsize=(2.6 * ncol + 1.4, 3.2 * nrow + 0.7))
    ax = fig.add_axes((0.02, 0.02, 0.84, 0.9))
    polys, vals = [], []
    for i, f in enumerate(shown):
        cx, cy = i % ncol + 0.5, -1.25 * (i // ncol) - 0.65
        half = max(0.5 * max(f.width_deg, f.height_deg) * 1.15, 4 * size, 0.1)
        dx = ((ra - f.ra + 180.0) % 360.0 - 180.0) * np.cos(np.radians(f.dec))
        m = (np.abs(dx) < half + 1) & (np.abs(dec - f.dec) < half + 1)
        vlon, vlat = vertices(pixels[m].astype(np.uint64), order)
        vlat = np.asarray(vlat.deg)
        vx = ((np.asarray(vlon.deg) - f.ra + 180.0) % 360.0 - 180.0) * np.cos(np.radians(vlat))
        scale = 0.4 / half  # the tile is 1 x 1 with a 0.1 border; east to the left
        tile = np.stack([-vx * scale, (vlat - f.dec) * scale], axis=-1)
        inside = np.abs(tile).max(axis=(1, 2)) <= 0.45  # near a pole the flat view does not hold
        polys.extend(tile[inside] + np.array([cx, cy]))
        vals.extend(counts[m][inside] / cell)
        ax.add_patch(Rectangle((cx - 0.45, cy - 0.45), 0.9, 0.9, fill=False, lw=0.6, ec="#888"))
        ax.text(cx, cy + 0.47, f"#{i + 1}  RA {f.ra:.2f}  Dec {f.dec:+.2f}", ha="center", va="bottom",
                fontsize=8)
        ax.text(cx, cy - 0.47, f"{f.rows:,} rows; box {2 * half * 60:.0f}' wide", ha="center", va="top",
                fontsize=7, color="#444")
    vals_a = np.asarray(vals)
    norm = LogNorm(vals_a.min(), vals_a.max()) if len(vals_a) and vals_a.max() > vals_a.min() else None
    cells = PolyCollection(polys, array=vals_a, cmap="viridis", norm=norm, edgecolors="face", linewidths=0.3)
    ax.add_collection(cells, autolim=False)
    ax.set_xlim(0, ncol)
    ax.set_ylim(-1.25 * nrow, 0.05)
    ax.set_aspect("equal")
    ax.set_axis_off()
    ax.set_anchor("N")
    fig.colorbar(cells, cax=fig.add_axes((0.89, 0.25, 0.02, 0.5)), label="sources / arcmin²")
    more = f" (the {len(shown)} largest of {len(fields)})" if len(fields) > len(shown) else ""
    fig.suptitle(f"{name}: footprints of its fields{more}, north up, east left", fontsize=10)
    return _png(fig, tight=False)


def light_curve_example(catalog: HealpixDataset, sky: Sky) -> npd.NestedFrame | None:
    """One merged source of a light-curve collection to show: the least constant one of its
    smallest partition with at least 3 epochs (else the one with most epochs)."""
    parts = partition_rows(catalog, sky)
    pixels = sorted(catalog.get_healpix_pixels(), key=lambda p: parts.get(p, 0) or 2**62)
    for p in pixels:
        path = pixel_catalog_file(catalog.catalog_base_dir, p)
        stats = pq.read_table(path, columns=["n_epochs", "var_log10_p"]).to_pandas()
        if not len(stats):
            continue
        many = stats[stats["n_epochs"] >= 3]
        i = int(many["var_log10_p"].idxmin()) if len(many) and many["var_log10_p"].notna().any() \
            else int(stats["n_epochs"].idxmax())
        return npd.read_parquet(path).iloc[[i]]
    return None


def plot_collection(lake: str, entry: dict, storage_options: dict,
                    sky: Sky | None = None) -> dict[str, bytes]:
    """The PNGs of one collection: coverage, orders, fields (where small) and a light curve."""
    catalog = _catalog(lake, entry, storage_options)
    sky = sky or read_sky(catalog)
    name = entry["name"]
    out = {"orders": plot_orders(catalog, sky, name), "coverage": plot_coverage(sky, name)}
    fields, _ = footprint(sky)
    if fields:
        out["fields"] = plot_fields(sky, name, fields)
    if entry["type"] == "lightcurves" and (row := light_curve_example(catalog, sky)) is not None:
        out["lightcurve"] = _png(plot_light_curve(row))
    plt.close("all")
    return out


def plot_rows(rows: list[dict]) -> bytes:
    """Horizontal bars: rows written and quarantined per table (log scale)."""

    fig = Figure(figsize=(8, 0.28 * len(rows) + 1.2))
    ax = fig.subplots()
    names = [r["table"] for r in rows][::-1]
    ax.barh(names, [max(r["rows_written"], 1) for r in rows][::-1], color="tab:blue", label="written")
    ax.barh(names, [max(r["rows_quarantined"], 0) for r in rows][::-1], color="tab:red", label="quarantined")
    ax.set_xscale("log")
    ax.set_xlabel("rows")
    ax.legend(loc="lower right")
    ax.set_title("Rows per table")
    return _png(fig)


def format_text(rows: list[dict], manifest: dict) -> str:
    """The fixed-width text report."""
    head = (f"{'table':<18} {'family':<13} {'type':<10} {'lines read':>12} {'written':>12} {'quarant.':>9} "
            f"{'parts':>6} {'margin':>9} {'MiB':>9} {'sec':>7}  orders / indexes")
    lines = [f"tmass-lake build report  {datetime.now(UTC).isoformat(timespec='seconds')}", "", head,
             "-" * len(head)]
    for r in rows:
        orders = " ".join(f"{k}:{v}" for k, v in r["orders"].items())
        extra = "; ".join(x for x in (f"orders {orders}" if orders else "",
                                      f"indexes {', '.join(r['indexes'])}" if r["indexes"] else "") if x)
        lines.append(f"{r['table']:<18} {r['family']:<13} {r['type']:<10} {r['lines_read']:>12,} "
                     f"{r['rows_written']:>12,} {r['rows_quarantined']:>9,} {r['partitions']:>6} "
                     f"{r['margin_rows']:>9,} {r['bytes'] / 2**20:>9.1f} {r['seconds']:>7.1f}  {extra}")
    t = manifest["totals"]
    lines += ["", f"{t['tables']} tables ({t['collections']} collections, {t['parquet_tables']} Parquet), "
                  f"{t['rows']:,} rows from inputs, {t['rows_quarantined']:,} quarantined, "
                  f"{t['bytes'] / 2**20:.1f} MiB of data"]
    for name, why in sorted(manifest.get("skipped", {}).items()):
        lines.append(f"skipped {name}: {why}")
    tools = ", ".join(f"{k} {v}" for k, v in manifest["tools"].items())
    lines += [f"tools: {tools}", ""]
    return "\n".join(lines)


PLOT_LOCK = threading.Lock()
"""pyplot's state is global: plots made on the threads of an in-process cluster take turns."""


def _plot_task(lake: str, entry: dict, storage_options: dict) -> tuple[dict[str, bytes], Sky | None]:
    """:func:`plot_collection` in a worker (which may switch to the Agg backend freely); with the
    skymap it read, for the card (sparse: small to send back)."""
    try:
        with PLOT_LOCK:
            matplotlib.use("Agg")
            sky = read_sky(_catalog(lake, entry, storage_options))
            return plot_collection(lake, entry, storage_options, sky), sky
    except Exception as err:  # a plot must not fail the build
        log.warning("could not plot %s: %s", entry["name"], err)
        return {}, None


def _plots(lake: str, entries: list[dict], storage_options: dict, client: Client | None,
           progress: bool = False) -> dict[str, tuple[dict[str, bytes], Sky | None]]:
    if client is not None:
        out = run_tasks(client, lambda e: _plot_task(lake, e, storage_options), entries, "report plots",
                        progress)
        return {e["name"]: o for e, o in zip(entries, out, strict=True)}
    previous = matplotlib.get_backend()
    matplotlib.use("Agg")
    try:
        return {e["name"]: _plot_task(lake, e, storage_options) for e in entries}
    finally:
        with contextlib.suppress(ImportError, ValueError):
            matplotlib.use(previous)


def _schema_path(lake: str, entry: dict) -> str:
    if entry["type"] in HATS_TYPES:
        return join(lake, entry["path"], entry["catalog"], "dataset", "_common_metadata")
    return join(lake, entry["path"], entry.get("dataset", "dataset"), "_common_metadata")


def _meta(md: dict | None, key: str) -> str:
    return (md or {}).get(key.encode(), b"").decode()


def column_cards(lake: str, entry: dict, storage_options: dict) -> list[ColumnCard]:
    """Every column of the table as stored (``_common_metadata``: type, unit, UCD, description,
    provenance) with how the inputs' headers met it (the manifest's drift record)."""
    fs, path = filesystem(_schema_path(lake, entry), storage_options)
    try:
        schema = pq.read_schema(path, filesystem=fs)
    except (OSError, ValueError) as err:
        log.warning("no schema for %s: %s", entry["name"], err)
        return []
    drift = entry.get("columns") or {}
    aliases = drift.get("aliases") or {}
    missing = {c["name"]: c["files"] for c in drift.get("missing") or ()}
    input_only = {c["name"] for c in drift.get("input_only") or ()}
    out = []
    for f in schema:
        if f.name.startswith("_healpix"):
            continue
        md = f.metadata
        note = (f"input header {aliases[f.name]}" if f.name in aliases else
                f"missing in {missing[f.name]} input file(s): null" if f.name in missing else
                "only in the inputs" if f.name in input_only else "")
        out.append(ColumnCard(f.name, str(f.type), _meta(md, "unit"), _meta(md, "ucd"),
                              _meta(md, "description"), _meta(md, "provenance"), _meta(md, "source"), note))
    return out


def open_code(lake: str, entry: dict, fields: list[Field]) -> str:
    """Copyable Python that opens the table: plain lsdb (or pandas), then tmass-lake's API."""
    name = entry["name"]
    url = join(lake, entry["path"])
    if entry["type"] not in HATS_TYPES:
        return (f"import pandas as pd\nfrom tmass_lake import open_lake\n\n"
                f"df = pd.read_parquet({join(url, entry.get('dataset', 'dataset'))!r})\n"
                f"links = open_lake({lake!r})[{name!r}]   # a Dask DataFrame\n")
    code = (f"import lsdb\nfrom tmass_lake import open_lake\n\n"
            f"cat = lsdb.open_catalog({url!r})   # catalog, margin and indexes\n")
    if fields:
        f = fields[0]
        code += f"cat.cone_search(ra={f.ra:.4f}, dec={f.dec:.4f}, radius_arcsec=600).compute()   # field #1\n"
    else:
        code += "cat.head()\n"
    return code + f"cat = open_lake({lake!r}).open({name!r}, columns=['ra', 'dec'])\n"


def _layout_source(entry: dict, schema_meta: dict) -> str:
    """Where the layout came from: what the build recorded (schema file, input headers, a service's
    TAP_SCHEMA), else the schema's note."""
    recorded = "; ".join((entry.get("columns") or {}).get("layout") or [])
    return (recorded or schema_meta.get("layout_note")
            or (f"schema file {entry['schema']['file']}" if entry["schema"].get("file") else ""))


def table_card(lake: str, entry: dict, row: dict, names: set[str], storage_options: dict,
               sky: Sky | None = None) -> TableCard:
    """The card of one table from its manifest entry, report row, stored schema and skymap
    (``sky``, when the plots already read it)."""
    fields: list[Field] = []
    fraction = None
    parts: dict = {}
    max_rows = None
    if entry["type"] in HATS_TYPES:
        try:
            catalog = _catalog(lake, entry, storage_options)
            sky = sky or read_sky(catalog)
            fields, fraction = footprint(sky)
            parts = partition_rows(catalog, sky)
            max_rows = catalog.catalog_info.hats_max_rows
        except (OSError, ValueError, KeyError) as err:
            log.warning("no footprint for %s: %s", entry["name"], err)
    fs, path = filesystem(_schema_path(lake, entry), storage_options)
    try:
        stored = pq.read_schema(path, filesystem=fs).metadata or {}
        meta = {k.decode(): v.decode() for k, v in stored.items() if not k.startswith(b"IVOA")}
    except (OSError, ValueError):
        meta = {}
    name = entry["name"]
    captions = {"fields": "zoomed footprints of the fields holding rows (cells of the finest skymap)",
                "coverage": "all-sky point density",
                "orders": "partitions on the sky, coloured by their rows",
                "lightcurve": "one merged source's light curve (the least constant of a small partition)"}
    plots = [Plot(f"{name}_{k}.png", f"{name}: {captions[k]}") for k in PLOT_KINDS
             if f"{name}_{k}.png" in names]
    counts = sorted(parts.values())
    return TableCard(
        name=name, family=entry["family"], type=entry["type"], title=entry["schema"].get("title") or "",
        rows=entry["rows"], rows_quarantined=entry["rows_quarantined"], partitions=entry["partitions"],
        bytes=row.get("disk_bytes") or entry["bytes"],
        layout_status=entry["schema"].get("layout_status") or "",
        layout_source=_layout_source(entry, meta), status=entry.get("status", ""),
        open_code=open_code(lake, entry, fields), columns=column_cards(lake, entry, storage_options),
        drift=format_drift(entry.get("columns")) or "", orders=row.get("orders") or {},
        partition_rows=(counts[0], counts[len(counts) // 2], counts[-1]) if counts else None,
        max_rows=max_rows,
        fields=fields, sky_fraction=fraction, plots=plots,
        derived_from=(entry.get("derived_from") or {}).get("table", ""),
        indexes=sorted(entry.get("indexes") or {}))


def headline_plots(cards: list[TableCard], names: set[str]) -> list[Plot]:
    """The plots worth a first look: rows per table, then per family its detections' coverage
    (fields zoomed where small), one light curve and the partitions of the largest table."""
    out = [Plot("rows.png", "rows written and quarantined per table")] if "rows.png" in names else []
    by_family: dict[str, list[TableCard]] = {}
    for c in sorted(cards, key=lambda c: -c.rows):
        by_family.setdefault(c.family, []).append(c)
    for family, group in sorted(by_family.items()):
        big = next((c for c in group if c.type != "parquet"), None)
        if big is not None:
            kind = "fields" if f"{big.name}_fields.png" in names else "coverage"
            out.append(Plot(f"{big.name}_{kind}.png", f"{family}: where {big.name}'s {big.rows:,} rows are"))
        lc = next((c for c in group if c.type == "lightcurves" and f"{c.name}_lightcurve.png" in names), None)
        if lc is not None:
            out.append(Plot(f"{lc.name}_lightcurve.png", f"{family}: a light curve from {lc.name}"))
    largest = next((c for c in sorted(cards, key=lambda c: -c.rows) if f"{c.name}_orders.png" in names), None)
    if largest is not None:
        out.append(Plot(f"{largest.name}_orders.png",
                        f"partitions of the largest collection, {largest.name}"))
    return [p for p in out if p.file in names]


def write_card(lake: str, manifest: dict, rows: list[dict], names: set[str], storage_options: dict,
               skies: dict[str, Sky] | None = None) -> LakeCard:
    """``index.html``, ``card.css`` and ``tables/<table>.html`` under ``LAKE/report/``."""
    fs, root = filesystem(join(lake, REPORT_DIR), storage_options)
    by_name = {r["table"]: r for r in rows}
    cards = [table_card(lake, manifest["tables"][r["table"]], by_name[r["table"]], names, storage_options,
                        (skies or {}).get(r["table"])) for r in rows]
    card = LakeCard(lake=lake, updated=manifest.get("updated", ""), tables=cards, totals=manifest["totals"],
                    skipped=manifest.get("skipped", {}), tools=manifest["tools"],
                    plots=headline_plots(cards, names))
    ensure_dir(fs, join(root, TABLE_DIR))
    for c in cards:
        write_text(fs, join(root, TABLE_DIR, f"{c.name}.html"), table_page(c))
    write_text(fs, join(root, CSS_FILE), CSS)
    write_text(fs, join(root, INDEX), index_page(card))
    return card


def write_lake_report(lake: str, manifest: dict, storage_options: dict | None = None, plots: bool = True,
                      client: Client | None = None, replot: set[str] | None = None,
                      echo: Callable[[str], None] | None = None) -> dict:
    """Write ``LAKE/report/`` (the lake card included); returns the JSON report.

    Collections are plotted (on ``client``'s workers when given) if named in ``replot`` or if
    their PNGs are missing; ``replot=None`` plots them all. ``echo`` (when given) hears what is
    being plotted and how long it took, and a bar follows the plots.
    """
    started = time.perf_counter()
    so = storage_options or {}
    fs, root = filesystem(join(lake, REPORT_DIR), so)
    ensure_dir(fs, root)
    rows = table_rows(lake, manifest, so)
    pngs: dict[str, bytes] = {}
    names: list[str] = []
    skies: dict[str, Sky] = {}
    if plots:
        todo = []
        for name, e in sorted(manifest["tables"].items()):
            if e["type"] not in HATS_TYPES:
                continue
            files = [f"{name}_{kind}.png" for kind in ("coverage", "orders")]
            names += [f"{name}_{kind}.png" for kind in PLOT_KINDS]
            if replot is None or name in replot or not all(fs.exists(join(root, f)) for f in files):
                todo.append(e)
        if echo is not None and todo:
            echo(f"report: plotting coverage and orders of {len(todo)} collection(s) ...")
        for name, (out, sky) in _plots(lake, todo, so, client, progress=echo is not None).items():
            if sky is not None:
                skies[name] = sky
            for kind in PLOT_KINDS:  # a replotted table's old PNGs of a kind it no longer has go
                if kind not in out and fs.exists(join(root, f"{name}_{kind}.png")):
                    fs.rm(join(root, f"{name}_{kind}.png"))
            pngs |= {f"{name}_{kind}.png": data for kind, data in out.items()}
        if rows:
            pngs["rows.png"] = plot_rows(rows)
            names.append("rows.png")
    for fname, data in pngs.items():
        def put(fname: str = fname, data: bytes = data) -> None:
            with fs.open(join(root, fname), "wb") as f:
                f.write(data)

        retrying(put, what=f"writing {fname}")
    present = sorted(n for n in names if fs.exists(join(root, n)))
    card = write_card(lake, manifest, rows, set(present), so, skies)
    report = {"generated": datetime.now(UTC).isoformat(timespec="seconds"), "tables": rows,
              "totals": manifest["totals"], "skipped": manifest.get("skipped", {}),
              "tools": manifest["tools"], "plots": present, "card": INDEX,
              "headline_plots": [p.file for p in card.plots]}
    write_text(fs, join(root, "report.json"), json.dumps(report, indent=1))
    write_text(fs, join(root, "report.txt"), format_text(rows, manifest))
    if echo is not None:
        echo(f"report: {len(report['plots'])} plot(s), report.txt and report.json -> {url_of(fs, root)} "
             f"({time.perf_counter() - started:.1f} s)")
    return report


def _summary_task(lake: str, entry: dict, storage_options: dict) -> None:
    """hats' summaries of one collection, in a worker (pyplot's state taking turns, as the plots)."""
    with PLOT_LOCK:
        matplotlib.use("Agg")
        write_catalog_summaries(join(lake, entry["path"]), storage_options)


def write_lake_summaries(lake: str, manifest: dict, client: Client, storage_options: dict | None = None,
                         echo: Callable[[str], None] | None = None) -> int:
    """hats' catalog summaries (``README.md``, ``index.html``) of every collection of the lake, its
    margins and indexes, drawn on ``client``'s workers; returns how many collections."""
    started = time.perf_counter()
    entries = [e for e in manifest["tables"].values() if e["type"] in HATS_TYPES]
    if echo is not None and entries:
        echo(f"catalog summaries: {len(entries)} collection(s) ...")
    run_tasks(client, lambda e: _summary_task(lake, e, storage_options or {}), entries, "catalog summaries",
              echo is not None)
    if echo is not None and entries:
        echo(f"catalog summaries written ({time.perf_counter() - started:.1f} s)")
    return len(entries)
