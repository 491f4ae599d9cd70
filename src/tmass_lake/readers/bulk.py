"""IRSA bulk files: gzip'd or plain ``|``-delimited text, ``\\N`` for null, no header, no quotes.

``read_bulk`` streams typed Arrow blocks of bounded size from any fsspec URL. Every data line
ends up either in a block's table or in its quarantine list, with file and line number.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
from isal import igzip, isal_zlib

from tmass_lake.readers.errors import BadLine, InputError
from tmass_lake.readers.typing import cast_text_columns, rtrim_strings, validate_rows
from tmass_lake.schema import TableSchema
from tmass_lake.storage import StorageError, retrying

DEFAULT_BLOCK_BYTES = 32 << 20
NULL = "\\N"
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass
class ParsedBlock:
    """One block of a file: its typed good rows and its quarantined lines."""

    path: str
    first_line: int
    n_lines: int
    table: pa.Table
    bad: list[BadLine] = field(default_factory=list)


class FileDigest:
    """Size and SHA-256 of a file's bytes as they stream past (no second read for provenance)."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self.bytes = 0

    def update(self, data: bytes) -> None:
        self._sha.update(data)
        self.bytes += len(data)

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()


class _Digesting(io.RawIOBase):
    """A read-only stream feeding every byte read from ``raw`` to a :class:`FileDigest`."""

    def __init__(self, raw: io.IOBase, digest: FileDigest):
        self.raw, self.digest = raw, digest

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # noqa: ANN001 - buffer protocol
        data = self.raw.read(len(b))
        self.digest.update(data)
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self.raw.close()
        super().close()


def open_text(path: str, storage_options: dict | None = None,
              digest: FileDigest | None = None) -> io.BufferedIOBase:
    """Open a (possibly gzip'd, detected by magic bytes) file through fsspec for binary reading.

    With ``digest``, every byte of the file (compressed, as stored) is hashed while it is read.
    """
    try:  # transient object-store errors are retried; what remains is the file's fault
        raw = retrying(lambda: fsspec.open(path, "rb", **(storage_options or {})).open(),
                       what=f"opening {path}")
    except StorageError as e:
        cause = e.__cause__
        remote = f" ({cause})" if "://" in path else ""
        if isinstance(cause, FileNotFoundError):
            raise InputError(path, f"no such file{remote}") from cause
        if isinstance(cause, PermissionError):
            raise InputError(path, f"cannot be read: {cause}") from cause
        if isinstance(cause, IsADirectoryError):
            raise InputError(path, "is a directory, not a file") from cause
        raise InputError(path, f"cannot be opened: {cause!r}") from cause
    head = raw.read(2)
    raw.seek(0)
    if digest is not None:
        raw = io.BufferedReader(_Digesting(raw, digest), buffer_size=1 << 20)
    # ISA-L's gzip decoder: the same stream, ~2.3x faster than zlib's on IRSA's files.
    return igzip.IGzipFile(fileobj=raw, mode="rb") if head == _GZIP_MAGIC else raw


def iter_line_blocks(path: str, stream: io.BufferedIOBase, block_bytes: int) -> Iterator[bytes]:
    """Chunks of whole lines (each ending in ``\\n``) of about ``block_bytes``."""
    rest = b""
    lines_done = 0
    while True:
        try:
            chunk = stream.read(block_bytes)
        except (EOFError, gzip.BadGzipFile, zlib.error, isal_zlib.error, OSError) as e:
            raise InputError(path, f"corrupt or truncated gzip stream after line {lines_done}: {e}") from e
        if not chunk:
            break
        data = rest + chunk
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            rest = data
            continue
        rest = data[cut:]
        block = data[:cut]
        lines_done += block.count(b"\n")
        yield block
    if rest:
        yield rest + b"\n"


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
    with open_text(path, storage_options, digest) as stream:
        line = 1
        for block in iter_line_blocks(path, stream, block_bytes):
            if line == 1:
                _check_layout(path, block, schema)
            parsed = parse_block(path, block, line, schema)
            line += parsed.n_lines
            yield parsed
        if line == 1:
            raise InputError(path, "is empty: no data lines")
