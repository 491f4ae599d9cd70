"""Harvest stage: a TAP input becomes the key-range chunks the map stage reads like files.

A table whose input is a TAP service (``tap+https://HOST/PATH``) is planned once per build
(:func:`~tmass_lake.readers.tap.plan_chunks`: counts per key range on the service) and the plan
kept in the build's resume plan, so ``--resume`` reads the same chunks and skips the finished
ones (a chunk's identity is its query and its count). The schema takes the service's units,
UCDs and descriptions (``TAP_SCHEMA.columns``, kept in the plan as the snapshot the report
records). Queries in flight on one service are bounded over the whole cluster by a
``distributed.Semaphore`` named after the service.
"""

from __future__ import annotations

import dataclasses
import logging

from dask.distributed import Client, Semaphore

from tmass_lake.convert.parameters import TableArguments, tap_options
from tmass_lake.convert.resume import ResumePlan
from tmass_lake.errors import BuildError
from tmass_lake.readers.tap import HarvestPlan, is_tap, plan_chunks
from tmass_lake.readers.tap_schema import merge_schema

log = logging.getLogger(__name__)
STAGE = "harvest"


def harvest_inputs(args: TableArguments, plan: ResumePlan,
                   client: Client) -> tuple[TableArguments, dict | None]:
    """``args`` with a TAP input replaced by its chunks and the service's column metadata.

    Returns the arguments and the report's ``tap`` section (``None`` for file inputs).
    """
    taps = [u for u in args.inputs if is_tap(u)]
    if not taps:
        return args, None
    if len(args.inputs) != 1:
        raise BuildError(f"{args.table}: a TAP service is the table's only input "
                         f"(got {len(args.inputs)} inputs)")
    params = args.params
    key = params.tap_key or args.schema.key_column
    if not key:
        raise BuildError(f"{args.table}: no key column to split the harvest on; pass --tap-key COLUMN")
    record = plan.get(STAGE, "plan")
    if record is not None:
        harvest = HarvestPlan.from_json(record)
    else:
        harvest = plan_chunks(taps[0], args.schema, key, chunk_rows=params.tap_chunk_rows, where=params.where,
                              options=tap_options(params))
        plan.put(STAGE, "plan", harvest.to_json())
    if not harvest.chunks:
        raise BuildError(f"{args.table}: {harvest.service} has no rows in {harvest.table}"
                         + (f" where {harvest.where}" if harvest.where else ""))
    log.info("%s: %d rows from %s in %d chunk(s)", args.table, harvest.rows, harvest.service,
             len(harvest.chunks))
    schema = merge_schema(harvest.columns, args.schema, table=args.table, service=harvest.service,
                          date=harvest.planned[:10], layout="ours").schema
    # One semaphore per service and limit on the cluster (Dask refuses one name with two limits).
    limiter = Semaphore(max_leases=params.tap_concurrency, scheduler_rpc=client.scheduler, loop=client.loop,
                        name=f"tmass-lake-tap-{harvest.service}-{params.tap_concurrency}")
    args = dataclasses.replace(args, inputs=tuple(c.url() for c in harvest.chunks), schema=schema,
                               tap=tap_options(params, limiter))
    return args, tap_report(harvest)


def tap_report(harvest: HarvestPlan) -> dict:
    """The report's record of a harvest: service, table, key, plan and the TAP_SCHEMA snapshot."""
    return {"service": harvest.service, "table": harvest.table, "key": harvest.key, "where": harvest.where,
            "rows": harvest.rows, "planned": harvest.planned, "planning_queries": harvest.queries,
            "chunks": len(harvest.chunks), "tap_schema": harvest.columns}
