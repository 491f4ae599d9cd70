"""``tmass-lake verify LAKE``: re-check every table of a lake against its manifest."""

from __future__ import annotations

import argparse
import logging

from tmass_lake.cli.options import check_urls, storage_options
from tmass_lake.convert.manifest import read_manifest
from tmass_lake.convert.verify import verify_lake


def cmd_verify(ns: argparse.Namespace) -> int:
    check_urls([ns.lake])
    so = storage_options(ns.storage_option)
    read_manifest(ns.lake, so)  # not a lake: one line, before any check
    logging.getLogger("root").setLevel(logging.ERROR)  # hats logs each check at WARNING
    checks = verify_lake(ns.lake, so)
    for c in checks:
        print(f"{c.table:<18} {'ok' if not c.problems else 'FAILED'}")
        for p in c.problems:
            print(f"    {p}")
    bad = [c.table for c in checks if c.problems]
    failed = f"; failed: {', '.join(bad)}" if bad else ""
    print(f"{len(checks) - len(bad)}/{len(checks)} tables verified{failed}")
    return 1 if bad else 0
