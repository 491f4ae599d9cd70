"""Catalogs derived from a built collection by a row filter, partition by partition (no re-parse).

The 6x Point and Extended Source Catalogs are the ``cat = '1'`` rows of the 6x working
databases. Each partition of the source catalog, and its margin, is read, filtered and written
at the same pixel, so the derived catalog keeps the source's partitioning (minus partitions left
empty) and its margin stays exact: the margin of a pixel is a row filter of the source margin,
which already holds every source row near that pixel. Point map, skymaps and metadata are
recomputed from the filtered rows; indexes are built on the result like any collection's.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from dask.distributed import Client
from hats.catalog.dataset.collection_properties import CollectionProperties
from hats.io import paths
from hats.io.file_io import write_fits_image
from hats.io.skymap import write_skymap
from hats.pixel_math import HealpixPixel

from tmass_lake.build.arguments import HISTOGRAM_ORDER
from tmass_lake.build.finish import BUILDER, observation_properties, upath, write_hats_metadata
from tmass_lake.build.map import HEALPIX_COLUMN
from tmass_lake.build.reduce import pixel_file
from tmass_lake.build.tasks import run_tasks
from tmass_lake.schema import TableSchema
from tmass_lake.storage import filesystem, join, retrying, write_parquet, write_text

_SHIFT = 2 * (29 - HISTOGRAM_ORDER)


class DeriveError(RuntimeError):
    """The derived catalog cannot be made; the message says why."""


@dataclass(frozen=True)
class DeriveArguments:
    """A derived catalog: its name, the collection it filters, and the filter ``column == value``."""

    name: str
    title: str
    schema: TableSchema
    source: str  # URL of the source collection
    output: str  # URL of the derived collection
    column: str
    value: str | int | float
    storage_options: dict = field(default_factory=dict)
    progress: bool = True

    @property
    def where(self) -> str:
        return f"{self.column} == {self.value!r}"


def _read(url: str, storage_options: dict) -> pa.Table:
    fs, path = filesystem(url, storage_options)
    return retrying(lambda: pq.read_table(path, filesystem=fs), what=f"reading {url}")


def _write(table: pa.Table, url: str, storage_options: dict) -> int:
    from hats.io.file_io.file_io import get_parquet_write_table_kwargs

    kwargs = get_parquet_write_table_kwargs(table.schema, write_table_kwargs={
        "sorting_columns": pq.SortingColumn.from_ordering(table.schema, [(HEALPIX_COLUMN, "ascending")])})
    fs, path = filesystem(url, storage_options)
    return write_parquet(table, fs, path, **kwargs)


def _filtered(args: DeriveArguments, table: pa.Table) -> pa.Table:
    value = pa.scalar(args.value).cast(table.schema.field(args.column).type)
    kept = table.filter(pc.fill_null(pc.equal(table.column(args.column), value), False))
    meta = dict(kept.schema.metadata or {}) | {
        b"table": args.name.encode(), b"title": args.title.encode(),
        b"derived_from": args.schema.table.encode(), b"where": args.where.encode()}
    return kept.replace_schema_metadata(meta)


def derive_partition(args: DeriveArguments, pixel: HealpixPixel, source_catalog: str,
                     source_margin: str | None, margin_out: str | None) -> dict:
    """Filter one partition and its margin; returns counts, bytes and the order-10 histogram."""
    table = _filtered(args, _read(pixel_file(source_catalog, pixel), args.storage_options))
    rec = {"order": pixel.order, "pixel": pixel.pixel, "source_rows": 0, "rows": table.num_rows,
           "bytes": 0, "margin_rows": 0, "margin_bytes": 0,
           "hist": (np.empty(0, np.int64), np.empty(0, np.int64))}
    if not table.num_rows:
        return rec
    rec["bytes"] = _write(table, pixel_file(join(args.output, args.name), pixel), args.storage_options)
    fine = table.column(HEALPIX_COLUMN).to_numpy() >> _SHIFT
    rec["hist"] = np.unique(fine, return_counts=True)
    if source_margin and margin_out:
        fs, path = filesystem(pixel_file(source_margin, pixel), args.storage_options)
        if fs.exists(path):
            margin = _filtered(args, _read(pixel_file(source_margin, pixel), args.storage_options))
            if margin.num_rows:
                rec["margin_rows"] = margin.num_rows
                rec["margin_bytes"] = _write(margin, pixel_file(margin_out, pixel), args.storage_options)
    return rec


def derive_catalog(args: DeriveArguments, client: Client) -> dict:
    """Write the derived collection; returns its report (``build_report.json`` too)."""
    import hats

    started = time.time()
    source = hats.read_hats(upath(args.source, args.storage_options))
    main = source.main_catalog
    if args.column not in main.schema.names:
        raise DeriveError(f"{args.schema.table} has no column {args.column!r} to derive {args.name} from")
    margin = hats.read_hats(source.default_margin_catalog_dir) if source.default_margin else None
    margin_url = join(args.source, source.default_margin) if margin else None
    arcsec = float(margin.catalog_info.margin_threshold) if margin else 0.0
    mname = f"{args.name}_{arcsec:g}arcsec"
    fs, root = filesystem(args.output, args.storage_options)
    if fs.exists(root):
        fs.rm(root, recursive=True)
    source_catalog = join(args.source, main.catalog_name)
    pixels = list(main.get_healpix_pixels())
    margin_out = join(args.output, mname) if margin else None
    records = run_tasks(client, lambda p: derive_partition(args, p, source_catalog, margin_url, margin_out),
                        pixels, args.name, args.progress)
    kept = [r for r in records if r["rows"]]
    if not kept:
        raise DeriveError(f"no row of {args.schema.table} has {args.where}: {args.name} would be empty")

    histogram = np.zeros(12 * 4**HISTOGRAM_ORDER, dtype=np.int64)
    for r in kept:
        histogram[r["hist"][0]] += r["hist"][1]
    rows = int(histogram.sum())
    catalog_url = join(args.output, args.name)
    croot = upath(catalog_url, args.storage_options)
    write_fits_image(histogram, paths.get_point_map_file_pointer(croot))
    write_skymap(histogram=histogram, catalog_dir=croot, orders=[2, 4, 6])
    info = main.catalog_info
    schema = replace(args.schema, table=args.name, title=args.title)
    base = {"ra_column": info.ra_column, "dec_column": info.dec_column,
            "hats_col_healpix": HEALPIX_COLUMN, "hats_col_healpix_order": 29, "hats_npix_suffix": ".parquet"}
    obs = observation_properties(schema) | {
        "obs_description": f"{args.title}: the rows of {args.schema.table} with {args.where}, "
                          "derived partition by partition by tmass-lake.",
        "prov_progenitor": f"{args.schema.table} ({args.where})"}
    write_hats_metadata(catalog_url, [HealpixPixel(r["order"], r["pixel"]) for r in kept], base | obs | {
        "catalog_name": args.name, "catalog_type": "object", "total_rows": rows,
        "hats_cols_sort": HEALPIX_COLUMN, "hats_max_rows": info.hats_max_rows,
        "hats_skymap_order": HISTOGRAM_ORDER, "hats_skymap_alt_orders": [2, 4, 6],
    }, args.storage_options, rows)
    with_margin = [r for r in kept if r["margin_rows"]]
    margin_rows = sum(r["margin_rows"] for r in with_margin)
    margins = []
    if with_margin:
        margins = [mname]
        write_hats_metadata(join(args.output, margins[0]),
                            [HealpixPixel(r["order"], r["pixel"]) for r in with_margin],
                            base | {"catalog_name": margins[0], "catalog_type": "margin",
                                    "total_rows": margin_rows, "primary_catalog": args.name,
                                    "margin_threshold": arcsec}, args.storage_options, margin_rows)
    CollectionProperties(
        obs_collection=args.name, hats_primary_table_url=args.name, all_margins=margins or None,
        default_margin=margins[0] if margins else None, obs_title=args.title, hats_builder=BUILDER,
    ).to_properties_file(upath(args.output, args.storage_options))
    report = {
        "table": args.name, "derived_from": args.schema.table, "where": args.where,
        "source_rows": int(info.total_rows), "rows_written": rows, "rows_quarantined": 0,
        "partitions": len(kept), "empty_partitions_dropped": len(records) - len(kept),
        "bytes": sum(r["bytes"] for r in kept), "margin_rows": margin_rows, "margin_arcsec": arcsec,
        "seconds": round(time.time() - started, 3),
    }
    write_text(fs, join(root, "build_report.json"), json.dumps(report, indent=2))
    return report
