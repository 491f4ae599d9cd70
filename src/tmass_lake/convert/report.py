"""The lake build report: a text and JSON summary per table, and sky coverage / partition-order PNGs.

Written to ``LAKE/report/``: ``report.txt``, ``report.json``, ``<table>_coverage.png`` (point
density from the catalog's skymap) and ``<table>_orders.png`` (HEALPix order of each partition)
for every collection, and ``rows.png`` (rows per table).
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
from datetime import UTC, datetime

import hats
import matplotlib
import numpy as np
from dask.distributed import Client
from hats.inspection import plot_pixels
from hats.inspection.visualize_catalog import plot_healpix_map
from hats.io.skymap import read_skymap
from matplotlib import pyplot as plt
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from tmass_lake.convert.manifest import HATS_TYPES
from tmass_lake.convert.tasks import run_tasks
from tmass_lake.convert.writer import upath
from tmass_lake.storage import ensure_dir, filesystem, join, retrying, url_of, write_text

log = logging.getLogger(__name__)

REPORT_DIR = "report"
COVERAGE_ORDER = 6


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


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return buf.getvalue()


def plot_collection(lake: str, entry: dict, storage_options: dict) -> dict[str, bytes]:
    """Coverage and partition-order PNGs of one collection."""

    catalog = hats.read_hats(upath(join(lake, entry["path"], entry["catalog"]), storage_options))
    out = {}
    plt.close("all")
    fig, _ = plot_pixels(catalog, plot_title=f"{entry['name']}: partitions by HEALPix order")
    out["orders"] = _png(fig)
    plt.close("all")
    # Only the pixels holding rows are drawn (the whole sky at order 6 is 49,152 polygons)
    counts = read_skymap(catalog, COVERAGE_ORDER)
    pixels = np.flatnonzero(counts)
    area = 4 * np.pi * (180 / np.pi) ** 2 / len(counts)  # deg² per pixel
    cmap = matplotlib.colormaps["viridis"].copy()
    fig, _ = plot_healpix_map(counts[pixels] / area, ipix=pixels, depth=np.full(len(pixels), COVERAGE_ORDER),
                              norm=LogNorm(), cmap=cmap,
                              title=f"{entry['name']}: sky coverage (sources / deg², order {COVERAGE_ORDER})")
    out["coverage"] = _png(fig)
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


def _plot_task(lake: str, entry: dict, storage_options: dict) -> dict[str, bytes]:
    """:func:`plot_collection` in a worker (which may switch to the Agg backend freely)."""
    try:
        with PLOT_LOCK:
            matplotlib.use("Agg")
            return plot_collection(lake, entry, storage_options)
    except Exception as err:  # a plot must not fail the build
        log.warning("could not plot %s: %s", entry["name"], err)
        return {}


def _plots(lake: str, entries: list[dict], storage_options: dict, client: Client | None,
           progress: bool = False) -> dict[str, dict]:
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


def write_lake_report(lake: str, manifest: dict, storage_options: dict | None = None, plots: bool = True,
                      client: Client | None = None, replot: set[str] | None = None,
                      echo: Callable[[str], None] | None = None) -> dict:
    """Write ``LAKE/report/``; returns the JSON report.

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
    if plots:
        todo = []
        for name, e in sorted(manifest["tables"].items()):
            if e["type"] not in HATS_TYPES:
                continue
            files = [f"{name}_{kind}.png" for kind in ("coverage", "orders")]
            names += files
            if replot is None or name in replot or not all(fs.exists(join(root, f)) for f in files):
                todo.append(e)
        if echo is not None and todo:
            echo(f"report: plotting coverage and orders of {len(todo)} collection(s) ...")
        for name, out in _plots(lake, todo, so, client, progress=echo is not None).items():
            pngs |= {f"{name}_{kind}.png": data for kind, data in out.items()}
        if rows:
            pngs["rows.png"] = plot_rows(rows)
            names.append("rows.png")
    for fname, data in pngs.items():
        def put(fname: str = fname, data: bytes = data) -> None:
            with fs.open(join(root, fname), "wb") as f:
                f.write(data)

        retrying(put, what=f"writing {fname}")
    report = {"generated": datetime.now(UTC).isoformat(timespec="seconds"), "tables": rows,
              "totals": manifest["totals"], "skipped": manifest.get("skipped", {}),
              "tools": manifest["tools"], "plots": sorted(n for n in names if fs.exists(join(root, n)))}
    write_text(fs, join(root, "report.json"), json.dumps(report, indent=1))
    write_text(fs, join(root, "report.txt"), format_text(rows, manifest))
    if echo is not None:
        echo(f"report: {len(report['plots'])} plot(s), report.txt and report.json -> {url_of(fs, root)} "
             f"({time.perf_counter() - started:.1f} s)")
    return report
