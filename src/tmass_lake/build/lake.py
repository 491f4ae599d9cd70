"""The whole Extended Mission in one lake: declarative pipeline files, one Dask client, a manifest.

A pipeline file (``pipelines/<family>.toml``) names a product family's tables::

    [pipeline]                      name, description
    [defaults]                      input, format, pixel_threshold, byte_threshold,
                                    highest_order, margin_arcsec (apply to every table)
    [[table]]                       name, and optionally schema (default: the name), input
                                    (patterns relative to each --input root, ``{table}``
                                    expanded), any default above, indexes = [columns]
    [[derived]]                     name, source (a table), where = {column, equals},
                                    title, indexes: a catalog filtered from a built one

Layout of the lake::

    LAKE/<table>/          a HATS collection (positional tables: catalog, margin, indexes)
                           or a plain Parquet dataset (tables without positions)
    LAKE/manifest.json     every table: schema, counts, inputs with sha256, tools, parameters
    LAKE/report/           report.txt, report.json, sky coverage and partition-order PNGs
    LAKE/_lake/tables/     one completion record per table (what ``--resume`` skips)

Precedence of build parameters: a command-line value given explicitly, then the table's entry,
then the file's ``[defaults]``, then the command line's defaults.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from dask.distributed import Client
from hats.catalog.dataset.collection_properties import CollectionProperties

from tmass_lake.build.arguments import BuildArguments
from tmass_lake.build.derive import DeriveArguments, DeriveError, derive_catalog
from tmass_lake.build.finish import upath
from tmass_lake.build.index import IndexArguments, build_indexes, register_indexes
from tmass_lake.build.parquet_table import ParquetBuildError, ParquetTableArguments, build_parquet_table
from tmass_lake.build.pipeline import BuildError, build_table
from tmass_lake.readers import InputError
from tmass_lake.schema import TableSchema, load_schema
from tmass_lake.storage import expand_inputs, filesystem, is_local, join, local_scratch, write_text

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
STATE_DIR = "_lake"
MANIFEST_VERSION = 1
TOOLS = ("tmass-lake", "hats", "lsdb", "pyarrow", "dask", "distributed", "numpy", "astropy")
PARAMETERS = ("input", "format", "pixel_threshold", "byte_threshold", "highest_order", "margin_arcsec")
DEFAULTS: dict = {"input": ["irsa/{table}/*.gz"], "format": "bulk", "pixel_threshold": 1_000_000,
                  "byte_threshold": 512 << 20, "highest_order": 10, "margin_arcsec": 10.0}


class LakeError(ValueError):
    """The lake cannot be built as asked; the message says why."""


@dataclass(frozen=True)
class TableSpec:
    """One table of a pipeline file, with its parameters resolved."""

    name: str
    family: str
    schema: str
    inputs: tuple[str, ...]
    input_format: str = "bulk"
    pixel_threshold: int = 1_000_000
    byte_threshold: int = 512 << 20
    highest_order: int = 10
    margin_arcsec: float = 10.0
    indexes: tuple[str, ...] = ()

    def load_schema(self) -> TableSchema:
        return load_schema(self.schema)

    def parameters(self) -> dict:
        return {"input": list(self.inputs), "format": self.input_format,
                "pixel_threshold": self.pixel_threshold, "byte_threshold": self.byte_threshold,
                "highest_order": self.highest_order, "margin_arcsec": self.margin_arcsec,
                "indexes": list(self.indexes)}


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
class Pipeline:
    """One pipeline file."""

    name: str
    description: str
    path: str
    sha256: str
    tables: tuple[TableSpec, ...]
    derived: tuple[DerivedSpec, ...] = ()


_TOP_KEYS = {"pipeline", "defaults", "table", "derived"}
_TABLE_KEYS = {"name", "schema", "indexes", *PARAMETERS}
_DERIVED_KEYS = {"name", "source", "where", "title", "indexes"}


def _unknown(where: str, got: dict, allowed: set[str]) -> None:
    extra = sorted(set(got) - allowed)
    if extra:
        raise ValueError(f"{where}: unknown key(s) {extra} (allowed: {sorted(allowed)})")


def _as_tuple(value: str | list[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def load_pipeline(path: str | Path, overrides: dict | None = None) -> Pipeline:
    """Parse and check one pipeline file (``overrides``: explicit command-line parameters)."""
    path = Path(path)
    raw = path.read_bytes()
    try:
        doc = tomllib.loads(raw.decode())
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML: {e}") from e
    _unknown(str(path), doc, _TOP_KEYS)
    head = doc.get("pipeline", {})
    _unknown(f"{path} [pipeline]", head, {"name", "description"})
    family = head.get("name", path.stem)
    defaults = doc.get("defaults", {})
    _unknown(f"{path} [defaults]", defaults, set(PARAMETERS))
    tables = []
    for entry in doc.get("table", []):
        where = f"{path} [[table]] {entry.get('name', '?')}"
        _unknown(where, entry, _TABLE_KEYS)
        if "name" not in entry:
            raise ValueError(f"{where}: every table needs a name")
        p = DEFAULTS | defaults | {k: entry[k] for k in PARAMETERS if k in entry} | (overrides or {})
        spec = TableSpec(
            name=entry["name"], family=family, schema=entry.get("schema", entry["name"]),
            inputs=_as_tuple(p["input"]), input_format=p["format"], pixel_threshold=int(p["pixel_threshold"]),
            byte_threshold=int(p["byte_threshold"]), highest_order=int(p["highest_order"]),
            margin_arcsec=float(p["margin_arcsec"]), indexes=tuple(entry.get("indexes", ())),
        )
        _check_table(where, spec)
        tables.append(spec)
    derived = []
    for entry in doc.get("derived", []):
        where = f"{path} [[derived]] {entry.get('name', '?')}"
        _unknown(where, entry, _DERIVED_KEYS)
        cond = entry.get("where", {})
        if not {"name", "source"} <= set(entry) or set(cond) != {"column", "equals"}:
            raise ValueError(f"{where}: needs name, source and where = {{column = ..., equals = ...}}")
        derived.append(DerivedSpec(
            name=entry["name"], family=family, source=entry["source"], column=cond["column"],
            equals=cond["equals"], title=entry.get("title", entry["name"]),
            indexes=tuple(entry.get("indexes", ())),
        ))
    names = [t.name for t in tables] + [d.name for d in derived]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: a table is listed twice")
    return Pipeline(family, head.get("description", ""), str(path), hashlib.sha256(raw).hexdigest(),
                    tuple(tables), tuple(derived))


def _check_table(where: str, spec: TableSpec) -> None:
    schema = spec.load_schema()
    if spec.input_format not in ("bulk", "ipac"):
        raise ValueError(f"{where}: format must be bulk or ipac")
    missing = [c for c in spec.indexes if c not in schema.names]
    if missing:
        raise ValueError(f"{where}: index column(s) {missing} not in schema {schema.table}")
    if spec.indexes and not schema.positional:
        raise ValueError(f"{where}: {schema.table} has no positions, so no HATS catalog to index")
    if spec.margin_arcsec <= 0:
        raise ValueError(f"{where}: margin_arcsec must be positive")


def load_pipelines(path: str | Path, overrides: dict | None = None) -> list[Pipeline]:
    """A pipeline file, or every ``*.toml`` of a directory (sorted); table names must be unique."""
    path = Path(path)
    files = sorted(path.glob("*.toml")) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"no pipeline files (*.toml) in {path}")
    pipelines = [load_pipeline(f, overrides) for f in files]
    seen: dict[str, str] = {}
    for p in pipelines:
        for name in [t.name for t in p.tables] + [d.name for d in p.derived]:
            if name in seen:
                raise ValueError(f"table {name} is in both {seen[name]} and {p.path}")
            seen[name] = p.path
    for p in pipelines:
        for d in p.derived:
            source = next((t for q in pipelines for t in q.tables if t.name == d.source), None)
            if source is None:
                raise ValueError(f"{p.path}: {d.name} derives from {d.source}, which no pipeline builds")
            schema = source.load_schema()
            if not schema.positional or d.column not in schema.names:
                raise ValueError(f"{p.path}: {d.name}: {d.source} is not positional or lacks {d.column}")
            if any(c not in schema.names for c in d.indexes):
                raise ValueError(f"{p.path}: {d.name}: index columns must be columns of {d.source}")
    return pipelines


@dataclass(frozen=True)
class LakeArguments:
    """A lake build: which pipelines, from which input roots, into which lake."""

    pipelines: tuple[Pipeline, ...]
    input_roots: tuple[str, ...]
    output: str
    tmp_dir: str | None = None
    storage_options: dict = field(default_factory=dict)
    resume: bool = False
    progress: bool = True
    tables: tuple[str, ...] | None = None  # restrict the build to these names
    report_plots: bool = True
    index_rows_per_file: int = 5_000_000
    echo: Callable[[str], None] = print

    def __post_init__(self) -> None:
        if not self.input_roots:
            raise ValueError("no input root")
        if self.tables is not None:
            known = {t.name for p in self.pipelines for t in p.tables}
            known |= {d.name for p in self.pipelines for d in p.derived}
            unknown = sorted(set(self.tables) - known)
            if unknown:
                raise ValueError(f"tables {unknown} are in no pipeline given")

    def wanted(self, name: str) -> bool:
        return self.tables is None or name in self.tables

    @property
    def tmp_root(self) -> str:
        if self.tmp_dir:
            return self.tmp_dir
        fs, _ = filesystem(self.output, self.storage_options)
        if is_local(fs):
            return join(self.output, "_build")
        return local_scratch(self.output)


def tool_versions() -> dict[str, str]:
    out = {}
    for name in TOOLS:
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    out["python"] = sys.version.split()[0]
    return out


def schema_entry(schema: TableSchema) -> dict:
    """The manifest's description of a table schema."""
    return {
        "name": schema.table, "title": schema.title, "product": schema.product, "kind": schema.kind,
        "layout_status": schema.layout_status, "key_column": schema.key_column,
        "ra_column": schema.ra_column, "dec_column": schema.dec_column, "links": schema.links or None,
        "file": Path(schema.path).name if schema.path else None,
        "columns": [{"name": c.name, "type": c.arrow, "unit": c.unit, "nullable": c.nullable}
                    for c in schema.columns],
    }


def resolve_inputs(spec: TableSpec, roots: tuple[str, ...], storage_options: dict) -> list[str]:
    """Input files of a table: each pattern under each root (patterns matching nothing are dropped)."""
    found: list[str] = []
    for root in roots:
        for pattern in spec.inputs:
            url = join(root, pattern.format(table=spec.name, schema=spec.schema))
            try:
                found.extend(expand_inputs([url], storage_options))
            except InputError:  # nothing there: the table has no input under this root
                continue
    return list(dict.fromkeys(found))


class LakeState:
    """Completion records under ``LAKE/_lake``: one JSON file per table."""

    def __init__(self, args: LakeArguments):
        self.fs, self.root = filesystem(join(args.output, STATE_DIR), args.storage_options)

    def _path(self, kind: str, name: str) -> str:
        return join(self.root, kind, f"{name}.json")

    def get(self, name: str) -> dict | None:
        path = self._path("tables", name)
        if not self.fs.exists(path):
            return None
        with self.fs.open(path, "rt") as f:
            return json.load(f)

    def put(self, name: str, entry: dict) -> None:
        write_text(self.fs, self._path("tables", name), json.dumps(entry, indent=1, default=str))

    def all(self) -> dict[str, dict]:
        out = {}
        for p in sorted(self.fs.glob(join(self.root, "tables", "*.json"))):
            with self.fs.open(p, "rt") as f:
                entry = json.load(f)
            out[entry["name"]] = entry
        return out

    def put_pipeline(self, pipeline: Pipeline) -> None:
        rec = {"name": pipeline.name, "description": pipeline.description, "file": pipeline.path,
               "sha256": pipeline.sha256, "tables": [t.name for t in pipeline.tables],
               "derived": [d.name for d in pipeline.derived]}
        write_text(self.fs, self._path("pipelines", pipeline.name), json.dumps(rec, indent=1))

    def pipelines(self) -> dict[str, dict]:
        out = {}
        for p in sorted(self.fs.glob(join(self.root, "pipelines", "*.json"))):
            with self.fs.open(p, "rt") as f:
                rec = json.load(f)
            out[rec["name"]] = rec
        return out


def _index(args: LakeArguments, name: str, columns: tuple[str, ...], key: str | None,
           client: Client) -> dict:
    if not columns:
        return {}
    built = build_indexes(IndexArguments(
        collection=join(args.output, name), catalog=name, columns=columns,
        tmp_dir=join(args.tmp_root, f"{name}_index"), storage_options=args.storage_options,
        rows_per_file=args.index_rows_per_file, progress=args.progress), client)
    register_indexes(join(args.output, name), {c: b["path"] for c, b in built.items()},
                     args.storage_options, default=key)
    return built


def _completed_report(args: LakeArguments, name: str) -> dict | None:
    """The build report of a table whose data build finished in an earlier, interrupted lake run."""
    if not args.resume:
        return None
    fs, root = filesystem(join(args.output, name, "build_report.json"), args.storage_options)
    if not fs.exists(root):
        return None
    with fs.open(root, "rt") as f:
        return json.load(f)


def build_one(args: LakeArguments, spec: TableSpec, inputs: list[str], client: Client) -> dict:
    """Build one table (collection or Parquet dataset) and its indexes; returns its manifest entry."""
    schema = spec.load_schema()
    output = join(args.output, spec.name)
    tmp = join(args.tmp_root, spec.name)
    report = _completed_report(args, spec.name)
    if schema.positional:
        if report is None:
            report = build_table(BuildArguments(
                schema=schema, inputs=tuple(inputs), output=output, tmp_dir=tmp,
                input_format=spec.input_format, storage_options=args.storage_options,
                pixel_threshold=spec.pixel_threshold, byte_threshold=spec.byte_threshold,
                highest_order=spec.highest_order, margin_arcsec=spec.margin_arcsec, resume=args.resume,
                progress=args.progress), client)
        indexes = _index(args, spec.name, spec.indexes, schema.key_column, client)
        props = CollectionProperties.read_from_dir(upath(output, args.storage_options))
        entry = {"type": "collection", "format": "hats", "catalog": props.hats_primary_table_url,
                 "margin": props.default_margin,
                 "margin_rows": report.get("margin_rows", 0), "margin_arcsec": spec.margin_arcsec,
                 "indexes": indexes}
    else:
        if report is None:
            report = build_parquet_table(ParquetTableArguments(
                schema=schema, inputs=tuple(inputs), output=output, tmp_dir=tmp,
                input_format=spec.input_format, storage_options=args.storage_options,
                resume=args.resume, progress=args.progress), client)
        entry = {"type": "parquet", "format": "parquet", "dataset": "dataset"}  # data under <path>/dataset
    # Size and sha256 were taken while the build read each file: no second read for provenance.
    files = [{k: rec.get(k) for k in ("path", "bytes", "sha256", "lines", "rows", "quarantined")}
             for rec in report["inputs"]]
    return {
        "name": spec.name, "family": spec.family, "path": spec.name, **entry,
        "schema": schema_entry(schema),
        "rows": report["rows_written"], "lines_read": report["lines_read"],
        "rows_quarantined": report["rows_quarantined"], "partitions": report["partitions"],
        "bytes": report["bytes"], "seconds": report["seconds"],
        "inputs": files, "parameters": spec.parameters(),
    }


def derive_one(args: LakeArguments, spec: DerivedSpec, state: LakeState, client: Client) -> dict:
    """Filter a built collection into a derived one and index it; returns its manifest entry."""
    source = state.get(spec.source)
    if source is None or source.get("type") != "collection":
        raise LakeError(f"{spec.name}: its source {spec.source} is not built in this lake")
    schema = load_schema(source["schema"]["name"])
    report = derive_catalog(DeriveArguments(
        name=spec.name, title=spec.title, schema=schema, source=join(args.output, spec.source),
        output=join(args.output, spec.name), column=spec.column, value=spec.equals,
        storage_options=args.storage_options, progress=args.progress), client)
    indexes = _index(args, spec.name, spec.indexes, schema.key_column, client)
    margin = f"{spec.name}_{report['margin_arcsec']:g}arcsec" if report["margin_rows"] else None
    return {
        "name": spec.name, "family": spec.family, "path": spec.name, "type": "derived", "format": "hats",
        "catalog": spec.name, "margin": margin, "margin_rows": report["margin_rows"],
        "margin_arcsec": report["margin_arcsec"], "indexes": indexes,
        "derived_from": {"table": spec.source, "where": {"column": spec.column, "equals": spec.equals}},
        "schema": schema_entry(schema) | {"title": spec.title},
        "rows": report["rows_written"], "lines_read": report["source_rows"], "rows_quarantined": 0,
        "partitions": report["partitions"], "bytes": report["bytes"], "seconds": report["seconds"],
        "inputs": [], "parameters": {"source": spec.source, "where": report["where"],
                                     "indexes": list(spec.indexes)},
    }


def _finish_entry(entry: dict, started: float) -> dict:
    entry["built"] = datetime.now(UTC).isoformat(timespec="seconds")
    entry["built_with"] = tool_versions()
    entry["lake_seconds"] = round(time.time() - started, 3)
    entry["status"] = "built"
    return entry


def write_manifest(args: LakeArguments, state: LakeState, skipped: dict[str, str], run: dict) -> dict:
    """``LAKE/manifest.json`` from every completion record (earlier runs included)."""
    tables = state.all()
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "lake": "2MASS Extended Mission (tmass-lake)",
        "updated": datetime.now(UTC).isoformat(timespec="seconds"),
        "tools": tool_versions(),
        "pipelines": state.pipelines(),
        "tables": tables,
        "skipped": {k: v for k, v in skipped.items() if k not in tables},
        "last_run": run,
        "totals": {
            "tables": len(tables),
            "collections": sum(1 for t in tables.values() if t["type"] in ("collection", "derived")),
            "parquet_tables": sum(1 for t in tables.values() if t["type"] == "parquet"),
            "rows": sum(t["rows"] for t in tables.values() if t["type"] != "derived"),
            "rows_quarantined": sum(t["rows_quarantined"] for t in tables.values()),
            "bytes": sum(t["bytes"] for t in tables.values()),
        },
    }
    fs, root = filesystem(args.output, args.storage_options)
    write_text(fs, join(root, MANIFEST), json.dumps(manifest, indent=1, default=str))
    return manifest


def build_lake(args: LakeArguments, client: Client) -> dict:
    """Build every table of the pipelines into the lake; returns the manifest."""
    from tmass_lake.build.report import write_lake_report

    started = time.time()
    state = LakeState(args)
    echo = args.echo
    specs = [t for p in args.pipelines for t in p.tables if args.wanted(t.name)]
    derived = [d for p in args.pipelines for d in p.derived if args.wanted(d.name)]
    total = len(specs) + len(derived)
    skipped: dict[str, str] = {}
    built: set[str] = set()
    for p in args.pipelines:
        state.put_pipeline(p)
    for n, spec in enumerate(specs, start=1):
        t0 = time.time()
        head = f"[{n}/{total}] {spec.name}"
        if state.get(spec.name) is not None:
            if not args.resume:
                raise LakeError(f"{spec.name} is already built in {args.output}; pass --resume to skip "
                                "finished tables or choose a new output")
            echo(f"{head}: already built, skipped")
            continue
        inputs = resolve_inputs(spec, args.input_roots, args.storage_options)
        if not inputs:
            skipped[spec.name] = f"no input files match {list(spec.inputs)} under {list(args.input_roots)}"
            echo(f"{head}: WARNING no input files ({', '.join(spec.inputs)}), skipped")
            continue
        kind = "collection" if spec.load_schema().positional else "parquet"
        echo(f"{head}: building {kind} from {len(inputs)} file(s)")
        try:
            entry = _finish_entry(build_one(args, spec, inputs, client), t0)
        except (BuildError, ParquetBuildError) as e:
            raise LakeError(f"{spec.name}: {e}") from e
        state.put(spec.name, entry)
        built.add(spec.name)
        layout = (f"{entry['partitions']} partition(s), {len(entry['indexes'])} index(es)"
                  if kind == "collection" else f"{entry['partitions']} file(s)")
        echo(f"{head}: {entry['rows']:,} rows, {entry['rows_quarantined']:,} quarantined, {layout} "
             f"({entry['lake_seconds']:.1f} s)")
    for n, spec in enumerate(derived, start=len(specs) + 1):
        t0 = time.time()
        head = f"[{n}/{total}] {spec.name}"
        if state.get(spec.name) is not None:
            if not args.resume:
                raise LakeError(f"{spec.name} is already built in {args.output}; pass --resume")
            echo(f"{head}: already built, skipped")
            continue
        if state.get(spec.source) is None:
            skipped[spec.name] = f"its source {spec.source} is not built"
            echo(f"{head}: WARNING source {spec.source} not built, skipped")
            continue
        echo(f"{head}: deriving from {spec.source} where {spec.column} == {spec.equals!r}")
        try:
            entry = _finish_entry(derive_one(args, spec, state, client), t0)
        except DeriveError as e:
            raise LakeError(str(e)) from e
        state.put(spec.name, entry)
        built.add(spec.name)
        echo(f"{head}: {entry['rows']:,} rows in {entry['partitions']} partition(s) "
             f"({entry['lake_seconds']:.1f} s)")
    run = {"pipelines": [p.path for p in args.pipelines], "input_roots": list(args.input_roots),
           "tables": list(args.tables) if args.tables else None, "resume": args.resume,
           "built": sorted(built), "workers": len(client.scheduler_info().get("workers", {})),
           "seconds": round(time.time() - started, 3)}
    manifest = write_manifest(args, state, skipped, run)
    write_lake_report(args.output, manifest, args.storage_options, plots=args.report_plots, client=client,
                      replot=built)
    fs, tmp = filesystem(args.tmp_root, args.storage_options)
    if fs.exists(tmp) and not fs.ls(tmp):
        fs.rm(tmp, recursive=True)
    echo(f"lake {args.output}: {manifest['totals']['tables']} tables, {manifest['totals']['rows']:,} rows "
         f"({time.time() - started:.1f} s); manifest.json and report/ written")
    return manifest


def cli_overrides(ns: argparse.Namespace) -> dict:
    """Build parameters given explicitly on the command line (they differ from the parser defaults)."""
    from tmass_lake.cli import build_parser

    defaults = build_parser().parse_args(["build", "--input", "-", "--output", "-"])
    names = {"format": "format", "pixel_threshold": "pixel_threshold",
             "byte_threshold": "byte_threshold", "highest_order": "highest_order",
             "margin_arcsec": "margin_arcsec"}
    return {key: getattr(ns, attr) for key, attr in names.items()
            if getattr(ns, attr) != getattr(defaults, attr)}


def build_lake_command(ns: argparse.Namespace, storage_options: dict) -> int:
    """``tmass-lake build PIPELINE --input ROOT... --output LAKE``: one family, or every file of a folder."""
    from tmass_lake.cluster import dask_client

    if ns.table:
        raise ValueError("give either a pipeline or --table, not both")
    pipelines = load_pipelines(ns.pipeline, cli_overrides(ns))
    args = LakeArguments(
        pipelines=tuple(pipelines), input_roots=tuple(ns.input), output=ns.output, tmp_dir=ns.tmp_dir,
        storage_options=storage_options, resume=ns.resume, progress=not ns.quiet,
    )
    with dask_client(ns.scheduler, ns.workers, ns.memory_limit) as client:
        manifest = build_lake(args, client)
    if manifest["skipped"]:
        print(f"skipped (see manifest.json): {', '.join(sorted(manifest['skipped']))}", file=sys.stderr)
    return 0
