"""A positional table into a HATS catalog and its margin: map, plan, reduce, finish.

Each input file is parsed once (map) into sorted spill runs; the files' column layouts are made
one schema (inputs with a header may differ); the plan partitions the global histogram; each
partition and its margin are assembled from the runs and written once (reduce); the rows are
accounted for, then the metadata is written (finish).
"""

from __future__ import annotations

import time
from dataclasses import replace

from dask.distributed import Client
from hats.pixel_math import HealpixPixel

from tmass_lake.convert.map import MapResult, map_inputs, unified_schema
from tmass_lake.convert.parameters import TableArguments
from tmass_lake.convert.plan import effective_threshold, plan_partitions, sparse_histogram
from tmass_lake.convert.reduce import PARTITION_RECORD, reduce_partition
from tmass_lake.convert.resume import ResumePlan
from tmass_lake.convert.tasks import run_tasks, still_written
from tmass_lake.convert.writer import (
    HEALPIX_COLUMN,
    finish_catalog,
    finish_margin,
    margin_name,
    observation_properties,
    pixel_file,
    positional_properties,
)
from tmass_lake.errors import BuildError
from tmass_lake.storage import join


def check_rows(table: str, results: list[MapResult], written: int) -> tuple[int, int]:
    """Lines read = rows written + lines quarantined, or the build fails; returns (lines, quarantined)."""
    lines = sum(r.lines for r in results)
    quarantined = sum(r.quarantined for r in results)
    if lines != written + quarantined:
        raise BuildError(f"row accounting failed for {table}: {lines} lines read, "
                         f"{written} written + {quarantined} quarantined")
    return lines, quarantined


def build_collection(args: TableArguments, plan: ResumePlan, client: Client) -> dict:
    """Write the table's catalog and margin under ``args.output``; returns the report's counts."""
    stages: dict[str, float] = {}
    clock = time.time()
    results = map_inputs(args, plan, client)
    stages["map"], clock = time.time() - clock, time.time()
    schema, drift = unified_schema(args, results)
    args = replace(args, schema=schema)  # reduce brings every run to it

    params = args.params
    threshold = effective_threshold(params, results)
    partitions = plan_partitions(params, results, threshold)
    stages["plan"], clock = time.time() - clock, time.time()

    catalog_url = join(args.output, args.table)
    margin = margin_name(args.table, params.margin_arcsec)
    margin_url = join(args.output, margin)
    written = {(r["order"], r["pixel"]): r for r in plan.all("reduce", PARTITION_RECORD).values()}
    written = still_written(written, lambda r: [
        pixel_file(url, HealpixPixel(r["order"], r["pixel"]))
        for url in (catalog_url, *([margin_url] if r["margin_rows"] else []))], args.storage_options)
    todo = [p for p in partitions if (p.pixel.order, p.pixel.pixel) not in written]

    def reduced(rec: dict) -> None:
        plan.put("reduce", f"{rec['order']}_{rec['pixel']}", rec)
        written[(rec["order"], rec["pixel"])] = rec

    run_tasks(client, lambda p: reduce_partition(args, p, catalog_url, margin_url), todo,
              f"reduce {args.table}", args.progress, reduced)
    records = [written[(p.pixel.order, p.pixel.pixel)] for p in partitions]
    stages["reduce"], clock = time.time() - clock, time.time()

    rows = sum(r["rows"] for r in records)
    lines, quarantined = check_rows(args.table, results, rows)  # before any metadata is written
    schema = args.schema
    base = positional_properties(schema.ra_column, schema.dec_column)
    finish_catalog(catalog_url, base | observation_properties(schema) | {
        "catalog_name": args.table, "catalog_type": "object", "total_rows": rows,
        "hats_cols_sort": HEALPIX_COLUMN, "hats_max_rows": threshold,
    }, expected_rows=rows, storage_options=args.storage_options, schema=schema.arrow_schema(),
        id_columns=tuple(c for c in (schema.key_column, *args.indexes) if c),
        pixels=[HealpixPixel(r["order"], r["pixel"]) for r in records], histogram=sparse_histogram(results))
    with_margin = [r for r in records if r["margin_rows"]]
    margin_rows = sum(r["margin_rows"] for r in with_margin)
    finish_margin(margin_url, catalog_url, threshold_arcsec=params.margin_arcsec, rows=margin_rows,
                  pixels=[HealpixPixel(r["order"], r["pixel"]) for r in with_margin],
                  ra_column=schema.ra_column, dec_column=schema.dec_column,
                  storage_options=args.storage_options)
    stages["finish"] = time.time() - clock
    return {
        "inputs": [r.report() for r in results], "lines_read": lines, "rows_written": rows,
        "rows_quarantined": quarantined, "partitions": len(records),
        "pixels": [(r["order"], r["pixel"]) for r in records],
        "bytes": sum(r["bytes"] for r in records), "catalog": args.table,
        "margin": margin, "margin_rows": margin_rows,
        "margin_bytes": sum(r["margin_bytes"] for r in records), "margin_arcsec": params.margin_arcsec,
        "pixel_threshold": threshold, "stage_seconds": {k: round(v, 3) for k, v in stages.items()},
        "spill": {"runs": sum(len(r.runs) for r in results),
                  "bytes": sum(run.nbytes for r in results for run in r.runs),
                  "reads": sum(len({s.run for s in p.slices}) + len({s.run for s in p.margin_slices})
                               for p in partitions)},
        "columns": drift,
    }
