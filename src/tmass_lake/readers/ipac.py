"""IPAC tables, as IRSA's Gator and TAP services hand them out.

``\\keyword = value`` and ``\\ comment`` lines, then ``|``-bounded header rows (names, then
types, units and nulls when present), then fixed-width data rows aligned under the header.
Mapped onto a table schema when one is given: its columns take the schema's types and
metadata; columns the schema does not know keep the IPAC type.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tmass_lake.errors import InputError
from tmass_lake.readers.blocks import (
    DEFAULT_BLOCK_BYTES,
    BadLine,
    FileDigest,
    ParsedBlock,
    iter_line_blocks,
    open_input,
)
from tmass_lake.readers.values import cast_text_columns, validate_rows
from tmass_lake.schema import TableSchema

IPAC_TYPES = {
    "double": pa.float64(), "d": pa.float64(), "float": pa.float64(), "real": pa.float32(),
    "r": pa.float32(), "f": pa.float64(), "int": pa.int64(), "i": pa.int64(),
    "integer": pa.int64(), "long": pa.int64(), "l": pa.int64(), "char": pa.string(),
    "c": pa.string(), "date": pa.string(),
}


@dataclass
class IpacHeader:
    """What an IPAC table's header says."""

    keywords: dict[str, str]
    names: list[str]
    spans: list[tuple[int, int]]
    types: list[str]
    units: list[str]
    nulls: list[str]
    header_lines: int
    comments: list[str] = field(default_factory=list)


def _cells(line: str, pipes: list[int]) -> list[str]:
    return [line[a + 1 : b].strip() for a, b in zip(pipes[:-1], pipes[1:], strict=True)]


def parse_header(path: str, lines: list[str]) -> IpacHeader:
    """Parse keyword, comment and ``|`` header lines at the start of an IPAC table."""
    keywords: dict[str, str] = {}
    comments: list[str] = []
    rows: list[str] = []
    n = 0
    for n, line in enumerate(lines, start=1):  # noqa: B007
        if line.startswith("\\"):
            body = line[1:]
            if "=" in body and not body.startswith(" "):
                k, v = body.split("=", 1)
                keywords.setdefault(k.strip(), v.strip().strip("'\""))
            else:
                comments.append(body.strip())
        elif line.startswith("|"):
            rows.append(line.rstrip("\n"))
        elif rows:
            n -= 1
            break
        elif line.strip():
            raise InputError(path, "not an IPAC table: data before the '|' header", line=n)
    if not rows:
        raise InputError(path, "not an IPAC table: no '|' header row")
    pipes = [i for i, ch in enumerate(rows[0]) if ch == "|"]
    names = [c.lower() for c in _cells(rows[0], pipes)]
    extra = [_cells(r.ljust(len(rows[0])), pipes) for r in rows[1:4]]
    blank = [""] * len(names)
    return IpacHeader(
        keywords=keywords,
        names=names,
        spans=[(a + 1, b + 1) for a, b in zip(pipes[:-1], pipes[1:], strict=True)],
        types=extra[0] if len(extra) > 0 else blank,
        units=extra[1] if len(extra) > 1 else blank,
        nulls=extra[2] if len(extra) > 2 else ["null"] * len(names),
        header_lines=n,
        comments=comments,
    )


def _target_schema(header: IpacHeader, schema: TableSchema | None) -> pa.Schema:
    fields = []
    known = {c.name: c for c in schema.columns} if schema else {}
    for name, typ in zip(header.names, header.types, strict=True):
        if name in known:
            fields.append(known[name].field().with_nullable(True))
        else:
            fields.append(pa.field(name, IPAC_TYPES.get(typ.lower(), pa.string())))
    return pa.schema(fields)


def read_ipac(
    path: str,
    schema: TableSchema | None = None,
    *,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    storage_options: dict | None = None,
    digest: FileDigest | None = None,
) -> Iterator[ParsedBlock]:
    """Stream an IPAC table as typed blocks; bad data lines are quarantined with their line number.

    With a schema, columns it names are typed and described by it, in the file's order.
    """
    with open_input(path, storage_options, digest) as stream:
        blocks = iter_line_blocks(path, stream, block_bytes)
        first = next(blocks, b"")
        head_lines = first.decode("utf-8", "replace").split("\n")
        header = parse_header(path, head_lines)
        target = _target_schema(header, schema)
        # Re-cut the first block after the header so data blocks start at a data line.
        data_start = sum(len(x) + 1 for x in head_lines[: header.header_lines])
        first_data = first[data_start:]
        line = header.header_lines + 1

        def data_blocks() -> Iterator[bytes]:
            if first_data:
                yield first_data
            yield from blocks

        for block in data_blocks():
            parsed = _parse_fixed_width(path, block, line, header, target, schema)
            line += parsed.n_lines
            yield parsed


def _parse_fixed_width(path: str, block: bytes, first_line: int, header: IpacHeader,
                       target: pa.Schema, schema: TableSchema | None) -> ParsedBlock:
    raw = block.split(b"\n")[:-1]
    lines = pa.array(raw, pa.binary()).cast(pa.string())
    columns = {}
    for name, (a, b), null in zip(header.names, header.spans, header.nulls, strict=True):
        cell = pc.utf8_trim_whitespace(pc.utf8_slice_codeunits(lines, a, b))
        is_null = pc.or_(pc.equal(cell, null or "null"), pc.equal(cell, ""))
        columns[name] = pc.if_else(is_null, pa.scalar(None, pa.string()), cell)
    text = pa.table(columns)
    bad = {i: "blank line" for i, r in enumerate(raw) if not r.strip()}
    short = pc.less(pc.utf8_length(pc.utf8_rtrim_whitespace(lines)), header.spans[-1][0])
    for i in np.flatnonzero(short.to_numpy(zero_copy_only=False)):
        bad.setdefault(int(i), "line shorter than the header: missing columns")
    rows_at = np.arange(len(raw))
    if bad:
        keep = np.ones(len(raw), bool)
        keep[list(bad)] = False
        text = text.filter(pa.array(keep))
        rows_at = rows_at[keep]
    reasons, table = cast_text_columns(text, target)
    if table is None:
        keep = np.ones(text.num_rows, bool)
        keep[list(reasons)] = False
        _, table = cast_text_columns(text.filter(pa.array(keep)), target)
        bad.update({int(rows_at[i]): r for i, r in reasons.items()})
        rows_at = rows_at[keep]
    if schema is not None:
        invalid = validate_rows(table, _present(schema, table))
        if invalid:
            keep = np.ones(table.num_rows, bool)
            keep[list(invalid)] = False
            table = table.filter(pa.array(keep))
            bad.update({int(rows_at[i]): r for i, r in invalid.items()})
    table = table.cast(target)
    quarantined = [BadLine(path, first_line + i, bad[i], raw[i].decode("utf-8", "replace"))
                   for i in sorted(bad)]
    return ParsedBlock(path, first_line, len(raw), table, quarantined)


def _present(schema: TableSchema, table: pa.Table) -> TableSchema:
    """The schema restricted to the columns a (Gator subset) table actually has."""
    cols = tuple(c for c in schema.columns if c.name in table.column_names)
    positional = schema.ra_column in table.column_names and schema.dec_column in table.column_names
    return replace(schema, columns=cols,
                   ra_column=schema.ra_column if positional else None,
                   dec_column=schema.dec_column if positional else None)
