"""``tmass-lake inspect FILE...``: what an input looks like and how it lines up with a schema.

Headerless bulk files are profiled position by position and aligned with the schema
(:mod:`tmass_lake.readers.diagnose`); ``--write-schema`` writes the proposed layout as a schema
file for ``build --table FILE.yaml``. Inputs with a header (IPAC, VOTable, CSV, Parquet) are
matched by name: the command says which columns matched, which are the input's own and which
are missing.
"""

from __future__ import annotations

import argparse

import yaml

from tmass_lake.cli.options import check_urls, storage_options
from tmass_lake.errors import InputError, UserError
from tmass_lake.readers import detect_format, expand_inputs, read_input
from tmass_lake.readers.diagnose import diagnose, format_diagnosis, proposed_schema
from tmass_lake.schema import load_schema
from tmass_lake.storage import claim_output, filesystem, write_text


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
    check_urls([*ns.files, *([ns.write_schema] if ns.write_schema else [])])
    schema = load_schema(ns.table) if ns.table else None
    bulk: list[str] = []
    inputs = expand_inputs(ns.files, so)
    if ns.write_schema:
        check_schema_output(ns.write_schema, inputs, so, ns.overwrite)
    for path in inputs:
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
        fs, out = filesystem(ns.write_schema, so)
        write_text(fs, out, text)
        print(f"\nproposed schema written to {ns.write_schema} (build with --table {ns.write_schema})")
    return 0


def check_schema_output(output: str, inputs: list[str], so: dict, overwrite: bool) -> None:
    """Refuse a ``--write-schema`` target that is one of the inputs, or exists without ``--overwrite``."""
    fs, out = filesystem(output, so)
    for path in inputs:
        in_fs, in_path = filesystem(path, so)
        if type(in_fs) is type(fs) and in_fs._strip_protocol(in_path) == fs._strip_protocol(out):
            raise UserError(f"--write-schema {output} is one of the inputs: refused (even with "
                            "--overwrite); pick another file")
    claim_output(fs, out, overwrite=overwrite, command="inspect", directory=False, check_only=True)

