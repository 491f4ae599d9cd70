"""Sources: input files (IRSA bulk text, IPAC tables) and TAP chunks into typed Arrow blocks plus a
quarantine.

Every reader yields :class:`ParsedBlock` objects: the block's good rows typed by the table
schema, and its bad lines with file (or chunk), line (or row) and reason. :func:`read_input`
picks the reader: a ``tap+http(s)://`` chunk (:mod:`~tmass_lake.readers.tap`) or a file format.
"""

from __future__ import annotations

from collections.abc import Iterator

from tmass_lake.readers.blocks import (
    DEFAULT_BLOCK_BYTES,
    BadLine,
    FileDigest,
    ParsedBlock,
    quarantine_table,
)
from tmass_lake.readers.bulk import read_bulk
from tmass_lake.readers.inputs import expand_inputs, inputs_under_root
from tmass_lake.readers.ipac import read_ipac
from tmass_lake.readers.tap import TapOptions, is_tap, read_chunk
from tmass_lake.schema import TableSchema

READERS = {"bulk": read_bulk, "ipac": read_ipac}
FORMATS = tuple(READERS)


def read_input(path: str, schema: TableSchema, *, input_format: str = "bulk",
               block_bytes: int = DEFAULT_BLOCK_BYTES, storage_options: dict | None = None,
               digest: FileDigest | None = None, tap: TapOptions | None = None) -> Iterator[ParsedBlock]:
    """Stream one input as typed blocks with the reader of ``input_format`` (hashing it if asked).

    A TAP chunk (``tap+http(s)://...``) is queried on its service, as ``tap`` says.
    """
    if is_tap(path):
        return read_chunk(path, schema, options=tap, digest=digest)
    if input_format not in READERS:
        raise ValueError(f"unknown input format {input_format!r} (known: {', '.join(FORMATS)})")
    return READERS[input_format](path, schema, block_bytes=block_bytes, storage_options=storage_options,
                                 digest=digest)


__all__ = ["FORMATS", "BadLine", "FileDigest", "ParsedBlock", "TapOptions", "expand_inputs",
           "inputs_under_root", "is_tap", "quarantine_table", "read_bulk", "read_input", "read_ipac"]
