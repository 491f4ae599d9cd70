"""``tmass-lake`` command line: mock, build, info, verify, demo."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys

from tmass_lake.schema import list_tables

# Modules adding their own subcommands: each defines ``register(subparsers)``.
COMMAND_MODULES: list[str] = ["tmass_lake.build.commands", "tmass_lake.lake.commands"]


def _storage_options(pairs: list[str] | None) -> dict:
    """``--storage-option key=value`` pairs (JSON values allowed) into fsspec storage options."""
    out: dict = {}
    for pair in pairs or []:
        key, _, value = pair.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def cmd_mock(ns: argparse.Namespace) -> int:
    from tmass_lake.mock import generate

    manifest = generate(ns.out, scale=ns.scale, seed=ns.seed, tables=ns.tables,
                        storage_options=_storage_options(ns.storage_option), workers=ns.workers)
    total = sum(t["rows"] for t in manifest["tables"].values())
    print(f"mock Extended Mission written to {ns.out}: {len(manifest['tables'])} tables, "
          f"{total:,} rows (seed {ns.seed}, scale {ns.scale})")
    return 0


def run_bytes_for(memory_limit: str | None) -> int:
    """Spill-run size from the per-worker memory budget: a run is sorted in memory, ~3x its size."""
    from dask.utils import parse_bytes

    budget = parse_bytes(memory_limit) if memory_limit else 4 << 30
    return max(16 << 20, min(256 << 20, budget // 12))


def cmd_build(ns: argparse.Namespace) -> int:
    from tmass_lake.build import BuildArguments, build_table
    from tmass_lake.cluster import dask_client
    from tmass_lake.schema import load_schema
    from tmass_lake.storage import expand_inputs, filesystem, is_local, join, local_scratch

    so = _storage_options(ns.storage_option)
    if ns.pipeline:
        from tmass_lake.build.lake import build_lake_command

        return build_lake_command(ns, so)
    if not ns.table:
        raise ValueError("give a pipeline file/directory or --table NAME")
    schema = load_schema(ns.table)
    inputs = tuple(expand_inputs(ns.input, so))
    fs, _ = filesystem(ns.output, so)
    tmp = ns.tmp_dir or join(ns.output, "_build")
    if not ns.tmp_dir and not is_local(fs) and not ns.scheduler:
        tmp = local_scratch(ns.output)
    args = BuildArguments(
        schema=schema, inputs=inputs, output=ns.output, tmp_dir=tmp,
        input_format=ns.format, storage_options=so, pixel_threshold=ns.pixel_threshold,
        byte_threshold=ns.byte_threshold, highest_order=ns.highest_order,
        margin_arcsec=ns.margin_arcsec, resume=ns.resume, progress=not ns.quiet,
        run_bytes=run_bytes_for(ns.memory_limit),
    )
    with dask_client(ns.scheduler, ns.workers, ns.memory_limit) as client:
        report = build_table(args, client)
    print(f"{schema.table}: {report['lines_read']:,} lines read, {report['rows_written']:,} rows "
          f"written in {report['partitions']} partitions, {report['rows_quarantined']:,} quarantined "
          f"({report['seconds']:.1f} s) -> {ns.output}")
    return 0


def cmd_demo(ns: argparse.Namespace) -> int:
    from tmass_lake.demo import run_demo

    run_demo(ns.out, scale=ns.scale, seed=ns.seed, workers=ns.workers)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tmass-lake", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    m = sub.add_parser("mock", help="write a deterministic mock Extended Mission in IRSA's format")
    m.add_argument("out")
    m.add_argument("--scale", type=float, default=1.0, help="1.0 ~ one million WDB rows")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--tables", nargs="*", choices=list_tables(), default=None)
    m.add_argument("--workers", type=int, default=None)
    m.add_argument("--storage-option", action="append", metavar="KEY=VALUE")
    m.set_defaults(func=cmd_mock)

    b = sub.add_parser("build", help="convert IRSA files into HATS: one table, a pipeline, or the lake")
    b.add_argument("pipeline", nargs="?", help="pipelines/<family>.toml or the pipelines/ directory")
    b.add_argument("--table", help="IRSA table name or a schema YAML file (single-table build)")
    b.add_argument("--input", required=True, nargs="+", help="files, globs or directories (fsspec URLs)")
    b.add_argument("--output", required=True, help="collection URL")
    b.add_argument("--format", choices=["bulk", "ipac"], default="bulk")
    b.add_argument("--scheduler", help="address of an existing dask.distributed scheduler")
    b.add_argument("--workers", type=int, help="local cluster workers (default: cores)")
    b.add_argument("--memory-limit", default="4GiB", help="per local worker")
    b.add_argument("--pixel-threshold", type=int, default=1_000_000)
    b.add_argument("--byte-threshold", type=int, default=512 << 20)
    b.add_argument("--highest-order", type=int, default=10)
    b.add_argument("--margin-arcsec", type=float, default=10.0)
    b.add_argument("--tmp-dir", help="spill and resume directory (default: OUTPUT/_build)")
    b.add_argument("--resume", action="store_true", help="continue an interrupted build")
    b.add_argument("--quiet", action="store_true", help="no progress bars")
    b.add_argument("--storage-option", action="append", metavar="KEY=VALUE")
    b.set_defaults(func=cmd_build)
    d = sub.add_parser("demo", help="mock data, a whole lake, a crossmatch and light curves, end to end")
    d.add_argument("out", nargs="?", default="demo-output")
    d.add_argument("--scale", type=float, default=0.05)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--workers", type=int, default=None)
    d.set_defaults(func=cmd_demo)

    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if ns.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not ns.verbose:
        logging.getLogger("distributed").setLevel(logging.WARNING)
    from tmass_lake.build.derive import DeriveError
    from tmass_lake.build.parquet_table import ParquetBuildError
    from tmass_lake.build.pipeline import BuildError
    from tmass_lake.readers import InputError
    from tmass_lake.storage import StorageError

    try:
        return ns.func(ns)
    except (InputError, StorageError, BuildError, ParquetBuildError, DeriveError, KeyError, ValueError) as e:
        print(f"tmass-lake: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
