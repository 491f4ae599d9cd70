"""``tmass-lake crossmatch`` and ``tmass-lake lightcurves``: the lake API from the command line.

Every name and path is checked before the cluster starts (flags:
:func:`tmass_lake.cli.parsers.register_query`)."""

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

from tmass_lake.cli.compute import cache_alignment_kernels, cluster
from tmass_lake.cli.export_metadata import (
    Source,
    crossmatch_sources,
    describe_hats,
    described_table,
    table_sources,
)
from tmass_lake.cli.options import check_urls, data_bytes, storage_options
from tmass_lake.convert.writer import common_schema
from tmass_lake.errors import (
    EmptyResultError,
    NotALakeError,
    ReferenceUnavailableError,
    UserError,
    did_you_mean,
)
from tmass_lake.lake import Lake, MarginWarning, open_lake, plot_light_curve
from tmass_lake.lake.crossmatch import PROFILES
from tmass_lake.lake.lightcurves import PRODUCT_ALIASES, product_tables
from tmass_lake.storage import claim_output, filesystem, join, mark_output, write_bytes, write_parquet


def check_output(output: str, fmt: str, storage_options: dict, overwrite: bool, command: str) -> None:
    """Refuse a taken OUTPUT before any work (``write_output`` replaces it only at the end)."""
    fs, root = filesystem(output, storage_options)
    claim_output(fs, root, overwrite=overwrite, command=command, check_only=True,
                 directory=not (fmt == "parquet" and output.endswith(".parquet")))


def write_output(catalog: lsdb.Catalog, output: str, fmt: str, storage_options: dict,
                 name: str, sources: list[Source] | None = None, *, overwrite: bool = False,
                 command: str = "export") -> int:
    """Write a catalogue as a HATS catalogue, one Parquet file, or a directory of Parquet parts,
    each column described from ``sources`` (:mod:`tmass_lake.cli.export_metadata`).

    An existing output is refused unless ``overwrite``; with it the whole output is replaced
    (a directory only when tmass-lake wrote it), and a single file atomically.
    """
    sources = sources or []
    fs, root = filesystem(output, storage_options)
    single = fmt == "parquet" and output.endswith(".parquet")
    existed = fs.exists(root)
    claim_output(fs, root, overwrite=overwrite, command=command, directory=not single)
    if fmt == "hats":
        try:
            # lsdb clears the (claimed, freshly marked) directory before writing: mark it again after
            catalog.write_catalog(UPath(output, **storage_options), catalog_name=name, overwrite=True,
                                  progress_bar=False)
        except RuntimeError as e:
            if "empty" not in str(e):  # lsdb's "The output catalog is empty": no partition has a row
                raise
            if not existed:  # what lsdb left (hists/, done): ours to remove, we made the directory
                fs.rm(root, recursive=True)
            raise EmptyResultError(f"{name}: the result is empty (no rows), so no HATS catalogue "
                                   f"was written to {output}") from None
        mark_output(fs, root, command)
        out = UPath(output, **storage_options)
        describe_hats(out / name if (out / name / "hats.properties").exists() else out, sources, name=name)
        written = lsdb.open_catalog(UPath(output, **storage_options))
        return int(written.hc_structure.catalog_info.total_rows or 0)

    def part(df: npd.NestedFrame, path: str) -> int:
        if len(df) == 0:
            return 0
        write_parquet(described_table(npd.NestedFrame(df).to_pyarrow(), sources, name=name), fs, path)
        return len(df)

    if single:
        df = catalog.compute(progress_bar=False)
        table = described_table(npd.NestedFrame(df).to_pyarrow(), sources, name=name)
        write_parquet(table, fs, root)
        return len(df)
    parts = catalog.to_delayed()
    tasks = [dask.delayed(part)(p, join(root, f"part-{i:05d}.parquet")) for i, p in enumerate(parts)]
    return int(sum(dask.compute(*tasks)))


def checked_lake(url: str, so: dict) -> Lake:
    """The lake at ``url``, or a one-line error when there is none (or nothing a lake holds)."""
    check_urls([url])
    lake = open_lake(url, **so)
    if not lake.tables:
        raise NotALakeError(f"{url}: not a tmass-lake lake (no manifest.json and no tables)")
    return lake


def check_table(lake: Lake, name: str, columns: list[str] | None = None) -> None:
    """``name`` is a table of the lake and ``columns`` are its columns (with a "did you mean")."""
    if name not in lake:
        lake.entry(name)  # raises NotInLakeError, with the closest names
    if columns:
        have = lake.open(name, columns="all").all_columns
        for column in columns:
            if column not in have:
                raise UserError(f"--columns {column}: not a column of {name}" + did_you_mean(column, have))


def check_reference(lake: Lake, name_or_url: str, so: dict, quiet: bool) -> str:
    """Where the reference is; says when a name means the public copy, fails in one line when the
    catalogue cannot be read (a path with nothing, the public copy offline)."""
    url = lake.reference_url(name_or_url)  # a bad name: NotInLakeError, with the closest names
    check_urls([url])
    profile = PROFILES.get(name_or_url)
    public = profile is not None and url == profile.url
    why = ""
    try:
        fs, path = filesystem(url, so)
        found = any(fs.exists(join(path, f)) for f in ("collection.properties", "hats.properties"))
    except (OSError, ValueError) as e:
        found, why = False, f" ({type(e).__name__}: {e})"
    if not found:
        if public:
            raise ReferenceUnavailableError(
                f"--with {name_or_url}: the lake has no copy, and the public LSDB copy at {url} cannot be "
                f"read (offline?){why}; give a local copy's path")
        raise ReferenceUnavailableError(f"--with {name_or_url}: no HATS catalogue at {url}{why}")
    if public and not quiet:
        print(f"tmass-lake: {name_or_url}: the lake has no copy; reading the public LSDB copy at {url}",
              file=sys.stderr)
    return url


def lake_bytes(lake: Lake, table: str | None = None) -> int | None:
    """Bytes of a table (or of the whole lake) by its manifest, else by listing a local lake."""
    m = lake.manifest
    if table is not None and "bytes" in m.get("tables", {}).get(table, {}):
        return int(m["tables"][table]["bytes"])
    if "bytes" in m.get("totals", {}):
        return int(m["totals"]["bytes"])
    return data_bytes([lake.url], lake.storage_options) if "://" not in lake.url else None


def cmd_crossmatch(ns: argparse.Namespace) -> int:
    so = storage_options(ns.storage_option)
    check_urls([ns.output])
    fmt = ns.format or ("parquet" if ns.output.endswith(".parquet") else "hats")
    check_output(ns.output, fmt, so, ns.overwrite, "crossmatch")
    lake = checked_lake(ns.lake, so)
    check_table(lake, ns.table, ns.columns)
    reference_url = check_reference(lake, ns.with_, so, ns.quiet)
    started = time.time()
    cache_alignment_kernels()
    with cluster(ns, lake_bytes(lake, ns.table)):
        right = lake.open_reference(reference_url, storage_options=so or None,
                                    reference=ns.with_ if "/" not in ns.with_ else None)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", MarginWarning)
            try:
                result = lake.crossmatch(ns.table, right, radius_arcsec=ns.radius,
                                         epoch_aware=not ns.plain, columns=ns.columns,
                                         n_neighbors=ns.n_neighbors, how=ns.how, max_pm_mas_yr=ns.max_pm,
                                         reference=ns.with_ if "/" not in ns.with_ else None)
            except RuntimeError as e:
                if "do not overlap" not in str(e):  # lsdb: "Catalogs do not overlap"
                    raise
                raise EmptyResultError(f"{ns.table} and {ns.with_} have no sky in common: no matches, "
                                       f"nothing written to {ns.output}") from None
        for w in caught:
            if issubclass(w.category, MarginWarning):
                print(f"tmass-lake: warning: {w.message}", file=sys.stderr)
        sources = crossmatch_sources(list(result.columns), common_schema(lake.main_catalog_url(ns.table), so),
                                     common_schema(str(right.hc_structure.catalog_base_dir), so))
        rows = write_output(result, ns.output, fmt, so, f"{ns.table}_x_{right.name}", sources,
                            overwrite=ns.overwrite, command="crossmatch")
    kind = "positional" if ns.plain else "epoch-aware"
    print(f"{ns.table} x {right.name}: {rows:,} {kind} matches within {ns.radius:g}\" "
          f"({time.time() - started:.1f} s) -> {ns.output}")
    return 0


def cmd_lightcurves(ns: argparse.Namespace) -> int:
    so = storage_options(ns.storage_option)
    check_urls([ns.output])
    fmt = ns.format or "parquet"
    check_output(ns.output, fmt, so, ns.overwrite, "lightcurves")
    lake = checked_lake(ns.lake, so)
    try:
        tables = product_tables(ns.product, ns.kind)
    except KeyError as e:
        known = {*PRODUCT_ALIASES, *PRODUCT_ALIASES.values()}
        raise UserError(f"--product {ns.product}: {e.args[0]}" + did_you_mean(ns.product, known)) from None
    if ns.join or tables.collection not in lake:  # joined on the fly: both tables are needed
        for table in (tables.detections, tables.info):
            check_table(lake, table)
    if ns.links == "table" and tables.link not in lake:
        raise UserError(f"{ns.lake} has no {tables.link} (the {ns.product} link table): build it, "
                        "or give --links detections")
    png = None
    if ns.plot is not None:
        png = ns.plot_file or _default_png(ns.output, ns.plot)
        png_fs, png_path = filesystem(png, so)
        claim_output(png_fs, png_path, overwrite=ns.overwrite, command="lightcurves", directory=False,
                     check_only=True)
    search = None
    if ns.cone:
        search = lsdb.ConeSearch(ra=ns.cone[0], dec=ns.cone[1], radius_arcsec=ns.cone[2])
    started = time.time()
    cache_alignment_kernels()
    with cluster(ns, lake_bytes(lake)):
        cat = lake.light_curves(ns.product, kind=ns.kind, links=ns.links, complete=not ns.no_repair,
                                search_filter=search, stored=False if ns.join else None)
        stored = [Source(common_schema(lake.main_catalog_url(tables.collection), so))] \
            if tables.collection in lake.tables else []
        sources = [*stored, *table_sources(tables.info, tables.detections)]
        rows = write_output(cat, ns.output, fmt, so, f"{ns.product}_lightcurves", sources,
                            overwrite=ns.overwrite, command="lightcurves")
    how = f"read from {tables.collection}" if cat.name == tables.collection else "joined on the fly"
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
