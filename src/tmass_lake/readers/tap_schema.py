"""A service's ``TAP_SCHEMA.columns`` against our schema: the merged layout and the drift between them.

:func:`merge_schema` takes the column records a TAP service lists for a table (see
:meth:`tmass_lake.readers.tap.TapClient.columns`) and our :class:`~tmass_lake.schema.TableSchema`
(if we have one) and returns a schema whose every column says where each fact came from
(``origin``: the service and the date, or our schema's documented source), plus the drift: every
fact on which the two disagree. **Layout from the service, documentation from our schema**:
``layout="service"`` (``tmass-lake schema pull``) takes the service's columns and order; a served
column matching ours by name or alias (``xdate`` is our ``date``) keeps our name, aliases,
documented type, unit, UCD, description and nullability, the service's words filling only what
we leave empty; the service's other columns are added as it describes them; our columns it does
not serve are left out (listed in the drift). ``layout="ours"`` keeps our columns instead.

Types: the service's VOTable (or TAP 1.0 ADQL) datatype gives the Arrow type of a column we do
not document; where we document one of the same kind (an ``int16`` the service serves as
``long``, a ``float32`` for a ``%6.3f`` value served as ``double``, a date served as text) ours
is kept, with the service's type in the drift.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tmass_lake.schema import Column, TableSchema

# VOTable datatypes (TAP 1.1) and ADQL types (TAP 1.0) -> our Arrow type names.
VOTABLE_ARROW = {
    "boolean": "bool", "bit": "bool", "unsignedbyte": "int16", "short": "int16", "int": "int32",
    "long": "int64", "float": "float32", "double": "float64", "char": "string", "unicodechar": "string",
    "smallint": "int16", "integer": "int32", "bigint": "int64", "real": "float32",
    "varchar": "string", "timestamp": "string", "clob": "string",
}
_KIND = {"bool": "bool", "int8": "int", "int16": "int", "int32": "int", "int64": "int", "float32": "float",
         "float64": "float", "string": "string", "date32": "string"}
FACTS = ("arrow", "unit", "ucd", "description")


def service_arrow(record: dict) -> str:
    """The Arrow type name of a ``TAP_SCHEMA.columns`` record (its datatype, arraysize, xtype)."""
    datatype = str(record.get("datatype") or "").strip().lower()
    if datatype.startswith("adql:"):
        datatype = datatype[5:]
    arraysize = str(record.get("arraysize") or "").strip()
    arrow = VOTABLE_ARROW.get(datatype)
    if arrow is None:
        raise ValueError(f"column {record.get('column_name')}: unknown datatype {record.get('datatype')!r}")
    if arraysize and arrow not in ("string",) and arraysize != "1":
        raise ValueError(f"column {record.get('column_name')}: arrays ({datatype}[{arraysize}]) "
                         "are not supported")
    return arrow


def _kind(arrow: str) -> str:
    return _KIND[arrow]


def _text(value: Any) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None


def _flag(value: Any) -> bool | None:
    return None if value is None else bool(int(value))


@dataclass(frozen=True)
class Drift:
    """One fact on which our schema and the service disagree."""

    column: str
    fact: str
    ours: Any
    service: Any

    def line(self) -> str:
        return f"{self.column}: {self.fact}: ours {self.ours!r}, service {self.service!r}"


@dataclass(frozen=True)
class Merged:
    """The merged schema and the drift behind it."""

    schema: TableSchema
    drift: list[Drift]
    service: str
    date: str

    def summary(self) -> str:
        both = sum(1 for c in self.schema.columns if c.origin and c.origin.get("column") == "both")
        extra = [d.column for d in self.drift if d.fact == "column" and d.ours == "absent"]
        gone = [d.column for d in self.drift if d.fact == "column" and d.service == "absent"]
        facts = [d for d in self.drift if d.fact != "column"]
        lines = [f"{self.schema.table}: TAP_SCHEMA of {self.service} ({self.date}) against our schema: "
                 f"{both} column(s) in both, {len(extra)} only on the service, {len(gone)} only ours, "
                 f"{len(facts)} fact(s) differ"]
        if extra:
            lines.append(f"  only on the service: {', '.join(extra)}")
        if gone:
            lines.append(f"  only ours: {', '.join(gone)}")
        lines += [f"  {d.line()}" for d in facts]
        return "\n".join(lines)


def merge_schema(records: list[dict], ours: TableSchema | None, *, table: str, service: str, date: str,
                 layout: str = "service") -> Merged:
    """Our schema and a service's column records merged (see the module docstring)."""
    if layout not in ("service", "ours"):
        raise ValueError(f"layout must be 'service' or 'ours', not {layout!r}")
    told = f"TAP_SCHEMA.columns of {service}, {date}"
    records_by = {str(r["column_name"]).strip('"').lower(): r for r in records}
    pairs = _pairs(list(records_by), ours)  # served name -> our column name
    served = {pairs.get(n, n).lower(): r for n, r in records_by.items()}  # keyed by our names
    mine = {c.name.lower(): c for c in ours.columns} if ours else {}
    drift: list[Drift] = []
    names = list(served) if layout == "service" else list(mine)
    columns = []
    for name in names:
        rec, col = served.get(name), mine.get(name)
        if rec is None:
            origin = {"column": "ours", **{f: col.source for f in FACTS}}
            columns.append(dataclasses.replace(col, origin=origin))
            continue
        columns.append(_merge_column(rec, col, told, drift))
    if ours:
        drift += [Drift(c.name, "column", "present", "absent") for n, c in mine.items() if n not in served]
        drift += [Drift(str(r["column_name"]), "column", "absent", "present")
                  for n, r in served.items() if n not in mine]
        drift += [Drift(mine[o.lower()].name, "name", mine[o.lower()].name, n) for n, o in pairs.items()
                  if n != o.lower()]
        common_ours = [n for n in mine if n in served]
        common_served = [n for n in served if n in mine]
        if common_ours != common_served:
            drift.append(Drift("*", "order", common_ours, common_served))
    schema = _table(ours, table, tuple(columns), told, layout)
    return Merged(schema, drift, service, date)


def _pairs(served: list[str], ours: TableSchema | None) -> dict[str, str]:
    """Served (lower-case) names matching our columns: by name first, then by alias -> our name."""
    if ours is None:
        return {}
    exact = {c.name.lower(): c.name for c in ours.columns}
    out = {n: exact[n] for n in served if n in exact}
    lookup = ours.lookup()
    for n in served:
        c = lookup.get(n)
        if n not in out and c is not None and c.name not in out.values():
            out[n] = c.name
    return out


def _merge_column(rec: dict, col: Column | None, told: str, drift: list[Drift]) -> Column:
    name = str(rec["column_name"]).strip('"')
    arrow = service_arrow(rec)
    facts = {"unit": _text(rec.get("unit")), "ucd": _text(rec.get("ucd")),
             "description": _text(rec.get("description"))}
    flags = {"principal": _flag(rec.get("principal")), "indexed": _flag(rec.get("indexed"))}
    datatype = f"{rec.get('datatype')}" + (f"[{rec['arraysize']}]" if _text(rec.get("arraysize")) else "")
    if col is None:
        origin = {"column": "service", **{f: told for f in FACTS}, "nullable": "not stated by the service"}
        return Column(name=name, type=datatype, arrow=arrow, unit=facts["unit"], ucd=facts["ucd"],
                      description=facts["description"] or "", nullable=True, provenance="documented",
                      source=told, origin=origin, **flags)
    origin = {"column": "both", "nullable": col.source}
    if _kind(col.arrow) == _kind(arrow):
        kept_arrow = col.arrow
        origin["arrow"] = col.source
    else:
        kept_arrow = arrow
        origin["arrow"] = told
    if kept_arrow != arrow or col.arrow != arrow:
        drift.append(Drift(col.name, "arrow", col.arrow, f"{arrow} ({datatype})"))
    values: dict[str, Any] = {}
    for fact in ("unit", "ucd", "description"):  # documentation from our schema, gaps from the service
        theirs, mine = facts[fact], getattr(col, fact)
        if mine:
            values[fact], origin[fact] = mine, col.source
        else:
            values[fact], origin[fact] = theirs, told if theirs is not None else col.source
        if (theirs or None) != (mine or None):
            drift.append(Drift(col.name, fact, mine, theirs))
    aliases = col.aliases + ((name,) if name.lower() != col.name.lower() and name.lower() not in
                             {a.lower() for a in col.aliases} else ())
    return dataclasses.replace(col, arrow=kept_arrow, unit=values["unit"], ucd=values["ucd"],
                               description=values["description"] or "", origin=origin, aliases=aliases,
                               **flags)


def _guess(columns: tuple[Column, ...], ucd: str) -> str | None:
    for c in columns:
        if c.ucd and ucd in c.ucd.split(";")[0] and "meta.main" in c.ucd:
            return c.name
    return None


def _table(ours: TableSchema | None, table: str, columns: tuple[Column, ...], told: str,
           layout: str) -> TableSchema:
    if ours is not None:
        names = {c.name for c in columns}
        keep = {k: getattr(ours, k) if getattr(ours, k) in names else None
                for k in ("key_column", "ra_column", "dec_column", "epoch_column")}
        if layout == "ours":
            return dataclasses.replace(ours, columns=columns, sources=(*ours.sources, told))
        return dataclasses.replace(
            ours, columns=columns, layout_status="documented", **keep,
            layout_note=f"Columns and order from {told}; a column matching ours by name or alias keeps our "
                        "name, aliases, type (where the kinds agree), words and nullability, the service's "
                        "words filling gaps; the service's other columns as it describes them (see each "
                        "column's origin).",
            sources=(*ours.sources, told), path=None)
    return TableSchema(
        table=table, title=table, product="", kind="service", layout_status="documented",
        layout_note=f"Every column from {told}; nullability not stated by the service (all nullable).",
        columns=columns, key_column=None, ra_column=_guess(columns, "pos.eq.ra"),
        dec_column=_guess(columns, "pos.eq.dec"), sources=(told,))


def schema_document(schema: TableSchema) -> dict:
    """A schema as the YAML document ``schemas/<table>.yaml`` holds."""
    doc = {k: getattr(schema, k) for k in ("table", "title", "product", "kind", "layout_status",
                                            "layout_note", "rows", "rows_source", "irsa_key", "irsa_columns",
                                            "data_dictionary", "default_constraint", "documentation",
                                            "key_column", "ra_column", "dec_column", "epoch_column")}
    doc["sources"] = list(schema.sources)
    doc["links"] = dict(schema.links) or None
    doc["columns"] = [{k: v for k, v in dataclasses.asdict(c).items() if v is not None or k in (
        "unit", "ucd")} for c in schema.columns]
    return doc


def write_schema(schema: TableSchema, path: str | Path) -> Path:
    """Write ``schema`` as a schema YAML file (loadable with :func:`tmass_lake.schema.load_schema`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    head = (f"# {schema.table}: {schema.title}\n# layout: {schema.layout_status}. {schema.layout_note}\n"
            "# Per column: origin = where each fact came from (a service's TAP_SCHEMA and the date, or our\n"
            "# documented source).\n")
    body = yaml.safe_dump(schema_document(schema), sort_keys=False, width=110, allow_unicode=True)
    path.write_text(head + body)
    return path
