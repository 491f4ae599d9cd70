"""Where an input's own column names meet the table schema: matching, per-file layout, unification.

**Layout from the source, documentation from the schema.** Every reader of an input with a
header (IPAC, VOTable, headed CSV, Parquet, a TAP answer) describes its columns as
:class:`InputColumn` and calls :func:`match_columns`: the table's columns are the input's. An
input column matching a schema column **by name** (case-insensitive), or through an alias the
schema declares (``xdate`` -> ``date``, ``decl`` -> ``dec``), takes the schema's name, documented
type (its values coerced: ``xdate`` text -> ``date32``), unit, UCD, description and provenance;
a column the schema does not list is kept with what the input says (provenance ``input
header``). A documented column the input lacks is **absent** (the input is a projection, as any
query result is): not a column of nulls, not an error, but listed in the drift report. Only what
the build needs is required (:func:`required_columns`: the positions of a positional table); a
missing one is an :class:`InputError` naming the file and the column. :func:`typed_block` turns
one block of such an input into a :class:`ParsedBlock`: its documented columns first, in schema
order, then the file's own. Headerless bulk files stay positional against the whole schema.

The build gathers every file's :class:`FileLayout` and :func:`unify` gives the table one schema
(the documented columns some input has, then every input-only column of any file; a documented
column only some files have is null in the others' rows) and its drift report (``strict``:
any drift is an error instead); :func:`conform` brings any block or file to that schema.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import pyarrow as pa

from tmass_lake.errors import BuildError, InputError
from tmass_lake.readers.blocks import BadLine, ParsedBlock
from tmass_lake.readers.values import checked, drop_rows, validate_rows
from tmass_lake.schema import INPUT_HEADER, Column, TableSchema, arrow_name

POSITIONAL = "bulk"


@dataclass(frozen=True)
class InputColumn:
    """A column as an input's own header declares it."""

    name: str
    type: pa.DataType
    """What the input's values are read as: its declared type (or, for CSV, the inferred one)."""
    declared: str = ""
    """The type as the input writes it (IPAC ``double``, VOTable ``long``)."""
    unit: str | None = None
    ucd: str | None = None
    description: str = ""


@dataclass(frozen=True)
class FileLayout:
    """How one input's columns met the table schema (that file's part of the drift report)."""

    format: str
    columns: tuple[str, ...]
    """The input's column names, in its order."""
    matched: dict[str, str]
    """Schema column -> the input's name for it."""
    extra: tuple[Column, ...]
    """Columns the schema does not list, as the input describes them."""
    missing: tuple[str, ...]
    """Documented columns the input lacks: absent from what it becomes (a projection)."""
    source: str = ""
    """Where the layout came from (``ipac header``, ``TAP_SCHEMA.columns of URL``)."""

    def target(self, name: str) -> str:
        """The lake's name of the input's column ``name``."""
        return self._targets().get(name, name)

    def _targets(self) -> dict[str, str]:
        return {given: column for column, given in self.matched.items()}

    def read_types(self, schema: TableSchema) -> pa.Schema:
        """Per input column (its name, file order): the type its values become."""
        out = {c.name: c for c in self.extra} | {given: schema.column(column)
                                                 for column, given in self.matched.items()}
        return pa.schema([pa.field(n, out[n].arrow_type, metadata={"documented_type": out[n].type})
                          for n in self.columns])

    def to_json(self) -> dict:
        return {"format": self.format, "columns": list(self.columns), "matched": self.matched,
                "extra": [asdict(c) | {"aliases": list(c.aliases)} for c in self.extra],
                "missing": list(self.missing), "source": self.source}

    @classmethod
    def from_json(cls, d: dict) -> FileLayout:
        extra = tuple(Column(**(c | {"aliases": tuple(c.get("aliases") or ())})) for c in d["extra"])
        return cls(d["format"], tuple(d["columns"]), dict(d["matched"]), extra, tuple(d["missing"]),
                   d.get("source") or f"{d['format']} header")


def input_schema(extra: Sequence[Column], name: str = "input") -> TableSchema:
    """A schema made of an input's own columns only (reading without a table schema)."""
    return TableSchema(table=name, title=name, product="", kind="", layout_status=INPUT_HEADER,
                       layout_note="", columns=tuple(extra))


def extra_column(col: InputColumn, fmt: str) -> Column:
    """An input-only column, described by what the input says."""
    arrow = arrow_name(col.type) or "string"
    return Column(name=col.name, type=col.declared or arrow, arrow=arrow, unit=col.unit or None,
                  ucd=col.ucd or None, description=col.description or "", nullable=True,
                  provenance=INPUT_HEADER, source=f"{fmt} header")


def required_columns(schema: TableSchema) -> list[str]:
    """The documented columns every input of ``schema`` must have: a positional table's positions."""
    return [c for c in (schema.ra_column, schema.dec_column) if c] if schema.positional else []


def named_columns(schema: TableSchema, names: Sequence[str]) -> str:
    """Columns as an error names them, each with the aliases it is also matched by."""
    def one(n: str) -> str:
        c = schema.column(n)
        return c.name + (f" (or {'/'.join(c.aliases)})" if c.aliases else "")
    return ", ".join(one(n) for n in names)


def match_columns(path: str, fmt: str, columns: Sequence[InputColumn],
                  schema: TableSchema | None, source: str | None = None) -> FileLayout:
    """Match an input's columns to ``schema`` by name, then by alias; refuse one lacking a required column."""
    names = [c.name for c in columns]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(path, f"column(s) {', '.join(twice)} appear more than once in its header")
    matched: dict[str, str] = {}
    if schema is not None:
        exact = {c.name.lower(): c.name for c in schema.columns}
        for col in columns:  # a column's own name first, so an alias never takes it
            if col.name.lower() in exact:
                matched[exact[col.name.lower()]] = col.name
        lookup = schema.lookup()
        for col in columns:
            c = lookup.get(col.name.lower())
            if col.name not in matched.values() and c is not None and c.name not in matched:
                matched[c.name] = col.name
    taken = set(matched.values())
    extra = tuple(extra_column(c, fmt) for c in columns if c.name not in taken)
    missing = tuple(c.name for c in schema.columns if c.name not in matched) if schema else ()
    needed = [n for n in required_columns(schema) if n in missing] if schema else []
    if needed:
        raise InputError(path, f"has no column {named_columns(schema, needed)}: {schema.table} needs "
                               f"{'it' if len(needed) == 1 else 'them'} (the positions of its rows)")
    return FileLayout(fmt, tuple(names), matched, extra, missing, source or f"{fmt} header")


def project(schema: TableSchema, present: set[str] | Sequence[str],
            nullable: set[str] | Sequence[str] = ()) -> TableSchema:
    """``schema`` with only its ``present`` columns (in its order), those in ``nullable`` made
    nullable, and the roles (key, positions, epoch) of absent columns unset."""
    present, nullable = set(present), set(nullable)
    if present >= set(schema.names) and not nullable:
        return schema
    columns = tuple(replace(c, nullable=True) if c.name in nullable else c
                    for c in schema.columns if c.name in present)
    roles = {k: getattr(schema, k) if getattr(schema, k) in present else None
             for k in ("key_column", "ra_column", "dec_column", "epoch_column")}
    return replace(schema, columns=columns, **roles)


def table_schema(layout: FileLayout, schema: TableSchema | None) -> TableSchema:
    """The schema of what one input becomes: its documented columns, then its own."""
    if schema is None:
        return input_schema(layout.extra)
    return project(schema, set(layout.matched)).with_columns(layout.extra)


def conform(table: pa.Table, target: pa.Schema) -> pa.Table:
    """``table`` in ``target``'s column order and types, columns it lacks all null, ``target``'s metadata."""
    if table.schema.equals(target, check_metadata=True):
        return table
    have = set(table.column_names)
    arrays = [table.column(f.name).cast(f.type) if f.name in have else pa.nulls(table.num_rows, f.type)
              for f in target]
    return pa.Table.from_arrays(arrays, schema=target)


def row_text(table: pa.Table) -> Callable[[int], str]:
    """Row ``i`` of a table as the quarantine's text (inputs without lines: VOTable, Parquet)."""
    return lambda i: " | ".join(f"{n}={table.column(n)[i].as_py()}" for n in table.column_names)


def typed_block(path: str, first_line: int, n_lines: int, table: pa.Table, rows_at: np.ndarray,
                bad: dict[int, str], layout: FileLayout, schema: TableSchema | None,
                text: Callable[[int], str]) -> ParsedBlock:
    """One block of an input with a header as a :class:`ParsedBlock` on the table schema.

    ``table`` holds the block's rows under the input's names (text or typed); ``rows_at`` the line
    (0-based, in the block) of each; ``bad`` the lines already refused; ``text(i)`` line ``i``'s
    text for the quarantine. Values that do not convert and rows breaking a documented
    constraint are quarantined.
    """
    target = table_schema(layout, schema)
    table, rows_at = checked(table, layout.read_types(target), rows_at, bad)
    table = conform(table.rename_columns([layout.target(n) for n in table.column_names]),
                    target.arrow_schema())
    table, rows_at = drop_rows(table, rows_at, validate_rows(table, target), bad)
    quarantined = [BadLine(path, first_line + i, bad[i], text(i)) for i in sorted(bad)]
    return ParsedBlock(path, first_line, n_lines, table, quarantined, layout)


def _wider(a: pa.DataType, b: pa.DataType) -> pa.DataType | None:
    """The type holding the values of both (numbers widen; nothing else mixes), else ``None``."""
    if a == b:
        return a
    if pa.types.is_integer(a) and pa.types.is_integer(b):
        return a if a.bit_width >= b.bit_width else b
    numbers = (pa.types.is_integer, pa.types.is_floating)
    if any(f(a) for f in numbers) and any(f(b) for f in numbers):
        return pa.float64()
    return None


def unify(schema: TableSchema, layouts: Sequence[tuple[str, FileLayout | None]], *,
          strict: bool = False) -> tuple[TableSchema, dict]:
    """One schema for every file of a table, and the table's drift report.

    The schema: the documented columns at least one input has (a column only some inputs have is
    nullable: null in the others' rows), then every input-only column in the order first seen
    (described by the first file that describes it), numbers widened where files differ (int and
    float: float64). An input-only column that is
    text in one file and numbers in another, or carries another unit, cannot be unified: an
    :class:`InputError` naming both files. ``layouts`` pairs each input with its layout
    (``None``: a bulk file, read by position). ``strict``: documented columns absent from an input
    or input-only columns are a :class:`BuildError` naming them (the schema's layout, exactly).

    The drift report: where the layout came from (``layout``), the documented columns ``matched``
    (``aliases``: through which input name), ``input_only``, ``absent`` (documented, in no input)
    and ``missing`` (documented, lacking in some inputs: null in their rows).
    """
    extras: dict[str, Column] = {}
    seen_in: dict[str, str] = {}
    counts: dict[str, int] = {}
    missing: dict[str, int] = {}
    aliases: dict[str, str] = {}
    matched: set[str] = set()
    positional = 0
    for path, layout in layouts:
        if layout is None:
            positional += 1
            matched.update(schema.names)
            continue
        matched.update(layout.matched)
        aliases.update({c: given for c, given in layout.matched.items() if given != c})
        for name in layout.missing:
            missing[name] = missing.get(name, 0) + 1
        for c in layout.extra:
            counts[c.name] = counts.get(c.name, 0) + 1
            have = extras.get(c.name)
            if have is None:
                extras[c.name], seen_in[c.name] = c, path
                continue
            wider = _wider(have.arrow_type, c.arrow_type)
            if wider is None or (have.unit or None) != (c.unit or None):
                def said(x: Column) -> str:
                    return x.arrow + (f" [{x.unit}]" if x.unit else "")
                raise InputError(path, f"column {c.name} is {said(c)} here but {said(have)} in "
                                       f"{seen_in[c.name]}: the files of {schema.table} cannot be unified")
            if wider != have.arrow_type:
                have = replace(have, arrow=arrow_name(wider), type=arrow_name(wider))
            extras[c.name] = replace(have, description=have.description or c.description,
                                     ucd=have.ucd or c.ucd)
    absent = [n for n in schema.names if n not in matched]
    partial = [n for n in schema.names if n in matched and n in missing]
    sources = sorted({layout.source for _, layout in layouts if layout is not None})
    if positional:
        sources.insert(0, f"schema file {schema.path or schema.table} (bulk files, by position)")
    drift = {
        "files": len(layouts), "positional": positional, "layout": sources,
        "matched": [n for n in schema.names if n in matched],
        "aliases": {n: aliases[n] for n in schema.names if n in aliases},
        "input_only": [{"name": c.name, "type": c.type, "arrow": c.arrow, "unit": c.unit, "ucd": c.ucd,
                        "description": c.description, "files": counts[c.name]} for c in extras.values()],
        "absent": absent,
        "missing": [{"name": n, "files": missing[n]} for n in partial],
    }
    if strict and (absent or partial or extras):
        parts = [f"documented column(s) absent: {', '.join(absent)}" if absent else "",
                 f"lacking in some inputs: {', '.join(partial)}" if partial else "",
                 f"not in the schema: {', '.join(extras)}" if extras else ""]
        raise BuildError(f"{schema.table}: the inputs' layout is not the schema's (--strict-layout): "
                         + "; ".join(p for p in parts if p))
    return project(schema, matched, partial).with_columns(tuple(extras.values())), drift
