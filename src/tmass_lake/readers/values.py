"""Columns to typed Arrow columns, with every unparsable or invalid value traced to its row.

Shared by every reader: the fast path casts whole columns at C speed; only a column that fails
is bisected to find the offending rows, so clean input never pays for bad input.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tmass_lake.schema import TableSchema

SHOWN_CHARACTERS = 40
"""A quarantine reason quotes at most this much of a value (the line itself is in ``text``)."""


def shown(value: object) -> str:
    """``value`` as a reason quotes it: its repr, cut short (with its length) when long."""
    text = repr(value)
    if len(text) <= SHOWN_CHARACTERS:
        return text
    size = len(value) if isinstance(value, str | bytes) else len(text)
    return f"{text[:SHOWN_CHARACTERS]}... ({size:,} characters)"


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


def cast_columns(table: pa.Table, schema: pa.Schema) -> tuple[dict[int, str], pa.Table | None]:
    """Find rows whose values do not convert to the schema's types (text is parsed, numbers cast).

    Returns ``{row: reason}`` for the bad rows and, when there are none, the cast table.
    """
    bad: dict[int, str] = {}
    for field in schema:
        col = table.column(field.name)
        if col.type == field.type or pa.types.is_string(field.type):
            continue
        col = col.combine_chunks()
        verb = "parse" if pa.types.is_string(col.type) else "convert"
        for i in _failing_indices(col, field.type):
            bad.setdefault(i, f"column {field.name}: cannot {verb} {shown(col[i].as_py())} as "
                              f"{(field.metadata or {}).get(b'documented_type', b'').decode() or field.type}")
    if bad:
        return bad, None
    plain = pa.schema([pa.field(f.name, f.type) for f in schema])
    return bad, table.select(plain.names).cast(plain)


def validate_rows(table: pa.Table, schema: TableSchema) -> dict[int, str]:
    """Rows breaking a documented constraint: nulls in non-null columns, coordinates out of range,
    strings longer than their documented width."""
    bad: dict[int, str] = {}

    def flag(mask: pa.Array, reason: Callable[[int], str]) -> None:
        for i in np.flatnonzero(mask.to_numpy(zero_copy_only=False)):
            bad.setdefault(int(i), reason(int(i)))

    for c in schema.columns:
        if c.name not in table.column_names:
            continue
        col = table.column(c.name)
        if not c.nullable and col.null_count:
            flag(pc.is_null(col), lambda _i, n=c.name: f"column {n}: null in a non-null column")
        if c.width is not None and pa.types.is_string(col.type):
            long = pc.greater(pc.utf8_length(col), c.width)
            if pc.any(long).as_py():
                flag(pc.fill_null(long, False), lambda i, c=c, col=col: (
                    f"column {c.name}: {shown(col[i].as_py())} is longer than its documented width "
                    f"({c.width}, type {c.type})"))
    if schema.positional:
        ra = table.column(schema.ra_column)
        dec = table.column(schema.dec_column)
        ra_ok = pc.and_kleene(pc.greater_equal(ra, 0.0), pc.less(ra, 360.0))
        dec_ok = pc.and_kleene(pc.greater_equal(dec, -90.0), pc.less_equal(dec, 90.0))
        flag(pc.invert(pc.fill_null(ra_ok, False)),
             lambda i: f"column {schema.ra_column}: {shown(ra[i].as_py())} outside [0, 360)")
        flag(pc.invert(pc.fill_null(dec_ok, False)),
             lambda i: f"column {schema.dec_column}: {shown(dec[i].as_py())} outside [-90, 90]")
    return bad


def drop_rows(table: pa.Table, rows_at: np.ndarray, reasons: dict[int, str],
              bad: dict[int, str]) -> tuple[pa.Table, np.ndarray]:
    """Remove the rows ``reasons`` names, recording each under its line (``rows_at[row]``) in ``bad``."""
    if not reasons:
        return table, rows_at
    keep = np.ones(table.num_rows, dtype=bool)
    keep[list(reasons)] = False
    for i, why in reasons.items():
        bad.setdefault(int(rows_at[i]), why)
    return table.filter(pa.array(keep)), rows_at[keep]


def checked(table: pa.Table, types: pa.Schema, rows_at: np.ndarray,
            bad: dict[int, str]) -> tuple[pa.Table, np.ndarray]:
    """``table`` converted to ``types``, rows that do not convert dropped into ``bad`` by line."""
    reasons, typed = cast_columns(table, types)
    if typed is None:
        table, rows_at = drop_rows(table, rows_at, reasons, bad)
        _, typed = cast_columns(table, types)
    return typed, rows_at


def rtrim_strings(table: pa.Table) -> pa.Table:
    """Trailing blanks (IRSA pads the designation) are layout, not value: drop them."""
    for i, field in enumerate(table.schema):
        if pa.types.is_string(field.type):
            table = table.set_column(i, field, pc.utf8_rtrim_whitespace(table.column(i)))
    return table
