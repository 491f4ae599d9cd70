"""IPAC tables, as IRSA's Gator and TAP services hand them out.

``\\keyword = value`` and ``\\ comment`` lines (Gator describes each column in a pair:
``\\ name (unit)`` then ``\\ ___ description``), then ``|``-bounded header rows (names, then
types, units and nulls when present), then fixed-width data rows aligned under the header.
The header's names are matched to the table schema (:mod:`tmass_lake.readers.matching`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tmass_lake.errors import InputError
from tmass_lake.readers.blocks import (
    DEFAULT_BLOCK_BYTES,
    DEFAULT_MAX_LINE_BYTES,
    FileDigest,
    ParsedBlock,
    blank_lines,
    invalid_utf8_lines,
    iter_line_blocks,
    line_text,
    open_input,
    quarantine_long_lines,
)
from tmass_lake.readers.matching import FileLayout, InputColumn, match_columns, typed_block
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

    def descriptions(self) -> dict[str, str]:
        """Column descriptions from Gator's comment pairs (``\\ name (unit)``, ``\\ ___ text``)."""
        out: dict[str, str] = {}
        for head, body in zip(self.comments, self.comments[1:], strict=False):
            m, d = re.fullmatch(r"(\w+)(?:\s*\(.*\))?", head), re.fullmatch(r"_{2,}\s*(.*)", body)
            if m and d:
                out.setdefault(m.group(1).lower(), d.group(1).strip())
        return out

    def input_columns(self) -> list[InputColumn]:
        """The header's columns, typed by its type row (text where it has none)."""
        notes = self.descriptions()
        return [InputColumn(name, IPAC_TYPES.get(typ.lower(), pa.string()), typ, unit or None, None,
                            notes.get(name, ""))
                for name, typ, unit in zip(self.names, self.types, self.units, strict=True)]


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


def read_ipac(
    path: str,
    schema: TableSchema | None = None,
    *,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    storage_options: dict | None = None,
    digest: FileDigest | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> Iterator[ParsedBlock]:
    """Stream an IPAC table as typed blocks; bad data lines are quarantined with their line number.

    Columns are matched to ``schema`` by name or alias; without a schema, every column is kept
    with its IPAC type. At least one block (maybe empty) comes out, carrying the file's layout.
    """
    with open_input(path, storage_options, digest) as stream:
        long_lines: dict = {}  # lines over the limit: quarantined by their first bytes and length
        blocks = iter_line_blocks(path, stream, block_bytes, storage_options, max_line_bytes=max_line_bytes,
                                  long_lines=long_lines)
        first = next(blocks, b"")
        head_lines = first.decode("utf-8", "replace").split("\n")
        header = parse_header(path, head_lines)
        layout = match_columns(path, "ipac", header.input_columns(), schema)
        # Re-cut the first block after the header so data blocks start at a data line.
        data_start = sum(len(x) + 1 for x in first.split(b"\n")[: header.header_lines])
        line = header.header_lines + 1
        for block in [first[data_start:], *blocks] if first[data_start:] else blocks:
            parsed = quarantine_long_lines(_parse_fixed_width(path, block, line, header, layout, schema),
                                           long_lines)
            line += parsed.n_lines
            yield parsed
        if line == header.header_lines + 1:  # no data line: still say what the file holds
            yield _parse_fixed_width(path, b"", line, header, layout, schema)


def _parse_fixed_width(path: str, block: bytes, first_line: int, header: IpacHeader, layout: FileLayout,
                       schema: TableSchema | None) -> ParsedBlock:
    raw = block.split(b"\n")[:-1]
    bad = invalid_utf8_lines(block)
    lines = pa.array(blank_lines(block, bad).split(b"\n")[:-1] if bad else raw, pa.binary()).cast(pa.string())
    columns = {}
    for name, (a, b), null in zip(header.names, header.spans, header.nulls, strict=True):
        cell = pc.utf8_trim_whitespace(pc.utf8_slice_codeunits(lines, a, b))
        is_null = pc.or_(pc.equal(cell, null or "null"), pc.equal(cell, ""))
        columns[name] = pc.if_else(is_null, pa.scalar(None, pa.string()), cell)
    text = pa.table(columns) if columns else pa.table({})
    for i, r in enumerate(raw):
        if not r.strip():
            bad.setdefault(i, "blank line")
    short = pc.less(pc.utf8_length(pc.utf8_rtrim_whitespace(lines)), header.spans[-1][0])
    for i in np.flatnonzero(short.to_numpy(zero_copy_only=False)):
        bad.setdefault(int(i), "line shorter than the header: missing columns")
    rows_at = np.arange(len(raw))
    if bad:
        keep = np.ones(len(raw), bool)
        keep[list(bad)] = False
        text = text.filter(pa.array(keep))
        rows_at = rows_at[keep]
    return typed_block(path, first_line, len(raw), text, rows_at, bad, layout, schema,
                       lambda i: line_text(raw[i]))
