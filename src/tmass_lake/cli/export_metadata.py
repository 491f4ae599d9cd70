"""The metadata an export keeps: each column's unit, UCD and description, and VOParquet.

A crossmatch or light-curve result computed by lsdb carries column names and types only. Here each
output column is matched back to the column it came from (a crossmatch's ``<column><suffix>`` on
either side, a nested column's sub-columns by name) and given that column's field metadata; the
schema also carries the VOParquet of :func:`~tmass_lake.convert.writer.voparquet_metadata`. The
three export forms use it: a Parquet file and each part of a Parquet directory are written with
:func:`described_table`, and a HATS output has its ``_common_metadata`` rewritten by
:func:`describe_hats` (hats' place for a catalog's column metadata).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
from hats.io import paths
from upath import UPath

from tmass_lake.convert.writer import voparquet_metadata, write_voparquet
from tmass_lake.lake.stats import STAT_COLUMNS
from tmass_lake.schema import load_schema

EXTRA_COLUMNS = {
    "_dist_arcsec": {"unit": "arcsec", "ucd": "pos.angDistance",
                     "description": "separation of the match (at the detection's epoch when epoch-aware)"},
    "_dt_yr": {"unit": "yr", "ucd": "time.interval",
               "description": "detection epoch minus the reference catalogue's epoch"},
}
"""Metadata of the columns a crossmatch adds."""


@dataclass(frozen=True)
class Source:
    """A schema the export's columns came from, and the suffix its columns carry in the output."""

    schema: pa.Schema
    suffix: str = ""


def _meta(name: str, sources: list[Source]) -> dict | None:
    for s in sources:
        base = name[:-len(s.suffix)] if s.suffix and name.endswith(s.suffix) else (None if s.suffix else name)
        if base is not None and base in s.schema.names and s.schema.field(base).metadata:
            return s.schema.field(base).metadata
    if name in EXTRA_COLUMNS:
        return EXTRA_COLUMNS[name]
    return STAT_COLUMNS.get(name)


def _nested_children(name: str, sources: list[Source]) -> list[pa.Field]:
    """The sub-columns any source knows for nested column ``name``, or all the sources' fields."""
    for s in sources:
        base = name[:-len(s.suffix)] if s.suffix and name.endswith(s.suffix) else name
        if base in s.schema.names and pa.types.is_struct(s.schema.field(base).type):
            return list(s.schema.field(base).type)
    return [f for s in sources for f in s.schema]


def described_schema(schema: pa.Schema, sources: list[Source], *, name: str) -> pa.Schema:
    """``schema`` with each column's unit/UCD/description from ``sources`` and full VOParquet."""
    def child(f: pa.Field, known: list[pa.Field]) -> pa.Field:
        match = next((k for k in known if k.name == f.name), None)
        return f.with_metadata(match.metadata) if match is not None and match.metadata else f

    fields = []
    for f in schema:
        meta = _meta(f.name, sources)
        if pa.types.is_struct(f.type):
            known = _nested_children(f.name, sources)
            f = pa.field(f.name, pa.struct([child(c, known) for c in f.type]), nullable=f.nullable)
        fields.append(f.with_metadata(meta) if meta else f)
    out = pa.schema(fields, metadata=schema.metadata)
    vo = voparquet_metadata(out, name=name)
    return out.with_metadata({**(out.metadata or {}), **{k.encode(): v.encode() for k, v in vo.items()}})


def described_table(table: pa.Table, sources: list[Source], *, name: str) -> pa.Table:
    """``table`` with :func:`described_schema` (its data untouched)."""
    return pa.Table.from_arrays(table.columns, schema=described_schema(table.schema, sources, name=name))


def describe_hats(root: UPath, sources: list[Source], *, name: str) -> None:
    """Rewrite the ``_common_metadata`` of the HATS catalog lsdb wrote at ``root`` with the described
    schema and VOParquet."""
    with paths.get_common_metadata_pointer(root).open("rb") as f:
        schema = pq.read_schema(f)
    write_voparquet(root, name=name, schema=described_schema(schema, sources, name=name))


def crossmatch_sources(result: list[str], left: pa.Schema, right: pa.Schema,
                       left_suffix: str = "_2mass") -> list[Source]:
    """Both sides of a crossmatch whose output has columns ``result``: the left with its suffix, the
    right with the suffix most of its columns carry in the output (lsdb's ``<column><suffix>``)."""
    names = set(result)
    found: dict[str, int] = {}
    for column in right.names:
        for n in names:
            if n.startswith(column + "_") and n != column:
                found[n[len(column):]] = found.get(n[len(column):], 0) + 1
    right_suffix = max(found, key=lambda s: (found[s], len(s))) if found else ""
    return [Source(left, left_suffix), Source(right, right_suffix)]


def table_sources(*tables: str) -> list[Source]:
    """The schema files of ``tables`` as unsuffixed sources (a light-curve export's)."""
    return [Source(load_schema(t).arrow_schema()) for t in tables]
