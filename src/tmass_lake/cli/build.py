"""``tmass-lake build``: one table (``--table``), a family (``6x``), every family (``all``), or
pipeline files, into a lake on Dask (flags: :func:`tmass_lake.cli.parsers.register_build`)."""

from __future__ import annotations

import argparse
import sys

from tmass_lake.cli.compute import cache_alignment_kernels, cluster
from tmass_lake.cli.options import check_urls, data_bytes, storage_options
from tmass_lake.convert import LakeArguments, build_lake, build_table, load_pipelines, table_arguments
from tmass_lake.convert.parameters import BuildParameters, resolve_parameters
from tmass_lake.convert.pipelines import ALL, family_names
from tmass_lake.convert.writer import write_catalog_summaries
from tmass_lake.errors import InputError, UserError, did_you_mean
from tmass_lake.readers import expand_inputs, is_tap
from tmass_lake.schema import load_schema
from tmass_lake.storage import filesystem, is_local


def given_parameters(ns: argparse.Namespace) -> dict:
    """The build parameters the command line gave explicitly."""
    names = {f.name for f in BuildParameters.__dataclass_fields__.values()}
    return {k[len("param_"):]: v for k, v in vars(ns).items()
            if k.startswith("param_") and k[len("param_"):] in names and v is not None}


def table_indexes(ns: argparse.Namespace, schema) -> tuple[str, ...]:
    """``--index`` columns (checked against the schema), else the table's key as a lake build does."""
    if ns.no_index:
        if ns.index:
            raise UserError("give --index or --no-index, not both")
        return ()
    if ns.index:
        for column in ns.index:
            if column not in schema.names:
                raise UserError(f"--index {column}: not a column of {schema.table}"
                                + did_you_mean(column, schema.names))
        if not schema.positional:
            raise UserError(f"--index: {schema.table} has no positions, so no HATS catalog to index")
        return tuple(ns.index)
    return (schema.key_column,) if schema.positional and schema.key_column else ()


def cmd_build(ns: argparse.Namespace) -> int:
    so = storage_options(ns.storage_option)
    check_urls([*ns.input, ns.output, *([ns.tmp_dir] if ns.tmp_dir else [])])
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
    inputs = expand_inputs(ns.input, so)
    args = table_arguments(schema, inputs, ns.output,
                           params=resolve_parameters(overrides, where="command line"), tmp_dir=ns.tmp_dir,
                           indexes=table_indexes(ns, schema), storage_options=so, resume=ns.resume,
                           progress=not ns.quiet)
    size = None if any(is_tap(u) for u in inputs) else data_bytes(inputs, so)
    cache_alignment_kernels()
    with cluster(ns, size) as client:
        report = build_table(args, client)
    if ns.catalog_summaries and schema.positional:
        write_catalog_summaries(ns.output, so)
    if report.get("already_complete"):
        print(f"{ns.output} is already complete (same inputs and parameters): nothing to resume")
    print(f"{schema.table}: {report['lines_read']:,} lines read, {report['rows_written']:,} rows "
          f"written in {report['partitions']} partitions, {report['rows_quarantined']:,} quarantined "
          f"({report['seconds']:.1f} s) -> {ns.output}")
    return 0


def _build_lake(ns: argparse.Namespace, so: dict, overrides: dict) -> int:
    if ns.index or ns.no_index:
        raise UserError("--index/--no-index apply to --table builds; pipelines name their indexes")
    args = LakeArguments(
        pipelines=tuple(load_pipelines(ns.pipeline, overrides)), input_roots=tuple(ns.input),
        output=ns.output.rstrip("/"), tmp_dir=ns.tmp_dir, storage_options=so, resume=ns.resume,
        rebuild=tuple(ns.rebuild or ()), tables=tuple(ns.tables) if ns.tables else None,
        progress=not ns.quiet, catalog_summaries=ns.catalog_summaries)
    for root in ns.input:  # before the cluster starts: a mistyped root is one line, at once
        if is_tap(root):
            continue
        fs, path = filesystem(root, so)
        if is_local(fs) and not fs.isdir(path):  # (an object-store prefix may be empty)
            raise InputError(root, "no such input root (a directory holding irsa/<table>/...)")
    size = None if any(is_tap(u) for u in ns.input) else data_bytes(ns.input, so)
    cache_alignment_kernels()
    with cluster(ns, size) as client:
        manifest = build_lake(args, client)
    if manifest["skipped"] and ns.verbose:
        for name, why in sorted(manifest["skipped"].items()):
            print(f"skipped {name}: {why}", file=sys.stderr)
    return 0
