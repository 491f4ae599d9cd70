"""``tmass-lake crossmatch`` and ``tmass-lake lightcurves``: the lake API from the command line."""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from typing import Any

import dask
import lsdb
import nested_pandas as npd
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from upath import UPath

from tmass_lake.cli.export_metadata import (
    Source,
    crossmatch_sources,
    describe_hats,
    described_table,
    table_sources,
)
from tmass_lake.cli.options import add_cluster, add_storage_option, cluster, storage_options
from tmass_lake.convert.writer import common_schema
from tmass_lake.lake import MarginWarning, open_lake, plot_light_curve
from tmass_lake.lake.lightcurves import product_tables
from tmass_lake.storage import filesystem, join, write_parquet


def _output_args(p: argparse.ArgumentParser) -> None:
    add_cluster(p)
    add_storage_option(p)
    p.add_argument("--format", choices=["hats", "parquet"], default=None,
                   help="output format (default: parquet for a .parquet OUTPUT or lightcurves, else hats)")


def write_output(catalog: lsdb.Catalog, output: str, fmt: str, storage_options: dict,
                 name: str, sources: list[Source] | None = None) -> int:
    """Write a catalogue as a HATS catalogue, one Parquet file, or a directory of Parquet parts,
    each column described from ``sources`` (:mod:`tmass_lake.cli.export_metadata`)."""
    sources = sources or []
    if fmt == "hats":
        catalog.write_catalog(UPath(output, **storage_options), catalog_name=name, overwrite=True,
                              progress_bar=False)
        describe_hats(UPath(output, **storage_options) / name if (
            UPath(output, **storage_options) / name / "hats.properties").exists()
            else UPath(output, **storage_options), sources, name=name)
        written = lsdb.open_catalog(UPath(output, **storage_options))
        return int(written.hc_structure.catalog_info.total_rows or 0)
    fs, root = filesystem(output, storage_options)

    def part(df: npd.NestedFrame, path: str) -> int:
        if len(df) == 0:
            return 0
        write_parquet(described_table(npd.NestedFrame(df).to_pyarrow(), sources, name=name), fs, path)
        return len(df)

    if output.endswith(".parquet"):
        df = catalog.compute(progress_bar=False)
        table = described_table(npd.NestedFrame(df).to_pyarrow(), sources, name=name)
        fs.makedirs(fs._parent(root), exist_ok=True)
        with fs.open(root, "wb") as f:
            pq.write_table(table, f, compression="zstd")
        return len(df)
    fs.makedirs(root, exist_ok=True)
    parts = catalog.to_delayed()
    tasks = [dask.delayed(part)(p, join(root, f"part-{i:05d}.parquet")) for i, p in enumerate(parts)]
    return int(sum(dask.compute(*tasks)))


def cmd_crossmatch(ns: argparse.Namespace) -> int:
    so = storage_options(ns.storage_option)
    lake = open_lake(ns.lake, **so)
    fmt = ns.format or ("parquet" if ns.output.endswith(".parquet") else "hats")
    started = time.time()
    with cluster(ns):
        right = lake.open_reference(ns.with_, storage_options=so or None)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", MarginWarning)
            result = lake.crossmatch(ns.table, right, radius_arcsec=ns.radius, epoch_aware=not ns.plain,
                                     columns=ns.columns, n_neighbors=ns.n_neighbors, how=ns.how,
                                     max_pm_mas_yr=ns.max_pm,
                                     reference=ns.with_ if "/" not in ns.with_ else None)
        for w in caught:
            if issubclass(w.category, MarginWarning):
                print(f"tmass-lake: warning: {w.message}", file=sys.stderr)
        sources = crossmatch_sources(list(result.columns), common_schema(lake.main_catalog_url(ns.table), so),
                                     common_schema(str(right.hc_structure.catalog_base_dir), so))
        rows = write_output(result, ns.output, fmt, so, f"{ns.table}_x_{right.name}", sources)
    kind = "positional" if ns.plain else "epoch-aware"
    print(f"{ns.table} x {right.name}: {rows:,} {kind} matches within {ns.radius:g}\" "
          f"({time.time() - started:.1f} s) -> {ns.output}")
    return 0


def cmd_lightcurves(ns: argparse.Namespace) -> int:
    so = storage_options(ns.storage_option)
    lake = open_lake(ns.lake, **so)
    fmt = ns.format or "parquet"
    search = None
    if ns.cone:
        search = lsdb.ConeSearch(ra=ns.cone[0], dec=ns.cone[1], radius_arcsec=ns.cone[2])
    started = time.time()
    with cluster(ns):
        cat = lake.light_curves(ns.product, kind=ns.kind, links=ns.links, complete=not ns.no_repair,
                                search_filter=search, stored=False if ns.join else None)
        tables = product_tables(ns.product, ns.kind)
        stored = [Source(common_schema(lake.main_catalog_url(tables.collection), so))] \
            if tables.collection in lake.tables else []
        sources = [*stored, *table_sources(tables.info, tables.detections)]
        rows = write_output(cat, ns.output, fmt, so, f"{ns.product}_lightcurves", sources)
    stored = product_tables(ns.product, ns.kind).collection
    how = f"read from {stored}" if cat.name == stored else "joined on the fly"
    print(f"{ns.product}: {rows:,} merged sources with nested detections, {how} "
          f"({time.time() - started:.1f} s) -> {ns.output}")
    if ns.plot is not None:
        png = ns.plot_file or _default_png(ns.output, ns.plot)
        plot_from_output(ns.output, ns.plot, png, so)
        print(f"light curve of gcntr {ns.plot} -> {png}")
    return 0


def _default_png(output: str, gcntr: int) -> str:
    """Next to the output (inside a Parquet directory it would break readers of the directory)."""
    base = output.rstrip("/")
    base = base[: -len(".parquet")] if base.endswith(".parquet") else base
    return f"{base}_lightcurve_{gcntr}.png"


def read_source(output: str, gcntr: int, storage_options: dict | None = None) -> Any:
    """One merged source (a NestedFrame row) from written light curves (Parquet or HATS)."""
    fs, root = filesystem(output, storage_options)
    if fs.isdir(root):
        files = [p for p in fs.glob(join(root, "**/*.parquet"))
                 if "/_" not in p[len(root):] and not p.rsplit("/", 1)[-1].startswith("_")]
    else:
        files = [root]
    ds = pads.dataset(files, filesystem=fs, format="parquet")
    table = ds.to_table(filter=pc.field("gcntr") == int(gcntr))
    if table.num_rows == 0:
        raise KeyError(f"gcntr {gcntr} is not in {output}")
    return npd.from_pyarrow(table).iloc[0]


def plot_from_output(output: str, gcntr: int, png: str, storage_options: dict | None = None) -> None:
    row = read_source(output, gcntr, storage_options)
    fig = plot_light_curve(row)
    fs, path = filesystem(png, storage_options)
    with fs.open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``crossmatch`` and ``lightcurves`` subcommands."""
    x = sub.add_parser("crossmatch", help="epoch-aware crossmatch of a lake table with Gaia DR3/AllWISE")
    x.add_argument("--lake", required=True, help="lake root URL")
    x.add_argument("--table", required=True, help="lake table, e.g. pt_src_6x2 or pt_src_6x2_cat")
    x.add_argument("--with", dest="with_", required=True, metavar="gaia_dr3|allwise|URL",
                   help="reference catalogue: a name (lake copy, else the public LSDB copy) or URL")
    x.add_argument("--radius", type=float, default=1.0, help="match radius, arcsec (default 1)")
    x.add_argument("--output", required=True, help="HATS catalogue directory, .parquet file, or "
                   "Parquet directory (--format parquet)")
    x.add_argument("--plain", action="store_true", help="positional match only (lsdb's default)")
    x.add_argument("--columns", nargs="+", help="2MASS columns to keep (default: all)")
    x.add_argument("--n-neighbors", type=int, default=1)
    x.add_argument("--how", choices=["inner", "left"], default="inner")
    x.add_argument("--max-pm", type=float, default=None,
                   help="fastest motion (mas/yr) to allow for (default: the reference's statistics); "
                        "stars faster than the margin covers are gathered before the match")
    _output_args(x)
    x.set_defaults(func=cmd_crossmatch)

    lc = sub.add_parser("lightcurves", help="merged sources with their detections nested, plus statistics")
    lc.add_argument("--lake", required=True, help="lake root URL")
    lc.add_argument("--product", default="calibration",
                    help="survey, 6x, calibration or calibration_sc (default calibration)")
    lc.add_argument("--kind", choices=["point", "extended"], default="point")
    lc.add_argument("--output", required=True, help="Parquet directory or .parquet file (or HATS)")
    lc.add_argument("--links", choices=["auto", "table", "detections"], default="auto",
                    help="membership from the link table or the detections' gcntr (default: table if stored)")
    lc.add_argument("--cone", nargs=3, type=float, metavar=("RA", "DEC", "ARCSEC"),
                    help="only merged sources in this cone")
    lc.add_argument("--no-repair", action="store_true",
                    help="skip the planning pass that restores groups spread beyond the margins")
    lc.add_argument("--join", action="store_true",
                    help="join on the fly even when the lake stores the product's light-curve collection")
    lc.add_argument("--plot", type=int, metavar="GCNTR", help="also draw this source's light curve")
    lc.add_argument("--plot-file", help="PNG path (default: OUTPUT_lightcurve_<gcntr>.png, next to OUTPUT)")
    _output_args(lc)
    lc.set_defaults(func=cmd_lightcurves)

