"""Text columns to typed Arrow columns, with every unparsable or invalid value traced to its line.

Shared by the bulk and IPAC readers: the fast path casts whole columns at C speed; only a column
that fails is bisected to find the offending rows, so clean input never pays for bad input.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tmass_lake.schema import TableSchema


def _failing_indices(arr: pa.Array, target: pa.DataType, offset: int = 0) -> list[int]:
    """Positions in ``arr`` whose value cannot be cast to ``target`` (bisection, O(k log n) casts)."""
    try:
        pc.cast(arr, target)
        return []
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        if len(arr) == 1:
            return [offset]
    half = len(arr) // 2
    return _failing_indices(arr[:half], target, offset) + _failing_indices(arr[half:], target, offset + half)


def cast_text_columns(strings: pa.Table, schema: pa.Schema) -> tuple[dict[int, str], pa.Table | None]:
    """Find rows whose text does not parse as the schema's types.

    Returns ``{row: reason}`` for the bad rows and, when there are none, the cast table.
    """
    bad: dict[int, str] = {}
    for field in schema:
        if pa.types.is_string(field.type):
            continue
        col = strings.column(field.name).combine_chunks()
        for i in _failing_indices(col, field.type):
            bad.setdefault(i, f"column {field.name}: cannot parse {col[i].as_py()!r} as "
                              f"{field.metadata.get(b'documented_type', b'').decode() or field.type}")
    if bad:
        return bad, None
    plain = pa.schema([pa.field(f.name, f.type) for f in schema])
    return bad, strings.select(plain.names).cast(plain)


def validate_rows(table: pa.Table, schema: TableSchema) -> dict[int, str]:
    """Rows breaking a documented constraint: nulls in non-null columns, coordinates out of range."""
    bad: dict[int, str] = {}

    def flag(mask: pa.Array, reason: Callable[[int], str]) -> None:
        for i in np.flatnonzero(mask.to_numpy(zero_copy_only=False)):
            bad.setdefault(int(i), reason(int(i)))

    for c in schema.columns:
        if not c.nullable and c.name in table.column_names:
            col = table.column(c.name)
            if col.null_count:
                flag(pc.is_null(col), lambda _i, n=c.name: f"column {n}: null in a non-null column")
    if schema.positional:
        ra = table.column(schema.ra_column)
        dec = table.column(schema.dec_column)
        ra_ok = pc.and_kleene(pc.greater_equal(ra, 0.0), pc.less(ra, 360.0))
        dec_ok = pc.and_kleene(pc.greater_equal(dec, -90.0), pc.less_equal(dec, 90.0))
        flag(pc.invert(pc.fill_null(ra_ok, False)),
             lambda i: f"column {schema.ra_column}: {ra[i].as_py()!r} outside [0, 360)")
        flag(pc.invert(pc.fill_null(dec_ok, False)),
             lambda i: f"column {schema.dec_column}: {dec[i].as_py()!r} outside [-90, 90]")
    return bad


def rtrim_strings(table: pa.Table) -> pa.Table:
    """Trailing blanks (IRSA pads the designation) are layout, not value: drop them."""
    for i, field in enumerate(table.schema):
        if pa.types.is_string(field.type):
            table = table.set_column(i, field, pc.utf8_rtrim_whitespace(table.column(i)))
    return table
