"""``tmass-lake schema pull``: a table's layout from a TAP service's ``TAP_SCHEMA``, merged with ours."""

from __future__ import annotations

import argparse
import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path

from tmass_lake.errors import UnknownTableError, UserError
from tmass_lake.readers.tap import TapClient, input_table, is_tap, service_url
from tmass_lake.readers.tap_schema import merge_schema, write_schema
from tmass_lake.schema import load_schema


def cmd_pull(ns: argparse.Namespace) -> int:
    if not is_tap(ns.tap) and not ns.tap.startswith(("http://", "https://")):
        raise UserError(f"--tap {ns.tap!r}: expected a TAP service URL (tap+https://HOST/PATH)")
    try:
        ours = load_schema(ns.table)
    except UnknownTableError:
        ours = None
    name = ours.table if ours else Path(ns.table).stem
    named = input_table(ns.tap)
    if named and ns.tap_table and named != ns.tap_table:
        raise UserError(f"--tap-table {ns.tap_table} but --tap {ns.tap} names table {named}")
    client = TapClient(ns.tap)
    table = client.resolve_table(ns.tap_table or named or name)
    merged = merge_schema(client.columns(table), ours, table=name, service=service_url(ns.tap),
                          date=datetime.now(UTC).date().isoformat())
    if ours is not None:
        print(merged.summary())
    if ns.report:
        Path(ns.report).write_text(json.dumps({
            "table": name, "service": merged.service, "service_table": table, "date": merged.date,
            "drift": [dataclasses.asdict(d) for d in merged.drift]}, indent=1, default=str))
    if ns.output:
        path = write_schema(merged.schema, ns.output)
        print(f"{name}: {len(merged.schema.columns)} columns from {table} on {merged.service} -> {path}")
    return 0
