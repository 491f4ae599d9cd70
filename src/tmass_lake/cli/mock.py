"""``tmass-lake mock`` (a deterministic mock Extended Mission) and ``tmass-lake demo`` (end to end)."""

from __future__ import annotations

import argparse

from tmass_lake.cli.options import check_dashboard, storage_options
from tmass_lake.demo import run_demo
from tmass_lake.mock import generate


def cmd_mock(ns: argparse.Namespace) -> int:
    manifest = generate(ns.out, scale=ns.scale, seed=ns.seed, tables=ns.tables,
                        storage_options=storage_options(ns.storage_option), workers=ns.workers,
                        overwrite=ns.overwrite, progress=not ns.quiet)
    total = sum(t["rows"] for t in manifest["tables"].values())
    print(f"mock Extended Mission written to {ns.out}: {len(manifest['tables'])} tables, "
          f"{total:,} rows (seed {ns.seed}, scale {ns.scale})")
    return 0


def cmd_demo(ns: argparse.Namespace) -> int:
    check_dashboard(ns)
    run_demo(ns.out, scale=ns.scale, seed=ns.seed, workers=ns.workers, progress=not ns.quiet,
             dashboard=ns.dashboard)
    return 0
