"""Harvest stage: a TAP input becomes the key-range chunks the map stage reads like files.

A table whose input is a TAP service (``tap+https://HOST/PATH``) is planned once per build
(:func:`~tmass_lake.readers.tap.plan_chunks`: counts per key range on the service) and the plan
kept in the build's resume plan, so ``--resume`` reads the same chunks and skips the finished
ones (a chunk's identity is its query and its count). The table's layout is the service's
(``TAP_SCHEMA.columns``, kept in the plan as the snapshot the report records): its columns
matched to the schema by name or alias take the documented name, type and words, the others are
kept as the service describes them; documented columns it does not serve are absent (the drift
report lists them). The table is the one ``--tap-table SCHEMA.NAME`` (or ``?table=`` in the
input's URL) names, else the one of the schema's name. Queries in flight on one service are
bounded over the whole cluster by a ``distributed.Semaphore`` named after the service.
"""

from __future__ import annotations

import dataclasses
import logging

from dask.distributed import Client, Semaphore

from tmass_lake.convert.parameters import TableArguments, tap_options
from tmass_lake.convert.resume import ResumePlan
from tmass_lake.errors import BuildError
from tmass_lake.readers.tap import HarvestPlan, input_table, is_tap, plan_chunks

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
    named = input_table(taps[0])
    if named and params.tap_table and named != params.tap_table:
        raise BuildError(f"{args.table}: --tap-table {params.tap_table} but the input names table {named}")
    record = plan.get(STAGE, "plan")
    if record is not None:
        harvest = HarvestPlan.from_json(record)
    else:
        harvest = plan_chunks(taps[0], args.schema, key, chunk_rows=params.tap_chunk_rows, where=params.where,
                              options=tap_options(params), table=params.tap_table or named)
        plan.put(STAGE, "plan", harvest.to_json())
    if not harvest.chunks:
        raise BuildError(f"{args.table}: {harvest.service} has no rows in {harvest.table}"
                         + (f" where {harvest.where}" if harvest.where else ""))
    log.info("%s: %d rows from %s in %d chunk(s)", args.table, harvest.rows, harvest.service,
             len(harvest.chunks))
    # One semaphore per service and limit on the cluster (Dask refuses one name with two limits).
    limiter = Semaphore(max_leases=params.tap_concurrency, scheduler_rpc=client.scheduler, loop=client.loop,
                        name=f"tmass-lake-tap-{harvest.service}-{params.tap_concurrency}")
    args = dataclasses.replace(args, inputs=tuple(c.url() for c in harvest.chunks),
                               tap=tap_options(params, limiter))
    return args, tap_report(harvest)


def tap_report(harvest: HarvestPlan) -> dict:
    """The report's record of a harvest: service, table, key, plan, the queries planning ran (failed
    attempts included), how the served layout met the schema and the TAP_SCHEMA snapshot."""
    return {"service": harvest.service, "table": harvest.table, "key": harvest.key, "where": harvest.where,
            "rows": harvest.rows, "planned": harvest.planned, "planning_queries": harvest.queries,
            "chunks": len(harvest.chunks), "planning": harvest.log, "layout": harvest.layout,
            "tap_schema": harvest.columns}
