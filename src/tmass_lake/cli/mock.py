"""``tmass-lake mock`` (a deterministic mock Extended Mission) and ``tmass-lake demo`` (end to end)."""

from __future__ import annotations

import argparse

from tmass_lake.cli.options import add_storage_option, storage_options
from tmass_lake.demo import run_demo
from tmass_lake.mock import generate
from tmass_lake.schema import list_tables


def cmd_mock(ns: argparse.Namespace) -> int:
    manifest = generate(ns.out, scale=ns.scale, seed=ns.seed, tables=ns.tables,
                        storage_options=storage_options(ns.storage_option), workers=ns.workers,
                        overwrite=ns.overwrite)
    total = sum(t["rows"] for t in manifest["tables"].values())
    print(f"mock Extended Mission written to {ns.out}: {len(manifest['tables'])} tables, "
          f"{total:,} rows (seed {ns.seed}, scale {ns.scale})")
    return 0


def cmd_demo(ns: argparse.Namespace) -> int:
    run_demo(ns.out, scale=ns.scale, seed=ns.seed, workers=ns.workers)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser("mock", help="write a deterministic mock Extended Mission in IRSA's format")
    m.add_argument("out", help="output directory or URL")
    m.add_argument("--scale", type=float, default=1.0,
                   help="1.0 ~ 1.1 million working-database rows (2.1 million in all)")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--tables", nargs="*", choices=list_tables(), default=None, metavar="TABLE",
                   help="only these tables (default: all)")
    m.add_argument("--workers", type=int, default=None)
    m.add_argument("--overwrite", action="store_true",
                   help="replace an existing mock at OUT whole (without it an existing, non-empty OUT is "
                        "refused; a directory tmass-lake did not write is never removed)")
    add_storage_option(m)
    m.set_defaults(func=cmd_mock)
    d = sub.add_parser("demo", help="mock data, a whole lake, a crossmatch and light curves, end to end",
                       description="Mock data, a whole lake, a crossmatch and light curves, end to end, "
                                   "under OUT. OUT must be missing, empty, or a previous demo's output: "
                                   "a previous demo's mock/, lake/ and light-curve plot are replaced; a "
                                   "directory holding anything else (anything the demo did not write) "
                                   "is refused and nothing in it is touched.")
    d.add_argument("out", nargs="?", default="demo-output",
                   help="output directory (default demo-output); refused if it holds files the demo "
                        "did not write")
    d.add_argument("--scale", type=float, default=0.05)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--workers", type=int, default=None)
    d.set_defaults(func=cmd_demo)
