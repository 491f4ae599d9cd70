"""Pipeline files: one declarative TOML file per product family, naming its tables.

A pipeline file (``pipelines/<family>.toml``, shipped with the package) reads::

    [pipeline]                      name, description
    [defaults]                      input patterns and any build parameter (apply to every table)
    [[table]]                       name, and optionally schema (default: the name), input
                                    (patterns relative to each input root, ``{table}`` expanded),
                                    any build parameter, indexes = [columns]
    [[derived]]                     name, source (a table), where = {column, equals} or
                                    "irsa_default" (the source schema's IRSA default constraint,
                                    e.g. cat=1), title, indexes: a catalog filtered from a built one

Every merged-source table (``cf_info``...) also gives a light-curve collection
(``cf_lightcurves``, :class:`LightCurveSpec`), built after the tables it joins.

Build parameters are resolved by :func:`~tmass_lake.convert.parameters.resolve_parameters`:
the file's ``[defaults]``, then the table's entry, then what the command line gave explicitly.
Names are checked (``[a-z0-9_]+``) and input patterns may not leave their root.
"""

from __future__ import annotations

import hashlib
import math
import tomllib
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from tmass_lake.convert.parameters import PARAMETER_NAMES, BuildParameters, resolve_parameters
from tmass_lake.errors import UserError, did_you_mean
from tmass_lake.readers.inputs import check_pattern
from tmass_lake.schema import TableSchema, check_table_name, light_curve_collection, load_schema

PIPELINE_PACKAGE = "tmass_lake.pipelines"  # the repository's pipelines/, shipped inside the package
ALL = "all"
IRSA_DEFAULT = "irsa_default"
DEFAULT_INPUT = ("irsa/{table}/*.gz",)


class PipelineError(UserError, ValueError):
    """A pipeline file that cannot be used as written; the message names the file and entry."""


@dataclass(frozen=True)
class TableSpec:
    """One table of a pipeline file, with its parameters resolved."""

    name: str
    family: str
    schema: str
    inputs: tuple[str, ...]
    params: BuildParameters
    indexes: tuple[str, ...] = ()

    def load_schema(self) -> TableSchema:
        return load_schema(self.schema)

    def patterns(self) -> list[str]:
        """Input patterns with ``{table}``/``{schema}`` expanded (relative to an input root)."""
        return [p.format(table=self.name, schema=self.schema) for p in self.inputs]

    def parameters(self) -> dict:
        return {"input": list(self.inputs), **self.params.as_dict(), "indexes": list(self.indexes)}


@dataclass(frozen=True)
class DerivedSpec:
    """A catalog filtered from a built table: rows where ``column == equals``."""

    name: str
    family: str
    source: str
    column: str
    equals: str | int | float
    title: str
    indexes: tuple[str, ...] = ()


@dataclass(frozen=True)
class LightCurveSpec:
    """The light-curve collection of a merged-source table of the pipeline."""

    name: str
    family: str
    info: str  # the merged-source table


@dataclass(frozen=True)
class Pipeline:
    """One pipeline file."""

    name: str
    description: str
    path: str
    sha256: str
    tables: tuple[TableSpec, ...]
    derived: tuple[DerivedSpec, ...] = ()

    @property
    def lightcurves(self) -> tuple[LightCurveSpec, ...]:
        """A light-curve collection per merged-source table (``cf_info`` -> ``cf_lightcurves``)."""
        return tuple(LightCurveSpec(light_curve_collection(t.name), self.name, t.name) for t in self.tables
                     if t.name == t.schema and t.load_schema().has_light_curves)

    @property
    def names(self) -> list[str]:
        return [*(t.name for t in self.tables), *(d.name for d in self.derived),
                *(c.name for c in self.lightcurves)]


_TOP_KEYS = {"pipeline", "defaults", "table", "derived"}
_LAYER_KEYS = {"input", "format", *PARAMETER_NAMES}
_TABLE_KEYS = {"name", "schema", "indexes", *_LAYER_KEYS}
_DERIVED_KEYS = {"name", "source", "where", "title", "indexes"}


def _unknown(where: str, got: dict, allowed: set[str]) -> None:
    extra = sorted(set(got) - allowed)
    if extra:
        raise PipelineError(f"{where}: unknown key(s) {extra} (allowed: {sorted(allowed)})")


def _table(where: str, value: Any) -> dict:
    """A TOML table, else an error naming ``where``."""
    if not isinstance(value, dict):
        raise PipelineError(f"{where}: must be a table ([...]), not {type(value).__name__}")
    return value


def _tables(where: str, value: Any) -> list[dict]:
    """An array of TOML tables ([[...]]), else an error naming ``where``."""
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise PipelineError(f"{where}: must be an array of tables ([[...]])")
    return value


def _string(where: str, key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise PipelineError(f"{where}: {key} must be a string, not {type(value).__name__}")
    return value


def _strings(where: str, key: str, value: Any, *, one: bool = False) -> tuple[str, ...]:
    """A list of strings (or, with ``one``, a single string), else an error naming the key."""
    if one and isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or (one and not value):
        allowed = "a string or a non-empty list of strings" if one else "a list of strings"
        raise PipelineError(f"{where}: {key} must be {allowed}")
    return tuple(value)


def _layer(entry: dict) -> dict[str, Any]:
    """The build parameters of a ``[defaults]`` or ``[[table]]`` entry (``format`` = input_format)."""
    out = {k: v for k, v in entry.items() if k in PARAMETER_NAMES}
    if "format" in entry:
        out["input_format"] = entry["format"]
    return out


def pipeline_dir() -> Traversable:
    """The packaged pipeline files."""
    return files(PIPELINE_PACKAGE)


def family_names() -> list[str]:
    """The packaged families (``6x``, ``calibration``, ...)."""
    return sorted(p.name[: -len(".toml")] for p in pipeline_dir().iterdir() if p.name.endswith(".toml"))


def load_pipeline(path: Traversable | Path | str, overrides: dict | None = None) -> Pipeline:
    """Parse and check one pipeline file (``overrides``: build parameters given on the command line)."""
    path = Path(path) if isinstance(path, str) else path
    raw = path.read_bytes()
    try:
        doc = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise PipelineError(f"{path}: not valid TOML: {e}") from e
    _unknown(str(path), doc, _TOP_KEYS)
    head = _table(f"{path} [pipeline]", doc.get("pipeline", {}))
    _unknown(f"{path} [pipeline]", head, {"name", "description"})
    family = check_table_name(head.get("name", path.name.rsplit(".", 1)[0]), f"{path} [pipeline] name")
    description = _string(f"{path} [pipeline]", "description", head.get("description", ""))
    defaults = _table(f"{path} [defaults]", doc.get("defaults", {}))
    _unknown(f"{path} [defaults]", defaults, _LAYER_KEYS)
    if "input" in defaults:
        _strings(f"{path} [defaults]", "input", defaults["input"], one=True)
    tables = [_table_spec(path, family, defaults, entry, overrides or {})
              for entry in _tables(f"{path} [[table]]", doc.get("table", []))]
    sources = {t.name: t.schema for t in tables}
    derived = [_derived_spec(path, family, entry, sources)
               for entry in _tables(f"{path} [[derived]]", doc.get("derived", []))]
    pipeline = Pipeline(family, description, str(path), hashlib.sha256(raw).hexdigest(),
                        tuple(tables), tuple(derived))
    if len(set(pipeline.names)) != len(pipeline.names):
        raise PipelineError(f"{path}: a table is listed twice")
    return pipeline


def _table_spec(path: Any, family: str, defaults: dict, entry: dict, overrides: dict) -> TableSpec:
    where = f"{path} [[table]] {entry.get('name', '?')}"
    _unknown(where, entry, _TABLE_KEYS)
    if "name" not in entry:
        raise PipelineError(f"{where}: every table needs a name")
    name = check_table_name(entry["name"], f"{where}: name")
    schema_name = _string(where, "schema", entry.get("schema", name))
    given = entry.get("input", defaults.get("input", list(DEFAULT_INPUT)))
    inputs = _strings(where, "input", given, one=True)
    for pattern in inputs:
        check_pattern(pattern, where)
    try:
        params = resolve_parameters(_layer(defaults), _layer(entry), overrides, where=where)
        schema = load_schema(schema_name)
    except UserError as e:
        raise PipelineError(str(e) if str(e).startswith(str(path)) else f"{where}: {e}") from e
    indexes = _strings(where, "indexes", entry.get("indexes", []))
    missing = [c for c in indexes if c not in schema.names]
    if missing:
        raise PipelineError(f"{where}: index column(s) {missing} not in schema {schema.table}")
    if indexes and not schema.positional:
        raise PipelineError(f"{where}: {schema.table} has no positions, so no HATS catalog to index")
    return TableSpec(name, family, schema_name, inputs, params, indexes)


def _irsa_default(where: str, schema_name: str) -> dict:
    """``where = "irsa_default"``: the source schema's IRSA default constraint as ``{column, equals}``."""
    try:
        found = load_schema(schema_name).default_filter()
    except UserError as e:
        raise PipelineError(f"{where}: {e}") from e
    if found is None:
        raise PipelineError(f"{where}: schema {schema_name} has no IRSA default constraint")
    return {"column": found[0], "equals": found[1]}


def _derived_spec(path: Any, family: str, entry: dict, sources: dict[str, str]) -> DerivedSpec:
    where = f"{path} [[derived]] {entry.get('name', '?')}"
    _unknown(where, entry, _DERIVED_KEYS)
    if not {"name", "source"} <= set(entry):
        raise PipelineError(f"{where}: needs name, source and where")
    check_table_name(entry["source"], f"{where}: source")
    cond = entry.get("where", {})
    if cond == IRSA_DEFAULT:
        cond = _irsa_default(where, sources.get(entry["source"], entry["source"]))
    if not isinstance(cond, dict) or set(cond) != {"column", "equals"}:
        raise PipelineError(f"{where}: needs where = {{column = ..., equals = ...}} "
                            f"or where = {IRSA_DEFAULT!r}")
    equals = cond["equals"]
    if not isinstance(equals, str | int | float) or (isinstance(equals, float) and not math.isfinite(equals)):
        raise PipelineError(f"{where}: where.equals must be a string, a finite number or true/false, "
                            f"not {equals!r}")
    return DerivedSpec(
        name=check_table_name(entry["name"], f"{where}: name"), family=family,
        source=check_table_name(entry["source"], f"{where}: source"),
        column=_string(where, "where.column", cond["column"]),
        equals=equals, title=_string(where, "title", entry.get("title", entry["name"])),
        indexes=_strings(where, "indexes", entry.get("indexes", [])),
    )


def _check_equals(path: str, d: DerivedSpec, arrow: str) -> None:
    """A derived catalog's ``equals`` must be a value its column can hold (else the filter fails
    only after the source table is built)."""
    v = d.equals
    number = isinstance(v, int | float) and not isinstance(v, bool)
    if arrow in ("string", "date32"):
        wanted = ("a string", isinstance(v, str))
    elif arrow == "bool":
        wanted = ("true or false", isinstance(v, bool))
    elif arrow.startswith("int"):
        wanted = ("an integer", number and float(v).is_integer())
    else:
        wanted = ("a number", number)
    if not wanted[1]:
        raise PipelineError(f"{path} [[derived]] {d.name}: where.equals = {v!r} cannot equal a value of "
                            f"{d.source}.{d.column} ({arrow}): give {wanted[0]}")


def pipeline_files(name_or_path: str) -> list[Traversable | Path]:
    """``all`` or a family name (the packaged pipelines), or a pipeline file or directory."""
    if name_or_path == ALL:
        return sorted((p for p in pipeline_dir().iterdir() if p.name.endswith(".toml")), key=lambda p: p.name)
    if name_or_path in family_names():
        return [pipeline_dir() / f"{name_or_path}.toml"]
    path = Path(name_or_path)
    if path.is_dir():
        found = sorted(path.glob("*.toml"))
        if not found:
            raise PipelineError(f"no pipeline files (*.toml) in {path}")
        return list(found)
    if path.is_file():
        return [path]
    families = [ALL, *family_names()]
    hint = did_you_mean(name_or_path, families)
    raise PipelineError(f"{name_or_path}: no such pipeline file, and not a family "
                        + (hint.strip() if "did you mean" in hint else f"({', '.join(families)})"))


def load_pipelines(name_or_path: str | Path, overrides: dict | None = None) -> list[Pipeline]:
    """The pipelines ``name_or_path`` names (see :func:`pipeline_files`), checked together."""
    pipelines = [load_pipeline(f, overrides) for f in pipeline_files(str(name_or_path))]
    seen: dict[str, str] = {}
    for p in pipelines:
        for name in p.names:
            if name in seen:
                raise PipelineError(f"table {name} is in both {seen[name]} and {p.path}")
            seen[name] = p.path
    tables = {t.name: t for p in pipelines for t in p.tables}
    for p in pipelines:
        for d in p.derived:
            source = tables.get(d.source)
            if source is None:
                raise PipelineError(f"{p.path}: {d.name} derives from {d.source}, which no pipeline builds")
            schema = source.load_schema()
            if not schema.positional or d.column not in schema.names:
                raise PipelineError(f"{p.path}: {d.name}: {d.source} is not positional or lacks {d.column}")
            if any(c not in schema.names for c in d.indexes):
                raise PipelineError(f"{p.path}: {d.name}: index columns must be columns of {d.source}")
            _check_equals(p.path, d, schema.column(d.column).arrow)
    return pipelines
