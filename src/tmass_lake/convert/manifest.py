"""The lake's ``manifest.json``: every table, its schema, counts, inputs and provenance, and what
``tmass-lake info`` prints of it (the checks behind ``tmass-lake verify`` are
:mod:`~tmass_lake.convert.verify`; this module stays free of hats so that ``info`` answers fast).

Entries are made from each table's build report (:func:`table_entry`), kept as completion
records under ``LAKE/_lake`` between runs, and gathered into the manifest at the end of every
lake build (:func:`write_manifest`).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import uuid
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from tmass_lake.errors import ManifestError, UserError
from tmass_lake.schema import INPUT_HEADER, TableSchema
from tmass_lake.storage import filesystem, inside, join, read_json, url_of, write_json

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
HATS_TYPES = ("collection", "derived", "lightcurves")
DERIVED_TYPES = ("derived", "lightcurves")
"""Entry types: HATS collections; collections made from other tables (their rows are not new rows)."""
MANIFEST_VERSION = 2
TOOLS = ("tmass-lake", "hats", "lsdb", "pyarrow", "dask", "distributed", "numpy", "astropy")


def tool_versions() -> dict[str, str]:
    out = {}
    for name in TOOLS:
        with contextlib.suppress(PackageNotFoundError):
            out[name] = version(name)
    out["python"] = sys.version.split()[0]
    return out


def schema_entry(schema: TableSchema, input_only: list[dict] | None = None,
                 absent: list[str] | None = None) -> dict:
    """The manifest's description of a table schema as built: its documented columns but the
    ``absent`` ones (no input had them), then the columns only its inputs had."""
    gone = set(absent or ())
    return {
        "name": schema.table, "title": schema.title, "product": schema.product, "kind": schema.kind,
        "layout_status": schema.layout_status, "key_column": schema.key_column,
        "ra_column": schema.ra_column, "dec_column": schema.dec_column, "links": schema.links or None,
        "irsa_key": schema.irsa_key, "default_constraint": schema.default_constraint,
        "file": Path(schema.path).name if schema.path else None,
        "columns": [{"name": c.name, "type": c.arrow, "unit": c.unit, "nullable": c.nullable}
                    for c in schema.columns if c.name not in gone]
                   + [{"name": c["name"], "type": c["arrow"], "unit": c["unit"], "nullable": True,
                       "provenance": INPUT_HEADER} for c in input_only or ()],
    }


def format_drift(drift: dict | None) -> str | None:
    """How a table's input columns met its schema (``None`` for a record without it): where the
    layout came from (bulk files: only that); the columns matched (through which alias),
    input-only, documented but absent (no input had them), and missing in some inputs (null in
    their rows)."""
    if not drift:
        return None
    source = "; ".join(drift.get("layout") or [])
    if drift.get("positional") == drift.get("files"):  # bulk files: the schema's layout, by position
        return f"layout from {source}" if source else None
    aliases = ", ".join(f"{c} from {given}" for c, given in drift["aliases"].items())
    extra = ", ".join(c["name"] + (f" [{c['unit']}]" if c.get("unit") else "") for c in drift["input_only"])
    absent = drift.get("absent") or []
    missing = ", ".join(f"{c['name']} ({c['files']} file{'s' if c['files'] > 1 else ''})"
                        for c in drift["missing"])
    return ((f"layout from {source}; " if source else "")
            + f"{len(drift['matched'])} matched" + (f" ({aliases})" if aliases else "")
            + f"; {len(drift['input_only'])} input-only" + (f": {extra}" if extra else "")
            + f"; {len(absent)} documented but absent" + (f": {', '.join(absent)}" if absent else "")
            + f"; {len(drift['missing'])} missing in some inputs, null there"
            + (f": {missing}" if missing else ""))


def table_entry(report: dict, *, name: str, family: str, schema: TableSchema, parameters: dict,
                fingerprint: dict, seconds: float, derived_from: dict | None = None,
                sources: dict[str, str] | None = None) -> dict:
    """A table's manifest entry from its build report, with a new ``build_id``; ``sources``: the
    build ids of the lake tables it was made from (derived catalogs, light curves)."""
    kind = report["kind"]
    entry = {
        "name": name, "family": family, "path": name, "type": kind,
        "format": "parquet" if kind == "parquet" else "hats",
        "schema": schema_entry(schema, (report.get("columns") or {}).get("input_only"),
                               (report.get("columns") or {}).get("absent"))
                  | ({"title": report.get("title")} if report.get("title") else {}),
        "columns": report.get("columns"),
        "rows": report["rows_written"], "lines_read": report["lines_read"],
        "rows_quarantined": report["rows_quarantined"], "partitions": report["partitions"],
        "bytes": report["bytes"], "seconds": report["seconds"], "lake_seconds": round(seconds, 3),
        "inputs": [{k: i.get(k) for k in ("path", "format", "bytes", "sha256", "lines", "rows",
                                          "quarantined")} for i in report["inputs"]],
        "parameters": parameters, "fingerprint": fingerprint,
        "built": datetime.now(UTC).isoformat(timespec="seconds"), "built_with": tool_versions(),
        "status": "built", "build_id": uuid.uuid4().hex,
    }
    if kind == "parquet":
        entry["dataset"] = "dataset"
    else:
        keys = ("catalog", "margin", "margin_rows", "margin_arcsec", "indexes")
        entry |= {key: report[key] for key in keys}
    if report.get("tap"):  # harvested from a TAP service: every query it ran and TAP_SCHEMA snapshot
        queries = [*report["tap"].get("planning", []),
                   *(q for i in report["inputs"] for q in i.get("queries", []))]
        entry["tap"] = report["tap"] | {"queries": queries}
    if derived_from:
        entry["derived_from"] = derived_from
    if sources is not None:
        entry["sources"] = sources
    return entry


def totals(tables: dict[str, dict]) -> dict:
    return {
        "tables": len(tables),
        "collections": sum(1 for t in tables.values() if t["type"] in HATS_TYPES),
        "parquet_tables": sum(1 for t in tables.values() if t["type"] == "parquet"),
        "rows": sum(t["rows"] for t in tables.values() if t["type"] not in DERIVED_TYPES),
        "derived_rows": sum(t["rows"] for t in tables.values() if t["type"] in DERIVED_TYPES),
        "rows_quarantined": sum(t["rows_quarantined"] for t in tables.values()),
        "bytes": sum(t["bytes"] for t in tables.values()),
    }


def write_manifest(lake: str, tables: dict[str, dict], pipelines: dict[str, dict], skipped: dict[str, str],
                   run: dict, storage_options: dict) -> dict:
    """``LAKE/manifest.json`` from every table's completion record (earlier runs included)."""
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "lake": "2MASS Extended Mission (tmass-lake)",
        "updated": datetime.now(UTC).isoformat(timespec="seconds"),
        "tools": tool_versions(),
        "pipelines": pipelines,
        "tables": tables,
        "skipped": {k: v for k, v in skipped.items() if k not in tables},
        "last_run": run,
        "totals": totals(tables),
    }
    fs, root = filesystem(lake, storage_options)
    write_json(fs, join(root, MANIFEST), manifest)
    return manifest


def read_manifest(lake: str, storage_options: dict | None = None) -> dict:
    """``LAKE/manifest.json``, refused if an entry's paths lead outside the lake."""
    fs, root = filesystem(join(lake, MANIFEST), storage_options)
    if not fs.exists(root):
        raise UserError(f"{lake} has no {MANIFEST}: not a tmass-lake lake (or its build never finished)")
    return check_manifest(read_json(fs, root), url_of(fs, root), lake)


_ENTRY_COUNTS = ("rows", "rows_quarantined", "partitions", "lines_read")
_OPTIONAL_COUNTS = ("margin_rows", "bytes")
_TOTALS = ("tables", "rows", "rows_quarantined", "bytes")


def _count_ok(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_manifest(doc: object, url: str, lake: str = "") -> dict:
    """``doc`` if it is a manifest tmass-lake could have written, else one line naming the file and key.

    The top level holds ``tables``, ``pipelines``, ``tools`` and ``totals`` mappings; a table
    entry a table ``name``, a ``type``, a ``schema`` mapping, counts that are integers >= 0, and
    paths (its directory, catalogs, indexes) that stay inside the lake.
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("tables"), dict):
        raise ManifestError(f"{url}: not a tmass-lake manifest (no 'tables' mapping)")
    for name, entry in doc["tables"].items():  # first: nothing outside the lake is ever looked at
        for key, path in _entry_paths(entry) if isinstance(entry, dict) else ():
            if inside(lake or "lake", path) is None:
                raise ManifestError(f"{url}: table {str(name)[:40]!r} has {key} {str(path)[:60]!r}, which "
                                    "leads outside the lake (a path must be relative and stay inside it): "
                                    "refused")
    for key in ("pipelines", "tools", "totals"):
        if not isinstance(doc.get(key), dict):
            raise ManifestError(f"{url}: {key} must be a mapping, not {type(doc.get(key)).__name__}")
    for key in _TOTALS:
        value = doc["totals"].get(key)
        if not _count_ok(value):
            raise ManifestError(f"{url}: totals.{key} must be an integer >= 0, not {str(value)[:40]!r}")
    for name, entry in doc["tables"].items():
        where = f"{url}: tables.{str(name)[:40]}"
        if not isinstance(entry, dict):
            raise ManifestError(f"{where}: must be a mapping, not {type(entry).__name__}")
        if not isinstance(name, str) or not name.replace("_", "").isalnum() or not name.islower():
            raise ManifestError(f"{where}: not a table name (lower-case letters, digits and _ only)")
        if not isinstance(entry.get("type"), str):
            raise ManifestError(f"{where}: type must be a string")
        if not isinstance(entry.get("schema"), dict) or not isinstance(entry["schema"].get("name"), str):
            raise ManifestError(f"{where}: schema must be a mapping naming the schema")
        for key in (*_ENTRY_COUNTS, *_OPTIONAL_COUNTS):
            value = entry.get(key)
            if (key in _ENTRY_COUNTS or value is not None) and not _count_ok(value):
                raise ManifestError(f"{where}: {key} must be an integer >= 0, not {str(value)[:40]!r}")
    return doc


def _entry_paths(entry: dict) -> list[tuple[str, object]]:
    """The paths a manifest entry gives (its directory; a collection's catalogs inside it)."""
    out: list[tuple[str, object]] = [("path", entry.get("path"))]
    for key in ("catalog", "margin", "dataset"):
        if entry.get(key) is not None:
            out.append((key, entry[key]))
    indexes = entry.get("indexes") or {}
    out += [(f"index {col}", idx.get("path") if isinstance(idx, dict) else idx) for col, idx in
            (indexes.items() if isinstance(indexes, dict) else ())]
    return out


def unfinished(lake: str, entry: dict, storage_options: dict) -> bool:
    """Whether a manifest entry's table lacks the properties file its build writes last."""
    fs, root = filesystem(join(lake, entry["path"]), storage_options)
    marks = ("table.properties",) if entry.get("type") == "parquet" else ("collection.properties",)
    return entry.get("status", "built") != "built" or not any(fs.exists(join(root, m)) for m in marks)


def format_info(manifest: dict) -> str:
    """A human summary of a manifest: one line per table, then totals and tools."""
    out = [f"{manifest['lake']} (manifest v{manifest['manifest_version']}, updated {manifest['updated']})"]
    for name, p in sorted(manifest["pipelines"].items()):
        out.append(f"pipeline {name}: {p['description']} [{p['file']}]")
    out.append("")
    out.append(f"{'table':<18} {'type':<11} {'rows':>12} {'quarant.':>9} {'parts':>6}  "
               "schema (layout) / indexes")
    for name, e in sorted(manifest["tables"].items()):
        idx = ", ".join(e.get("indexes") or {})
        src = f" from {e['derived_from']['table']}" if e.get("derived_from") else ""
        out.append(f"{name:<18} {e['type']:<11} {e['rows']:>12,} {e['rows_quarantined']:>9,} "
                   f"{e['partitions']:>6}  {e['schema']['name']} ({e['schema']['layout_status']}){src}"
                   + (f"; indexes {idx}" if idx else ""))
        if drift := format_drift(e.get("columns")):
            out.append(f"{'':<18} columns: {drift}")
    t = manifest["totals"]
    derived = f" (+ {t['derived_rows']:,} in derived catalogs)" if t.get("derived_rows") else ""
    out += ["", f"{t['tables']} tables, {t['rows']:,} rows{derived}, {t['rows_quarantined']:,} quarantined, "
                f"{t['bytes'] / 2**20:.1f} MiB"]
    for name, why in sorted(manifest.get("skipped", {}).items()):
        out.append(f"skipped {name}: {why}")
    out.append("tools: " + ", ".join(f"{k} {v}" for k, v in manifest["tools"].items()))
    return "\n".join(out)
