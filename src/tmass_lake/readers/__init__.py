"""Sources: input files (IRSA bulk text, IPAC tables, VOTables, headed CSV, Parquet) and TAP
chunks into typed Arrow blocks plus a quarantine.

Every reader yields :class:`ParsedBlock` objects: the block's good rows typed by the table
schema, and its bad lines with file (or chunk), line (or row) and reason. Readers of inputs with
a header match its names to the schema (:mod:`~tmass_lake.readers.matching`) and say how in
``block.layout``. :func:`read_input` picks the reader: a ``tap+http(s)://`` chunk
(:mod:`~tmass_lake.readers.tap`), or a file format (``auto``: by what the file looks like).
"""

from __future__ import annotations

from collections.abc import Iterator

from tmass_lake.errors import InputError
from tmass_lake.readers.blocks import (
    DEFAULT_BLOCK_BYTES,
    BadLine,
    FileDigest,
    ParsedBlock,
    quarantine_table,
    quarantined_lines,
)
from tmass_lake.readers.bulk import read_bulk
from tmass_lake.readers.csvtable import read_csv_table
from tmass_lake.readers.detect import Detected, detect_format
from tmass_lake.readers.inputs import expand_inputs, inputs_under_root
from tmass_lake.readers.ipac import read_ipac
from tmass_lake.readers.matching import FileLayout, conform, unify
from tmass_lake.readers.parquet import read_parquet
from tmass_lake.readers.tap import TapOptions, is_tap, read_chunk
from tmass_lake.readers.votable import parse_votable, read_votable
from tmass_lake.schema import TableSchema

AUTO = "auto"
READERS = {"bulk": read_bulk, "ipac": read_ipac, "votable": read_votable, "csv": read_csv_table,
           "parquet": read_parquet}
FORMATS = (AUTO, *READERS)


def read_input(path: str, schema: TableSchema, *, input_format: str = AUTO,
               block_bytes: int = DEFAULT_BLOCK_BYTES, storage_options: dict | None = None,
               digest: FileDigest | None = None, tap: TapOptions | None = None,
               max_line_bytes: int | None = None) -> Iterator[ParsedBlock]:
    """Stream one input as typed blocks with the reader of ``input_format`` (hashing it if asked).

    A TAP chunk (``tap+http(s)://...``) is queried on its service, as ``tap`` says. ``auto``
    reads a file as what it looks like; a format given that the file plainly is not is an
    :class:`InputError` saying what it looks like. ``max_line_bytes``: a longer text line is
    quarantined by its first bytes and length (default ``DEFAULT_MAX_LINE_BYTES``, 16 MiB).
    """
    if is_tap(path):
        return read_chunk(path, schema, options=tap, digest=digest)
    if input_format not in FORMATS:
        raise ValueError(f"unknown input format {input_format!r} (known: {', '.join(FORMATS)})")
    found = detect_format(path, storage_options, schema)
    if found.format is None:
        raise InputError(path, f"looks like {found.description}: not an input tmass-lake reads "
                               f"({', '.join(READERS)})")
    if input_format not in (AUTO, found.format):
        raise InputError(path, f"was given as {input_format} but looks like {found.description}: "
                               f"leave the format out to read it as {found.format}")
    fmt = found.format if input_format == AUTO else input_format
    bound = {"max_line_bytes": max_line_bytes} if max_line_bytes and fmt in ("bulk", "csv", "ipac") else {}
    return READERS[fmt](path, schema, block_bytes=block_bytes, storage_options=storage_options, digest=digest,
                        **bound)


__all__ = ["AUTO", "FORMATS", "BadLine", "Detected", "FileDigest", "FileLayout", "ParsedBlock", "TapOptions",
           "conform", "detect_format", "expand_inputs", "inputs_under_root", "is_tap", "parse_votable",
           "quarantine_table", "quarantined_lines", "read_bulk", "read_csv_table", "read_input", "read_ipac",
           "read_parquet", "read_votable", "unify"]
