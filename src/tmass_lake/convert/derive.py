"""Catalogs derived from a built collection by a row filter, partition by partition (no re-parse).

The 6x Point and Extended Source Catalogs are the ``cat = '1'`` rows of the 6x working
databases. Each partition of the source catalog, and its margin, is read, filtered and written
at the same pixel, so the derived catalog keeps the source's partitioning (minus partitions left
empty) and its margin stays exact: the margin of a pixel is a row filter of the source margin,
which already holds every source row near that pixel. Point map, skymaps and metadata are
recomputed from the filtered rows; indexes are built on the result like any collection's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import hats
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from dask.distributed import Client
from hats.pixel_math import HealpixPixel

from tmass_lake.convert.index import IndexArguments, build_indexes
from tmass_lake.convert.map import FINE_SHIFT
from tmass_lake.convert.reduce import PARTITION_RECORD
from tmass_lake.convert.resume import record_of
from tmass_lake.convert.table import build_session, write_report
from tmass_lake.convert.tasks import run_pixel_tasks
from tmass_lake.convert.writer import (
    HEALPIX_COLUMN,
    common_schema,
    finish_catalog,
    finish_margin,
    margin_name,
    observation_properties,
    pixel_file,
    positional_properties,
    upath,
    with_metadata,
    write_collection_properties,
    write_partition,
)
from tmass_lake.errors import BuildError
from tmass_lake.schema import TableSchema
from tmass_lake.storage import filesystem, join, retrying

_HISTOGRAM_RECORD = record_of(hist=list)


def _derived_record(record: dict) -> dict:
    """A derived partition's resume record: a written partition plus its histogram."""
    return _HISTOGRAM_RECORD(PARTITION_RECORD(record))


@dataclass(frozen=True)
class DeriveArguments:
    """A derived catalog: its name, the collection it filters, the filter ``column == value``."""

    name: str
    title: str
    schema: TableSchema  # the source table's
    source: str  # URL of the source collection
    output: str  # URL of the derived collection
    scratch: str
    column: str
    value: str | int | float
    indexes: tuple[str, ...] = ()
    storage_options: dict = field(default_factory=dict)
    compression_level: int = 3
    resume: bool = False
    progress: bool = True

    @property
    def where(self) -> str:
        return f"{self.column} == {self.value!r}"


def _filtered(args: DeriveArguments, url: str) -> pa.Table:
    fs, path = filesystem(url, args.storage_options)
    table = retrying(lambda: pq.read_table(path, filesystem=fs), what=f"reading {url}")
    value = pa.scalar(args.value).cast(table.schema.field(args.column).type)
    kept = table.filter(pc.fill_null(pc.equal(table.column(args.column), value), False))
    return kept.replace_schema_metadata(_derived_metadata(args, kept.schema))


def _derived_metadata(args: DeriveArguments, source: pa.Schema) -> dict:
    """The source's schema metadata, naming the derived table and how it was derived."""
    return dict(source.metadata or {}) | {
        b"table": args.name.encode(), b"title": args.title.encode(),
        b"derived_from": args.schema.table.encode(), b"where": args.where.encode()}


def derive_partition(args: DeriveArguments, pixel: HealpixPixel, source_catalog: str,
                     source_margin: str | None, margin_out: str | None) -> dict:
    """Filter one partition and its margin; returns counts, bytes and its order-10 histogram.

    The source's data files hold types only: the rows take the columns' metadata from the source's
    ``_common_metadata``, so the derived data files' compact VOParquet has the units and UCDs."""
    described = common_schema(source_catalog, args.storage_options)

    def with_units(t: pa.Table) -> pa.Table:
        return t.cast(with_metadata(t.schema, described))

    table = with_units(_filtered(args, pixel_file(source_catalog, pixel)))
    rec = {"order": pixel.order, "pixel": pixel.pixel, "rows": table.num_rows, "bytes": 0,
           "margin_rows": 0, "margin_bytes": 0, "hist": [[], []]}
    if not table.num_rows:
        return rec
    level, so = args.compression_level, args.storage_options
    rec["bytes"] = write_partition(table, pixel_file(join(args.output, args.name), pixel),
                                   compression_level=level, storage_options=so)
    fine, counts = np.unique(table.column(HEALPIX_COLUMN).to_numpy() >> FINE_SHIFT, return_counts=True)
    rec["hist"] = [fine.tolist(), counts.tolist()]
    if source_margin and margin_out:
        fs, path = filesystem(pixel_file(source_margin, pixel), so)
        if fs.exists(path):
            margin = with_units(_filtered(args, pixel_file(source_margin, pixel)))
            if margin.num_rows:
                rec["margin_rows"] = margin.num_rows
                rec["margin_bytes"] = write_partition(margin, pixel_file(margin_out, pixel),
                                                      compression_level=level, storage_options=so)
    return rec


def derive_catalog(args: DeriveArguments, client: Client, *, index_rows_per_file: int = 5_000_000) -> dict:
    """Write the derived collection (catalog, margin, indexes); returns its report."""
    started = time.time()
    source = hats.read_hats(upath(args.source, args.storage_options))
    main = source.main_catalog
    if args.column not in main.schema.names:
        raise BuildError(f"{args.schema.table} has no column {args.column!r} to derive {args.name} from")
    margin = hats.read_hats(source.default_margin_catalog_dir) if source.default_margin else None
    margin_url = join(args.source, source.default_margin) if margin is not None else None
    arcsec = float(margin.catalog_info.margin_threshold) if margin is not None else 0.0
    mname = margin_name(args.name, arcsec)
    margin_out = join(args.output, mname) if margin is not None else None
    source_catalog = join(args.source, main.catalog_name)
    pixels = list(main.get_healpix_pixels())
    fingerprint = {"name": args.name, "source": args.source, "where": args.where,
                   "source_rows": int(main.catalog_info.total_rows), "indexes": list(args.indexes)}
    so = args.storage_options
    with build_session(args.output, args.scratch, fingerprint, resume=args.resume,
                       storage_options=so) as plan:
        records = run_pixel_tasks(client, lambda p: derive_partition(args, p, source_catalog, margin_url,
                                                                     margin_out), pixels, plan, "derive",
                                  args.name, args.progress, parse=_derived_record, storage_options=so,
                                  files=lambda r: [pixel_file(url, HealpixPixel(r["order"], r["pixel"]))
                                                   for url, n in ((join(args.output, args.name), r["rows"]),
                                                                  (margin_out, r["margin_rows"])) if n])
        kept = [r for r in records if r["rows"]]
        if not kept:
            raise BuildError(f"no row of {args.schema.table} has {args.where}: {args.name} would be empty")
        rows = sum(r["rows"] for r in kept)
        info = main.catalog_info
        hist = (np.concatenate([np.asarray(r["hist"][0], np.int64) for r in kept]),
                np.concatenate([np.asarray(r["hist"][1], np.int64) for r in kept]))
        base = positional_properties(info.ra_column, info.dec_column)
        described = common_schema(source_catalog, so)
        described = described.with_metadata(_derived_metadata(args, described))
        finish_catalog(join(args.output, args.name), base | observation_properties(
            args.schema, title=args.title,
            description=f"{args.title}: the rows of {args.schema.table} with {args.where}, derived "
                        "partition by partition by tmass-lake.",
            progenitor=f"{args.schema.table} ({args.where})") | {
            "catalog_name": args.name, "catalog_type": "object", "total_rows": rows,
            "hats_cols_sort": HEALPIX_COLUMN, "hats_max_rows": info.hats_max_rows,
        }, expected_rows=rows, storage_options=so, schema=described,
            id_columns=(args.schema.key_column,) if args.schema.key_column else (),
            pixels=[HealpixPixel(r["order"], r["pixel"]) for r in kept], histogram=hist)
        with_margin = [r for r in kept if r["margin_rows"]]
        margin_rows = sum(r["margin_rows"] for r in with_margin)
        if margin is not None:
            finish_margin(join(args.output, mname), join(args.output, args.name), rows=margin_rows,
                          pixels=[HealpixPixel(r["order"], r["pixel"]) for r in with_margin],
                          threshold_arcsec=arcsec, ra_column=info.ra_column, dec_column=info.dec_column,
                          storage_options=so)
        indexes = {}
        if args.indexes:
            indexes = build_indexes(
                IndexArguments(collection=args.output, catalog=args.name, columns=args.indexes,
                               scratch=join(args.scratch, "index"), storage_options=so,
                               rows_per_file=index_rows_per_file, compression_level=args.compression_level,
                               progress=args.progress),
                [HealpixPixel(r["order"], r["pixel"]) for r in kept], main.schema, plan, client)
        write_collection_properties(args.output, name=args.name, title=args.title,
                                    margins=[mname] if margin is not None else [],
                                    indexes={c: i["path"] for c, i in indexes.items()},
                                    default_index=args.schema.key_column, storage_options=so)
        report = {
            "table": args.name, "kind": "derived", "derived_from": args.schema.table, "where": args.where,
            "lines_read": int(info.total_rows), "rows_written": rows, "rows_quarantined": 0,
            "partitions": len(kept), "empty_partitions_dropped": len(records) - len(kept),
            "bytes": sum(r["bytes"] for r in kept), "catalog": args.name,
            "margin": mname if margin is not None else None, "margin_rows": margin_rows,
            "margin_arcsec": arcsec,
            "indexes": indexes, "inputs": [], "seconds": round(time.time() - started, 3),
        }
        write_report(args.output, report, so)
    return report
