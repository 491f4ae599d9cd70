"""``tmass-lake build``: one table (``--table``), a family (``6x``), every family (``all``), or
pipeline files, into a lake on Dask."""

from __future__ import annotations

import argparse
import sys

from tmass_lake.cli.options import (
    add_build_parameters,
    add_cluster,
    add_storage_option,
    cluster,
    given_parameters,
    storage_options,
)
from tmass_lake.convert import LakeArguments, build_lake, build_table, load_pipelines, table_arguments
from tmass_lake.convert.parameters import resolve_parameters
from tmass_lake.convert.pipelines import ALL, family_names
from tmass_lake.errors import UserError
from tmass_lake.readers import expand_inputs
from tmass_lake.schema import load_schema


def cmd_build(ns: argparse.Namespace) -> int:
    so = storage_options(ns.storage_option)
    overrides = given_parameters(ns)
    if ns.pipeline:
        if ns.table:
            raise UserError("give either a pipeline (family name or file) or --table, not both")
        return _build_lake(ns, so, overrides)
    if not ns.table:
        raise UserError(f"give a pipeline ({', '.join([ALL, *family_names()])}, or a file) or --table NAME")
    if ns.rebuild or ns.tables:
        raise UserError("--rebuild and --tables apply to pipeline builds")
    schema = load_schema(ns.table)
    args = table_arguments(schema, expand_inputs(ns.input, so), ns.output,
                           params=resolve_parameters(overrides, where="command line"), tmp_dir=ns.tmp_dir,
                           indexes=ns.index or (), storage_options=so, resume=ns.resume,
                           progress=not ns.quiet)
    with cluster(ns) as client:
        report = build_table(args, client)
    if report.get("already_complete"):
        print(f"{ns.output} is already complete (same inputs and parameters): nothing to resume")
    print(f"{schema.table}: {report['lines_read']:,} lines read, {report['rows_written']:,} rows "
          f"written in {report['partitions']} partitions, {report['rows_quarantined']:,} quarantined "
          f"({report['seconds']:.1f} s) -> {ns.output}")
    return 0


def _build_lake(ns: argparse.Namespace, so: dict, overrides: dict) -> int:
    if ns.index:
        raise UserError("--index applies to --table builds; pipelines name their indexes")
    args = LakeArguments(
        pipelines=tuple(load_pipelines(ns.pipeline, overrides)), input_roots=tuple(ns.input),
        output=ns.output.rstrip("/"), tmp_dir=ns.tmp_dir, storage_options=so, resume=ns.resume,
        rebuild=tuple(ns.rebuild or ()), tables=tuple(ns.tables) if ns.tables else None,
        progress=not ns.quiet)
    with cluster(ns) as client:
        manifest = build_lake(args, client)
    if manifest["skipped"] and ns.verbose:
        for name, why in sorted(manifest["skipped"].items()):
            print(f"skipped {name}: {why}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("build", help="convert IRSA inputs into HATS: a table, a family, or every family",
                       description="Build one table (--table) or pipelines (a family name such as 6x, "
                                   "'all', or pipeline files) into a lake.")
    b.add_argument("pipeline", nargs="?", metavar="PIPELINE",
                   help=f"{', '.join([ALL, *family_names()])}, a pipeline .toml file or a folder of them")
    b.add_argument("--table", help="single-table build: IRSA table name or a schema YAML file")
    b.add_argument("--input", required=True, nargs="+",
                   help="--table: files, globs or directories; pipelines: input roots (fsspec URLs)")
    b.add_argument("--output", required=True, help="collection (--table) or lake URL")
    b.add_argument("--index", nargs="+", metavar="COLUMN", help="--table: index catalogs on these columns")
    b.add_argument("--tables", nargs="+", metavar="NAME", help="pipelines: build only these tables")
    b.add_argument("--rebuild", nargs="+", metavar="NAME", help="pipelines: rebuild these built tables")
    b.add_argument("--tmp-dir", help="scratch space, any fsspec URL every worker reaches "
                                     "(default: OUTPUT/_build)")
    b.add_argument("--resume", action="store_true", help="continue an interrupted build")
    b.add_argument("--quiet", action="store_true", help="no progress bars")
    add_build_parameters(b)
    add_cluster(b)
    add_storage_option(b)
    b.set_defaults(func=cmd_build)
