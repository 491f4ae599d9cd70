"""IRSA bulk files: gzip'd or plain ``|``-delimited text, ``\\N`` for null, no header, no quotes.

``read_bulk`` streams typed Arrow blocks of bounded size from any fsspec URL. Every data line
ends up either in a block's table or in its quarantine list, with file and line number.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from tmass_lake.errors import InputError
from tmass_lake.readers.blocks import (
    DEFAULT_BLOCK_BYTES,
    BadLine,
    FileDigest,
    ParsedBlock,
    iter_line_blocks,
    open_input,
)
from tmass_lake.readers.values import cast_text_columns, rtrim_strings, validate_rows
from tmass_lake.schema import TableSchema

NULL = "\\N"


def _csv_options(schema: TableSchema, types: dict[str, pa.DataType], bad: list[tuple[int, str]]):
    def on_invalid(row: pacsv.InvalidRow) -> str:
        bad.append((row.number, f"expected {row.expected_columns} fields, found {row.actual_columns}"))
        return "skip"

    return dict(
        read_options=pacsv.ReadOptions(column_names=schema.names, use_threads=False,
                                       block_size=1 << 30),
        parse_options=pacsv.ParseOptions(delimiter="|", quote_char=False, escape_char=False,
                                         ignore_empty_lines=False, invalid_row_handler=on_invalid),
        convert_options=pacsv.ConvertOptions(column_types=types, null_values=[NULL],
                                             strings_can_be_null=True,
                                             quoted_strings_can_be_null=False),
    )


def parse_block(path: str, block: bytes, first_line: int, schema: TableSchema) -> ParsedBlock:
    """Parse whole lines of bulk text into a typed table plus quarantined lines."""
    target = schema.arrow_schema()
    n_lines = block.count(b"\n")
    skipped: list[tuple[int, str]] = []
    reasons: dict[int, str] = {}
    try:
        table = pacsv.read_csv(pa.py_buffer(block), **_csv_options(
            schema, {f.name: f.type for f in target}, skipped))
    except pa.ArrowInvalid:
        # Slow path: some value does not parse. Read as text and find which rows.
        skipped.clear()
        text = pacsv.read_csv(pa.py_buffer(block), **_csv_options(
            schema, {f.name: pa.string() for f in target}, skipped))
        reasons, table = cast_text_columns(text, target)
        if table is None:
            keep = np.ones(text.num_rows, dtype=bool)
            keep[list(reasons)] = False
            _, table = cast_text_columns(text.filter(pa.array(keep)), target)
    rows_at = np.delete(np.arange(n_lines), [n - 1 for n, _ in skipped])
    bad = {int(rows_at[i]): r for i, r in reasons.items()}
    if reasons:
        rows_at = np.delete(rows_at, list(reasons))
    table = rtrim_strings(table)
    invalid = validate_rows(table, schema)
    if invalid:
        keep = np.ones(table.num_rows, dtype=bool)
        keep[list(invalid)] = False
        table = table.filter(pa.array(keep))
        bad.update({int(rows_at[i]): r for i, r in invalid.items()})
    table = table.cast(target)
    bad.update({n - 1: r for n, r in skipped})
    quarantined: list[BadLine] = []
    if bad:
        lines = block.split(b"\n")
        quarantined = [
            BadLine(path, first_line + i, bad[i] if lines[i].strip() else "blank line",
                    lines[i].decode("utf-8", "replace"))
            for i in sorted(bad)
        ]
    return ParsedBlock(path, first_line, n_lines, table, quarantined)


def _check_layout(path: str, block: bytes, schema: TableSchema) -> None:
    """Refuse a file whose first lines do not have the schema's field count at all."""
    head = block.split(b"\n", 5)[:5]
    head = [h for h in head if h]
    n = len(schema.columns)
    counts = [h.count(b"|") + 1 for h in head]
    if head and all(c != n for c in counts):
        raise InputError(
            path,
            f"has {counts[0]} '|'-separated fields where schema {schema.table} has {n}: "
            "wrong delimiter, or the file does not match the schema",
            line=1,
        )


def read_bulk(
    path: str,
    schema: TableSchema,
    *,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    storage_options: dict | None = None,
    digest: FileDigest | None = None,
) -> Iterator[ParsedBlock]:
    """Stream a bulk file as typed blocks (bounded memory: about ``block_bytes`` of text each)."""
    with open_input(path, storage_options, digest) as stream:
        line = 1
        for block in iter_line_blocks(path, stream, block_bytes):
            if line == 1:
                _check_layout(path, block, schema)
            parsed = parse_block(path, block, line, schema)
            line += parsed.n_lines
            yield parsed
        if line == 1:
            raise InputError(path, "is empty: no data lines")
