"""Parquet files (an earlier export, a colleague's conversion, a lake's own tables).

The file's Arrow schema gives the columns: names (matched to the table schema by
:mod:`tmass_lake.readers.matching`), types, and ``unit``/``ucd``/``description`` field metadata
where the writer kept them (tmass-lake and hats do). Row groups are read in batches of about
the block size; in the quarantine, ``line`` is the row number (1 = first row).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tmass_lake.errors import InputError
from tmass_lake.readers.blocks import DEFAULT_BLOCK_BYTES, FileDigest, ParsedBlock, open_raw
from tmass_lake.readers.matching import InputColumn, match_columns, row_text, typed_block
from tmass_lake.schema import TableSchema, arrow_name

DERIVED_COLUMNS = ("_healpix_29", "__index_level_0__")
"""Columns a writer derived (hats' spatial index, pandas' index): recomputed or meaningless, not read."""


def _storable(t: pa.DataType) -> pa.DataType:
    """The schema-file type an input type is kept as (unsigned and wide strings to their nearest)."""
    if arrow_name(t):
        return t
    if pa.types.is_dictionary(t):
        return _storable(t.value_type)
    if pa.types.is_unsigned_integer(t):
        return {8: pa.int16(), 16: pa.int32()}.get(t.bit_width, pa.int64())
    if pa.types.is_floating(t):
        return pa.float64()
    return pa.string()


def _input_columns(path: str, schema: pa.Schema) -> list[InputColumn]:
    out = []
    for f in schema:
        if f.name in DERIVED_COLUMNS:
            continue
        if pa.types.is_nested(f.type):
            raise InputError(path, f"column {f.name} is a nested type ({f.type}): not read")
        meta = {k.decode(): v.decode() for k, v in (f.metadata or {}).items()}
        out.append(InputColumn(f.name, _storable(f.type), str(f.type), meta.get("unit"), meta.get("ucd"),
                               meta.get("description", "")))
    return out


def read_parquet(
    path: str,
    schema: TableSchema | None = None,
    *,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    storage_options: dict | None = None,
    digest: FileDigest | None = None,
) -> Iterator[ParsedBlock]:
    """Stream a Parquet file as typed blocks on ``schema``."""
    if digest is not None:  # Parquet is read by ranges: hash the file as stored, in one pass first
        with open_raw(path, storage_options) as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    with open_raw(path, storage_options) as f:
        try:
            pf = pq.ParquetFile(f)
        except (pa.ArrowInvalid, OSError) as e:
            raise InputError(path, f"cannot be read as Parquet: {e}") from e
        columns = _input_columns(path, pf.schema_arrow)
        layout = match_columns(path, "parquet", columns, schema)
        meta = pf.metadata
        row_bytes = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)) / max(
            meta.num_rows, 1)
        line = 1
        names = [c.name for c in columns]
        for batch in pf.iter_batches(batch_size=max(1024, int(block_bytes / max(row_bytes, 1.0))),
                                     columns=names):
            table = pa.Table.from_batches([batch])
            n = table.num_rows
            yield typed_block(path, line, n, table, np.arange(n), {}, layout, schema, row_text(table))
            line += n
        if line == 1:
            empty = pa.schema([pa.field(c.name, c.type) for c in columns]).empty_table()
            yield typed_block(path, 1, 0, empty, np.arange(0), {}, layout, schema, str)
