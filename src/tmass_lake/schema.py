"""Table schemas: one YAML file per IRSA table in ``schemas/``, loaded into Arrow schemas.

Each column carries its documented type, the Arrow storage type, unit, UCD, description,
nullability and provenance (documented, with its source, or inferred, and from what), and the
other names inputs give it (``aliases``: Gator writes ``date`` as ``xdate``). A string column's
documented type gives its width (``3s``, ``%17s``): a longer value is quarantined with its line,
never cut (it means the line does not match the layout).

Table-level facts: ``layout_status`` (``documented``, ``partial``, ``inferred``, ``incomplete``
where IRSA's own column count shows columns are missing, or ``inferred from FILE`` for a layout
``tmass-lake inspect`` proposed) and ``layout_note``; from IRSA's Gator catalog table
(``irsa_gator_catalogs.csv``): ``rows``/``rows_source``, ``irsa_key``, ``irsa_columns`` (its
database column count, IRSA's computed columns included: an upper bound on a file's),
``data_dictionary`` (IRSA's name for the table's column dictionary: tables sharing one share a
format, e.g. every link table's ``link_dd``),
``default_constraint`` (what Gator applies unless told otherwise) and ``documentation``.
A user can point any reader at their own file to drop in a real layout.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, replace
from functools import cache
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

import pyarrow as pa
import yaml

from tmass_lake.errors import UnknownTableError, UserError, did_you_mean

SCHEMA_DIR_ENV = "TMASS_LAKE_SCHEMAS"
SCHEMA_PACKAGE = "tmass_lake.schemas"  # the repository's schemas/, shipped inside the package
TABLE_NAME = re.compile(r"[a-z0-9_]+")
"""IRSA table names (and ours): lower-case letters, digits and underscores, nothing else."""
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~20x faster when present

INPUT_HEADER = "input header"
"""Provenance of a column the schema does not list, kept with what the input's header says."""

_ARROW_TYPES: dict[str, pa.DataType] = {
    "float32": pa.float32(),
    "float64": pa.float64(),
    "int8": pa.int8(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "string": pa.string(),
    "date32": pa.date32(),
    "bool": pa.bool_(),
}


def schema_dir() -> Traversable:
    """The directory holding the table schema files: ``$TMASS_LAKE_SCHEMAS``, else the packaged ones."""
    if env := os.environ.get(SCHEMA_DIR_ENV):
        return Path(env)
    return files(SCHEMA_PACKAGE)


def check_table_name(name: str, where: str = "table name") -> str:
    """``name`` if it is a valid table name (``[a-z0-9_]+``), else a :class:`UserError` saying where."""
    if not isinstance(name, str) or not TABLE_NAME.fullmatch(name):
        raise UserError(f"{where}: {name!r} is not a table name (lower-case letters, digits and _ only)")
    return name


@dataclass(frozen=True)
class Column:
    """One column as the schema file describes it."""

    name: str
    type: str
    arrow: str
    unit: str | None
    ucd: str | None
    description: str
    nullable: bool
    provenance: str
    source: str
    aliases: tuple[str, ...] = ()
    principal: bool | None = None
    """A service's TAP_SCHEMA flags (``None``: not known)."""
    indexed: bool | None = None
    origin: dict[str, str] | None = None
    """Where each fact came from (``{"unit": "TAP_SCHEMA.columns of URL, DATE", ...}``), when merged."""

    @property
    def arrow_type(self) -> pa.DataType:
        return _ARROW_TYPES[self.arrow]

    @property
    def width(self) -> int | None:
        """Characters a documented string type allows (``3s``, ``%17s``, ``char(6)``), if it says."""
        return string_width(self.type) if self.arrow == "string" else None

    @property
    def scale(self) -> int | None:
        """Digits after the decimal point of a documented fixed-point type, if any."""
        m = re.search(r"(?:\d+\.(\d+)f)|(?:decimal\(\d+,(\d+)\))", self.type)
        if not m:
            return None
        return int(m.group(1) or m.group(2))

    def field(self) -> pa.Field:
        meta = {"description": self.description, "provenance": self.provenance,
                "source": self.source, "documented_type": self.type}
        if self.unit:
            meta["unit"] = self.unit
        if self.ucd:
            meta["ucd"] = self.ucd
        if self.origin:
            meta["origin"] = json.dumps(self.origin, sort_keys=True)
        return pa.field(self.name, self.arrow_type, nullable=self.nullable, metadata=meta)


@dataclass(frozen=True)
class TableSchema:
    """A table's layout and the roles of its columns."""

    table: str
    title: str
    product: str
    kind: str
    layout_status: str
    layout_note: str
    columns: tuple[Column, ...]
    key_column: str | None = None
    ra_column: str | None = None
    dec_column: str | None = None
    epoch_column: str | None = None
    rows: int | None = None
    rows_source: str | None = None
    sources: tuple[str, ...] = ()
    links: dict[str, str] = field(default_factory=dict)
    path: str | None = None
    irsa_key: str | None = None
    irsa_columns: int | None = None
    default_constraint: str | None = None
    documentation: str | None = None
    data_dictionary: str | None = None
    """IRSA's data dictionary of the table (``info_dd``: shared by a family's merged information tables)."""

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def lookup(self) -> dict[str, Column]:
        """Every column by its name and by each alias, lower-cased (how inputs are matched)."""
        out = {a.lower(): c for c in self.columns for a in c.aliases}
        return out | {c.name.lower(): c for c in self.columns}

    def with_columns(self, extra: tuple[Column, ...] | list[Column]) -> TableSchema:
        """This schema with ``extra`` columns after its own (the columns an input adds)."""
        return replace(self, columns=self.columns + tuple(extra)) if extra else self

    def default_filter(self) -> tuple[str, str | int | float] | None:
        """IRSA's default constraint as ``(column, value)`` (``cat=1`` -> ``("cat", "1")``), typed by
        the column; ``None`` without one. Only ``column = value`` constraints are filters."""
        if not self.default_constraint:
            return None
        m = re.fullmatch(r"\s*(\w+)\s*=\s*(?:'([^']*)'|\"([^\"]*)\"|([\w.+-]+))\s*", self.default_constraint)
        if not m or m.group(1) not in self.names:
            raise UserError(f"{self.table}: IRSA's default constraint {self.default_constraint!r} is not "
                            "'column = value' on one of its columns")
        column = self.column(m.group(1))
        text = next(g for g in m.groups()[1:] if g is not None)
        if pa.types.is_integer(column.arrow_type):
            return column.name, int(text)
        if pa.types.is_floating(column.arrow_type):
            return column.name, float(text)
        return column.name, text

    @property
    def positional(self) -> bool:
        return self.ra_column is not None and self.dec_column is not None

    @property
    def has_light_curves(self) -> bool:
        """A merged-source table with member detections: a light-curve collection can be built."""
        return self.kind == "merged_sources" and bool(self.links.get("detections"))

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.table} has no column {name!r}")

    def arrow_schema(self) -> pa.Schema:
        """The Arrow schema with per-field unit/description/UCD and table-level provenance."""
        meta = {
            "table": self.table,
            "title": self.title,
            "product": self.product,
            "layout_status": self.layout_status,
            "layout_note": self.layout_note,
            "sources": json.dumps(list(self.sources)),
        }
        return pa.schema([c.field() for c in self.columns], metadata=meta)


def arrow_name(t: pa.DataType) -> str | None:
    """The schema files' name of an Arrow storage type (``float64``), or ``None`` if they have none."""
    return next((name for name, known in _ARROW_TYPES.items() if known == t), None)


def _column(c: dict) -> Column:
    values = {k: c.get(k) for k in Column.__dataclass_fields__ if k != "aliases"}
    return Column(**values, aliases=tuple(c.get("aliases") or ()))


def string_width(documented_type: str) -> int | None:
    """Characters a documented string type allows (``3s``, ``%17s``, ``char(6)``), if it says."""
    m = re.fullmatch(r"%?(\d+)s|(?:var)?char\((\d+)\)", documented_type.strip())
    return int(m.group(1) or m.group(2)) if m else None


def light_curve_collection(info_table: str) -> str:
    """The lake name of the light curves of a merged-source table (``cf_info`` -> ``cf_lightcurves``)."""
    return f"{info_table.removesuffix('_info')}_lightcurves"


class SchemaFileError(UserError, ValueError):
    """A schema file that is not valid YAML or not a schema; one line naming the file and key."""


_REQUIRED = {"table": str, "title": str, "kind": str, "layout_status": str, "columns": list}
_OPTIONAL = {"product": str, "layout_note": str, "key_column": str, "ra_column": str, "dec_column": str,
             "epoch_column": str, "rows": int, "rows_source": str, "sources": list, "links": dict,
             "irsa_key": str, "irsa_columns": int, "default_constraint": str, "documentation": str}
_COLUMN_TYPES = {"name": str, "type": str, "arrow": str, "unit": str, "ucd": str, "description": str,
                 "nullable": bool, "provenance": str, "source": str, "aliases": list, "principal": bool,
                 "indexed": bool, "origin": dict}
_TYPE_WORDS = {str: "a string", int: "an integer", bool: "true or false", list: "a list", dict: "a mapping"}


def _kind_ok(value: object, kind: type) -> bool:
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def read_schema_document(text: str, path: str) -> dict:
    """The mapping a schema file holds, type-checked, or a :class:`SchemaFileError` naming the file.

    Safe YAML only (a ``!!python`` tag is refused, never executed); a list, a syntax error, a
    missing key or a value of the wrong type is one line saying where and what is allowed.
    """
    try:
        doc = yaml.load(text, Loader=_YAML_LOADER)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SchemaFileError(f"{path}{where}: not a schema file: YAML error: {problem}") from None
    if not isinstance(doc, dict):
        raise SchemaFileError(f"{path}: not a schema file: expected a mapping of keys (table, title, kind, "
                              f"layout_status, columns), not {type(doc).__name__}")
    for key in _REQUIRED:
        if key not in doc:
            raise SchemaFileError(f"{path}: not a schema file: no {key!r} key")
    for key, kind in (_REQUIRED | _OPTIONAL).items():
        if doc.get(key) is not None and not _kind_ok(doc[key], kind):
            raise SchemaFileError(f"{path}: {key} must be {_TYPE_WORDS[kind]}, not {type(doc[key]).__name__}")
    for i, c in enumerate(doc["columns"]):
        if not isinstance(c, dict):
            raise SchemaFileError(f"{path}: columns[{i}] must be a mapping (name, type, arrow, ...), "
                                  f"not {type(c).__name__}")
        for key, kind in _COLUMN_TYPES.items():
            if c.get(key) is not None and not _kind_ok(c[key], kind):
                raise SchemaFileError(f"{path}: columns[{i}] {c.get('name', '?')!s:.40}: {key} must be "
                                      f"{_TYPE_WORDS[kind]}, not {type(c[key]).__name__}")
        if not isinstance(c.get("name"), str) or not c["name"]:
            raise SchemaFileError(f"{path}: columns[{i}]: every column needs a name (a string)")
        if not all(isinstance(a, str) for a in c.get("aliases") or ()):
            raise SchemaFileError(f"{path}: column {c['name']}: aliases must be a list of strings")
    if not all(isinstance(s, str) for s in doc.get("sources") or ()):
        raise SchemaFileError(f"{path}: sources must be a list of strings")
    return doc


def _parse(doc: dict, path: str | None) -> TableSchema:
    check_table_name(doc.get("table"), f"{path}: table")
    columns = tuple(_column(c) for c in doc["columns"])
    names = [n.lower() for c in columns for n in (c.name, *c.aliases)]
    if len(set(names)) != len(names):
        raise SchemaFileError(f"{path}: duplicate column names or aliases")
    for c in columns:
        if c.arrow not in _ARROW_TYPES:
            raise SchemaFileError(f"{path}: column {c.name}: unknown arrow type {c.arrow!r} "
                                  f"(allowed: {', '.join(_ARROW_TYPES)})")
    return TableSchema(
        table=doc["table"], title=doc["title"], product=doc.get("product", ""), kind=doc["kind"],
        layout_status=doc["layout_status"], layout_note=doc.get("layout_note", ""),
        columns=columns, key_column=doc.get("key_column"), ra_column=doc.get("ra_column"),
        dec_column=doc.get("dec_column"), epoch_column=doc.get("epoch_column"),
        rows=doc.get("rows"), rows_source=doc.get("rows_source"),
        sources=tuple(doc.get("sources") or ()), links=dict(doc.get("links") or {}), path=path,
        irsa_key=doc.get("irsa_key"), irsa_columns=doc.get("irsa_columns"),
        default_constraint=doc.get("default_constraint"), documentation=doc.get("documentation"),
        data_dictionary=doc.get("data_dictionary"),
    )


@cache
def load_schema(name_or_path: str) -> TableSchema:
    """Load a table schema by IRSA table name (``pt_src_6x2``) or by the path of a YAML file."""
    path: Traversable = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = schema_dir() / f"{check_table_name(name_or_path)}.yaml"
    if not path.is_file():
        hint = did_you_mean(name_or_path, list_tables()) if path.name.startswith(name_or_path) else ""
        raise UnknownTableError(f"no schema for table {name_or_path!r} (looked for {path}){hint}")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise SchemaFileError(f"{path}: cannot be read as a schema file: {e}") from None
    return _parse(read_schema_document(text, str(path)), str(path))


def list_tables() -> list[str]:
    """Every table with a schema file, sorted by name."""
    return sorted(p.name[: -len(".yaml")] for p in schema_dir().iterdir() if p.name.endswith(".yaml"))
