"""``tmass-lake inspect FILE...``: what an input looks like and how it lines up with a schema.

Headerless bulk files are profiled position by position and aligned with the schema
(:mod:`tmass_lake.readers.diagnose`); ``--write-schema`` writes the proposed layout as a schema
file for ``build --table FILE.yaml``. Inputs with a header (IPAC, VOTable, CSV, Parquet) are
matched by name: the command says which columns matched, which are the input's own and which
are missing.
"""

from __future__ import annotations

import argparse

import fsspec
import yaml

from tmass_lake.cli.options import add_storage_option, storage_options
from tmass_lake.errors import InputError, UserError
from tmass_lake.readers import detect_format, expand_inputs, read_input
from tmass_lake.readers.diagnose import SAMPLE_LINES, diagnose, format_diagnosis, proposed_schema
from tmass_lake.schema import load_schema


def _headed(path: str, description: str, schema, so: dict) -> str:
    head = f"{path}: {description}; its header names the columns"
    if schema is None:
        return head + " (give --table to match them to a schema)"
    try:
        layout = next(read_input(path, schema, storage_options=so)).layout
    except InputError as e:
        return f"{head}\n    {e.message}"
    aliased = [f"{c} as {given}" for c, given in layout.matched.items() if c != given]
    extra = [c.name + (f" [{c.unit}]" if c.unit else "") for c in layout.extra]
    return (f"{head}\n    {len(layout.matched)} of {len(schema.columns)} {schema.table} columns matched"
            + (f" ({', '.join(aliased)})" if aliased else "")
            + f"\n    input-only: {', '.join(extra) or '-'}"
            + f"\n    documented but absent: {', '.join(layout.missing) or '-'}")


def cmd_inspect(ns: argparse.Namespace) -> int:
    so = storage_options(ns.storage_option)
    schema = load_schema(ns.table) if ns.table else None
    bulk: list[str] = []
    for path in expand_inputs(ns.files, so):
        found = detect_format(path, so, schema)
        if found.format == "bulk":
            bulk.append(path)
        elif found.format:
            print(_headed(path, found.description, schema, so))
        else:
            print(f"{path}: {found.description}")
    if not bulk:
        if ns.write_schema:
            raise UserError("--write-schema needs a bulk (headerless) file: the others name their columns")
        return 0
    d = diagnose(bulk, schema, sample=ns.sample, storage_options=so)
    print(format_diagnosis(d))
    if ns.write_schema:
        doc = proposed_schema(d, schema.table if schema else None)
        text = (f"# {doc['table']}: layout proposed by tmass-lake inspect; review before use.\n"
                + yaml.safe_dump(doc, sort_keys=False, width=110, allow_unicode=True))
        with fsspec.open(ns.write_schema, "w", **so) as f:
            f.write(text)
        print(f"\nproposed schema written to {ns.write_schema} (build with --table {ns.write_schema})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="profile input files and line them up with a schema",
                       description="Report what input files look like: for headerless bulk files the "
                                   "field counts and, per position, type, range and a sample, lined up "
                                   "with a schema; for files with a header, how their names match it.")
    p.add_argument("files", nargs="+", metavar="FILE", help="input files, globs or directories (fsspec URLs)")
    p.add_argument("--table", help="IRSA table name or schema YAML file to line the files up with")
    p.add_argument("--write-schema", metavar="OUT.yaml", help="write the proposed layout as a schema file")
    p.add_argument("--sample", type=int, default=SAMPLE_LINES,
                   help=f"lines read from each bulk file (default {SAMPLE_LINES:,})")
    add_storage_option(p)
    p.set_defaults(func=cmd_inspect)
