"""``tmass-lake crossmatch`` and ``tmass-lake lightcurves``: the lake API from the command line."""

from __future__ import annotations

import argparse
import io
import sys
import time
import warnings
from typing import Any

import dask
import lsdb
import nested_pandas as npd
import pyarrow.compute as pc
import pyarrow.dataset as pads
from upath import UPath

from tmass_lake.cli.options import add_cluster, add_storage_option, cluster, storage_options
from tmass_lake.lake import MarginWarning, open_lake, plot_light_curve
from tmass_lake.lake.lightcurves import product_tables
from tmass_lake.storage import claim_output, filesystem, join, mark_output, write_bytes, write_parquet


def _output_args(p: argparse.ArgumentParser) -> None:
    add_cluster(p)
    add_storage_option(p)
    p.add_argument("--format", choices=["hats", "parquet"], default=None,
                   help="output format (default: parquet for a .parquet OUTPUT or lightcurves, else hats)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing OUTPUT whole (without it an existing OUTPUT is refused; a "
                        "directory tmass-lake did not write is never removed)")


def check_output(output: str, fmt: str, storage_options: dict, overwrite: bool, command: str) -> None:
    """Refuse a taken OUTPUT before any work (``write_output`` replaces it only at the end)."""
    fs, root = filesystem(output, storage_options)
    claim_output(fs, root, overwrite=overwrite, command=command, check_only=True,
                 directory=not (fmt == "parquet" and output.endswith(".parquet")))


def write_output(catalog: lsdb.Catalog, output: str, fmt: str, storage_options: dict,
                 name: str, *, overwrite: bool = False, command: str = "export") -> int:
    """Write a catalogue as a HATS catalogue, one Parquet file, or a directory of Parquet parts.

    An existing output is refused unless ``overwrite``; with it the whole output is replaced
    (a directory only when tmass-lake wrote it), and a single file atomically.
    """
    fs, root = filesystem(output, storage_options)
    single = fmt == "parquet" and output.endswith(".parquet")
    claim_output(fs, root, overwrite=overwrite, command=command, directory=not single)
    if fmt == "hats":
        # lsdb clears the (claimed, freshly marked) directory before writing: mark it again after
        catalog.write_catalog(UPath(output, **storage_options), catalog_name=name, overwrite=True,
                              progress_bar=False)
        mark_output(fs, root, command)
        written = lsdb.open_catalog(UPath(output, **storage_options))
        return int(written.hc_structure.catalog_info.total_rows or 0)

    def part(df: npd.NestedFrame, path: str) -> int:
        if len(df) == 0:
            return 0
        write_parquet(npd.NestedFrame(df).to_pyarrow(), fs, path)
        return len(df)

    if single:
        df = catalog.compute(progress_bar=False)
        table = npd.NestedFrame(df).to_pyarrow()
        write_parquet(table, fs, root)
        return len(df)
    parts = catalog.to_delayed()
    tasks = [dask.delayed(part)(p, join(root, f"part-{i:05d}.parquet")) for i, p in enumerate(parts)]
    return int(sum(dask.compute(*tasks)))


def cmd_crossmatch(ns: argparse.Namespace) -> int:
    so = storage_options(ns.storage_option)
    fmt = ns.format or ("parquet" if ns.output.endswith(".parquet") else "hats")
    check_output(ns.output, fmt, so, ns.overwrite, "crossmatch")
    lake = open_lake(ns.lake, **so)
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
        rows = write_output(result, ns.output, fmt, so, f"{ns.table}_x_{right.name}",
                            overwrite=ns.overwrite, command="crossmatch")
    kind = "positional" if ns.plain else "epoch-aware"
    print(f"{ns.table} x {right.name}: {rows:,} {kind} matches within {ns.radius:g}\" "
          f"({time.time() - started:.1f} s) -> {ns.output}")
    return 0


def cmd_lightcurves(ns: argparse.Namespace) -> int:
    so = storage_options(ns.storage_option)
    fmt = ns.format or "parquet"
    check_output(ns.output, fmt, so, ns.overwrite, "lightcurves")
    png = None
    if ns.plot is not None:
        png = ns.plot_file or _default_png(ns.output, ns.plot)
        png_fs, png_path = filesystem(png, so)
        claim_output(png_fs, png_path, overwrite=ns.overwrite, command="lightcurves", directory=False,
                     check_only=True)
    lake = open_lake(ns.lake, **so)
    search = None
    if ns.cone:
        search = lsdb.ConeSearch(ra=ns.cone[0], dec=ns.cone[1], radius_arcsec=ns.cone[2])
    started = time.time()
    with cluster(ns):
        cat = lake.light_curves(ns.product, kind=ns.kind, links=ns.links, complete=not ns.no_repair,
                                search_filter=search, stored=False if ns.join else None)
        rows = write_output(cat, ns.output, fmt, so, f"{ns.product}_lightcurves",
                            overwrite=ns.overwrite, command="lightcurves")
    stored = product_tables(ns.product, ns.kind).collection
    how = f"read from {stored}" if cat.name == stored else "joined on the fly"
    print(f"{ns.product}: {rows:,} merged sources with nested detections, {how} "
          f"({time.time() - started:.1f} s) -> {ns.output}")
    if ns.plot is not None and png is not None:
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
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    write_bytes(fs, path, buf.getvalue())


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

