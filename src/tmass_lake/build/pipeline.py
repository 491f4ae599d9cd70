"""One table from IRSA files to a HATS collection on Dask: map, plan, reduce, finish.

Each input file is parsed once (map) into sorted spill runs; the plan partitions the global
histogram; each partition and its margin are assembled from the runs and written once
(reduce); the metadata, collection properties and build report close the build (finish).
"""

from __future__ import annotations

import time

from dask.distributed import Client

from tmass_lake.build.arguments import BuildArguments
from tmass_lake.build.finish import finish_build, write_collection_properties, write_report
from tmass_lake.build.map import MapResult, map_input
from tmass_lake.build.plan import (
    ResumePlan,
    effective_threshold,
    global_histogram,
    plan_partitions,
)
from tmass_lake.build.reduce import reduce_partition
from tmass_lake.build.tasks import run_tasks
from tmass_lake.storage import filesystem, join


class BuildError(RuntimeError):
    """The build cannot complete; the message says why."""


def margin_name(args: BuildArguments) -> str:
    return f"{args.table}_{args.margin_arcsec:g}arcsec"


def _check_output(args: BuildArguments) -> None:
    fs, root = filesystem(args.output, args.storage_options)
    if args.resume:
        return
    if fs.exists(join(root, "collection.properties")) or fs.exists(join(root, args.table)):
        raise BuildError(f"{args.output} already holds a build of {args.table}; "
                         "pass --resume to continue it or choose a new output")


def build_table(args: BuildArguments, client: Client) -> dict:
    """Convert one table; returns the build report (also written as ``build_report.json``)."""
    started = time.time()
    _check_output(args)
    plan = ResumePlan(args)
    catalog_url = join(args.output, args.table)
    margin_url = join(args.output, margin_name(args))

    done = plan.map_done()
    todo = [i for i in range(len(args.inputs)) if i not in done]

    def mapped(res: MapResult) -> None:
        plan.record_map(res)
        done[res.index] = res

    stages: dict[str, float] = {}
    clock = time.time()
    run_tasks(client, lambda i: map_input(args, i), todo, "map", args.progress, mapped)
    results = [done[i] for i in range(len(args.inputs))]
    stages["map"], clock = time.time() - clock, time.time()

    threshold = effective_threshold(args, results)
    partitions = plan_partitions(args, results, threshold)
    histogram = global_histogram(results)
    stages["plan"], clock = time.time() - clock, time.time()
    written = plan.reduce_done()
    todo_parts = [p for p in partitions if (p.pixel.order, p.pixel.pixel) not in written]

    def reduced(rec: dict) -> None:
        plan.record_reduce(rec)
        written[(rec["order"], rec["pixel"])] = rec

    run_tasks(client, lambda p: reduce_partition(args, p, catalog_url, margin_url), todo_parts,
              "reduce", args.progress, reduced)
    records = [written[(p.pixel.order, p.pixel.pixel)] for p in partitions]
    stages["reduce"], clock = time.time() - clock, time.time()

    # Checked before any metadata is written: a build that lost rows never looks complete.
    lines = sum(r.lines for r in results)
    quarantined = sum(r.quarantined for r in results)
    rows = sum(r["rows"] for r in records)
    if lines != rows + quarantined:
        raise BuildError(f"row accounting failed for {args.table}: {lines} lines read, "
                         f"{rows} written + {quarantined} quarantined")
    totals = finish_build(args, catalog_url, margin_url, margin_name(args), records, histogram,
                          threshold)
    stages["finish"] = time.time() - clock
    write_collection_properties(args, [margin_name(args)] if totals["has_margin"] else [], {})
    report = {
        "table": args.table, "inputs": [{"path": r.path, "bytes": r.bytes, "sha256": r.sha256,
                                         "lines": r.lines, "rows": r.rows,
                                         "quarantined": r.quarantined,
                                         "quarantine": r.quarantine_path} for r in results],
        "lines_read": lines, "rows_written": totals["rows"], "rows_quarantined": quarantined,
        "partitions": totals["partitions"], "bytes": totals["bytes"],
        "margin_rows": totals["margin_rows"], "margin_arcsec": args.margin_arcsec,
        "pixel_threshold": threshold, "seconds": round(time.time() - started, 3),
        "stage_seconds": {k: round(v, 3) for k, v in stages.items()},
    }
    write_report(args, report)
    fs, tmp = filesystem(args.tmp_dir, args.storage_options)
    if fs.exists(tmp):
        fs.rm(tmp, recursive=True)
    return report
