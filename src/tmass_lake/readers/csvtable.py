"""Delimited text with a header line (CSV, PSV, TSV), as exports and TAP clients write it.

The delimiter is the one the header line uses most (``,``, ``|`` or tab); ``,`` and tab files
may quote values (``"``). Empty fields, ``\\N``, ``null`` and ``NULL`` are null. The header's
names are matched to the table schema (:mod:`tmass_lake.readers.matching`); matched columns are
parsed as the schema types them, the others as the first rows suggest (pyarrow's inference).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from tmass_lake.errors import InputError
from tmass_lake.readers.blocks import (
    DEFAULT_BLOCK_BYTES,
    DEFAULT_MAX_LINE_BYTES,
    FileDigest,
    ParsedBlock,
    iter_line_blocks,
    line_text,
    open_input,
    quarantine_long_lines,
)
from tmass_lake.readers.bulk import NULL, parse_delimited
from tmass_lake.readers.matching import InputColumn, match_columns, table_schema, typed_block
from tmass_lake.schema import TableSchema, arrow_name

DELIMITERS = (",", "|", "\t")
NULLS = ("", NULL, "null", "NULL")
SAMPLE_BYTES = 1 << 20
"""Rows an input-only column's type is inferred from (whole lines up to this many bytes)."""
_BOM = b"\xef\xbb\xbf"


def header_delimiter(header: str) -> str:
    """The delimiter a header line uses most (``,`` on a tie)."""
    return max(DELIMITERS, key=lambda d: (header.count(d), -DELIMITERS.index(d)))


def split_header(header: str, delimiter: str) -> list[str]:
    return [n.strip().strip('"').strip() for n in header.split(delimiter)]


def _inferred(sample: bytes, names: list[str], wanted: list[str], delimiter: str,
              quote: str | bool) -> dict[str, pa.DataType]:
    """Types pyarrow infers for the ``wanted`` columns from ``sample`` (text where it cannot say)."""
    if not wanted or not sample:
        return {}
    table = pacsv.read_csv(
        pa.py_buffer(sample),
        read_options=pacsv.ReadOptions(column_names=names, use_threads=False),
        parse_options=pacsv.ParseOptions(delimiter=delimiter, quote_char=quote,
                                         invalid_row_handler=lambda _row: "skip"),
        convert_options=pacsv.ConvertOptions(include_columns=wanted, null_values=list(NULLS),
                                             strings_can_be_null=True))
    return {f.name: f.type if arrow_name(f.type) else pa.string() for f in table.schema}


def read_csv_table(
    path: str,
    schema: TableSchema | None = None,
    *,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    storage_options: dict | None = None,
    digest: FileDigest | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> Iterator[ParsedBlock]:
    """Stream a headed delimited file as typed blocks; bad lines quarantined with their number."""
    with open_input(path, storage_options, digest) as stream:
        long_lines: dict = {}  # lines over the limit: quarantined by their first bytes and length
        blocks = iter_line_blocks(path, stream, block_bytes, storage_options, max_line_bytes=max_line_bytes,
                                  long_lines=long_lines)
        first = next(blocks, b"").removeprefix(_BOM)
        if not first.strip():
            raise InputError(path, "is empty: no header line")
        cut = first.index(b"\n") + 1
        header = first[:cut].decode("utf-8", "replace").rstrip("\r\n")
        delimiter = header_delimiter(header)
        quote: str | bool = False if delimiter == "|" else '"'
        names = split_header(header, delimiter)
        if not all(names):
            raise InputError(path, f"header line has an empty column name: {header[:80]!r}", line=1)
        data = first[cut:]
        guess = match_columns(path, "csv", [InputColumn(n, pa.string()) for n in names], schema)
        sample = data[: data.rfind(b"\n", 0, SAMPLE_BYTES) + 1] or data
        types = _inferred(sample, names, [c.name for c in guess.extra], delimiter, quote)
        layout = match_columns(path, "csv", [InputColumn(n, types.get(n, pa.string())) for n in names],
                               schema)
        read_types = layout.read_types(table_schema(layout, schema))
        line = 2
        for block in [data, *blocks] if data else blocks:
            table, rows_at, bad = parse_delimited(block, read_types, delimiter=delimiter, quote_char=quote,
                                                  null_values=NULLS)
            lines = block.split(b"\n")
            bad.update({i: "blank line" for i in bad if not lines[i].strip()})
            parsed = quarantine_long_lines(
                typed_block(path, line, block.count(b"\n"), table, rows_at, bad, layout, schema,
                            lambda i, lines=lines: line_text(lines[i])), long_lines)
            line += parsed.n_lines
            yield parsed
        if line == 2:
            yield typed_block(path, line, 0, read_types.empty_table(), np.arange(0), {}, layout, schema, str)
