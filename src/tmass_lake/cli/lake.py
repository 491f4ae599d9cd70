"""``tmass-lake info LAKE`` (what the manifest says) and ``tmass-lake verify LAKE`` (re-check it)."""

from __future__ import annotations

import argparse
import json
import logging

from tmass_lake.cli.options import add_storage_option, storage_options
from tmass_lake.convert.manifest import format_info, read_manifest, unfinished, verify_lake
from tmass_lake.lake.api import NOT_FINISHED


def cmd_info(ns: argparse.Namespace) -> int:
    so = storage_options(ns.storage_option)
    manifest = read_manifest(ns.lake, so)
    print(json.dumps(manifest, indent=1) if ns.json else format_info(manifest))
    if not ns.json:  # what the manifest lists but a killed (re)build left without its properties
        for name, entry in sorted(manifest["tables"].items()):
            if unfinished(ns.lake, entry, so):
                print(f"{name}: {NOT_FINISHED}")
    return 0


def cmd_verify(ns: argparse.Namespace) -> int:
    logging.getLogger("root").setLevel(logging.ERROR)  # hats logs each check at WARNING
    checks = verify_lake(ns.lake, storage_options(ns.storage_option))
    for c in checks:
        print(f"{c.table:<18} {'ok' if not c.problems else 'FAILED'}")
        for p in c.problems:
            print(f"    {p}")
    bad = [c.table for c in checks if c.problems]
    failed = f"; failed: {', '.join(bad)}" if bad else ""
    print(f"{len(checks) - len(bad)}/{len(checks)} tables verified{failed}")
    return 1 if bad else 0


def register(sub: argparse._SubParsersAction) -> None:
    i = sub.add_parser("info", help="print a lake's manifest")
    i.add_argument("lake", help="lake URL")
    i.add_argument("--json", action="store_true", help="the whole manifest as JSON")
    add_storage_option(i)
    i.set_defaults(func=cmd_info)
    v = sub.add_parser("verify", help="re-run a lake's validations against its manifest")
    v.add_argument("lake", help="lake URL")
    add_storage_option(v)
    v.set_defaults(func=cmd_verify)
