"""Building typed Arrow tables from numpy columns, with schema-driven fillers.

Columns a generator computes are passed in explicitly; every other schema column gets a plausible
value from :func:`generic_values` (by name pattern and documented format), so an edited schema
file still produces a complete table.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa

from tmass_lake.schema import Column, TableSchema

Value = np.ndarray | tuple[np.ndarray, np.ndarray | None] | pa.Array


def fixed_strings(chars: np.ndarray, null: np.ndarray | None = None) -> pa.Array:
    """Arrow string array from an ``(n, w)`` uint8 matrix of characters (no per-row Python)."""
    chars = np.ascontiguousarray(chars, dtype=np.uint8)
    n, w = chars.shape
    offsets = (np.arange(n + 1, dtype=np.int32) * w)
    validity = None
    if null is not None and null.any():
        validity = pa.py_buffer(np.packbits(~null, bitorder="little"))
    return pa.Array.from_buffers(pa.string(), n, [validity, pa.py_buffer(offsets),
                                                  pa.py_buffer(chars.tobytes())])


def choose_strings(codes: np.ndarray, options: list[str], null: np.ndarray | None = None,
                   ) -> pa.Array:
    """Strings picked from equal-width ``options`` by integer ``codes``."""
    mat = np.array([np.frombuffer(o.encode(), dtype=np.uint8) for o in options])
    return fixed_strings(mat[codes], null)


def _num_range(col: Column) -> tuple[float, float]:
    m = re.search(r"(\d+)(?:\.(\d+))?", col.type)
    width = int(m.group(1)) if m else 5
    scale = int(m.group(2)) if m and m.group(2) else 0
    int_digits = max(width - scale - (1 if scale else 0) - 1, 1)
    return 0.0, float(min(10**int_digits - 1, 999))


def generic_values(col: Column, n: int, rng: np.random.Generator,
                   band_mag: np.ndarray | None = None, null_frac: float = 0.05) -> pa.Array:
    """Plausible values for a column the generator does not model, from its name and format."""
    name = col.name
    t = col.arrow_type
    null = (rng.random(n) < null_frac) if col.nullable and null_frac > 0 else None
    band = {"j": 0, "h": 1, "k": 2}.get(name[0]) if len(name) > 2 and name[1] == "_" else None
    if pa.types.is_string(t):
        m = re.search(r"(\d+)", col.type)
        w = int(m.group(1)) if m else 1
        if col.nullable and w > 6:
            return pa.nulls(n, pa.string())
        return fixed_strings(np.full((n, w), ord("0"), dtype=np.uint8), null)
    if pa.types.is_date32(t):
        x = np.full(n, 10957, dtype=np.int32)
        return pa.array(x, mask=null).cast(pa.date32())
    if pa.types.is_integer(t):
        if re.search(r"(flg|flag)", name):
            x = (rng.random(n) < 0.05).astype(np.int64)
        elif name.endswith(("phi", "pa", "ang")):
            x = rng.integers(-90, 90, n) if "phi" in name else rng.integers(0, 180, n)
        else:
            lo, hi = _num_range(col)
            x = rng.integers(int(lo), int(min(hi, 99)) + 1, n)
        return pa.array(x, mask=null).cast(t)
    # floating
    if band is not None and band_mag is not None and re.match(r"^[jhk]_m(_|$)", name):
        x = band_mag[:, band] + rng.normal(0.05, 0.08, n)
    elif "msig" in name or name.startswith("sig") or "_sig" in name:
        x = rng.uniform(0.01, 0.2, n)
    elif name.endswith("_ba") or "_ba" in name:
        x = rng.uniform(0.3, 1.0, n)
    elif re.match(r"^([jhk]_)?r_|^r_", name) or "_r_" in name:
        x = rng.uniform(3.0, 30.0, n)
    elif "chi" in name:
        x = rng.uniform(0.5, 2.0, n)
    elif "back" in name:
        x = rng.uniform(100.0, 400.0, n)
    elif "snr" in name:
        x = rng.uniform(5.0, 200.0, n)
    else:
        lo, hi = _num_range(col)
        x = rng.uniform(lo, min(hi, 10.0), n)
    return pa.array(x, mask=null).cast(t)


def _to_arrow(v: Value, t: pa.DataType) -> pa.Array:
    if isinstance(v, pa.Array | pa.ChunkedArray):
        return v if v.type == t else v.cast(t)
    mask = None
    if isinstance(v, tuple):
        v, mask = v
        if mask is not None and not mask.any():
            mask = None
    v = np.asarray(v)
    if pa.types.is_date32(t):
        return pa.array(v.astype(np.int32), mask=mask).cast(t)
    if pa.types.is_floating(t) or pa.types.is_integer(t):
        return pa.array(v.astype(t.to_pandas_dtype()), mask=mask)
    return pa.array(v, mask=mask).cast(t)


def quantize(values: np.ndarray, col: Column) -> np.ndarray:
    """Round floats to the column's documented scale (what the bulk file will carry)."""
    s = col.scale
    return np.round(values, s) if s is not None else values


def make_table(schema: TableSchema, n: int, values: dict[str, Value],
                rng: np.random.Generator, band_mag: np.ndarray | None = None) -> pa.Table:
    """Typed table in schema column order: computed ``values`` plus generic fillers."""
    arrays = []
    for col in schema.columns:
        t = col.arrow_type
        if col.name in values:
            v = values[col.name]
            if (pa.types.is_floating(t) and not isinstance(v, pa.Array)
                    and col.scale is not None):
                v = (quantize(v[0], col), v[1]) if isinstance(v, tuple) else quantize(v, col)
            arr = _to_arrow(v, t)
        else:
            arr = generic_values(col, n, rng, band_mag)
        if len(arr) != n:
            raise ValueError(f"{schema.table}.{col.name}: {len(arr)} values for {n} rows")
        arrays.append(arr)
    return pa.Table.from_arrays(arrays, schema=pa.schema([c.field() for c in schema.columns]))


