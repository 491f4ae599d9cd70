"""The lake's ``manifest.json``: every table, its schema, counts, inputs and provenance; and the
checks behind ``tmass-lake info`` and ``tmass-lake verify``.

Entries are made from each table's build report (:func:`table_entry`), kept as completion
records under ``LAKE/_lake`` between runs, and gathered into the manifest at the end of every
lake build (:func:`write_manifest`).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import hats
import pyarrow.parquet as pq
from hats.io.validation import is_valid_collection

from tmass_lake.convert.writer import read_table_properties, upath
from tmass_lake.errors import UserError
from tmass_lake.schema import INPUT_HEADER, TableSchema
from tmass_lake.storage import filesystem, join, read_json, write_json

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
                fingerprint: dict, seconds: float, derived_from: dict | None = None) -> dict:
    """A table's manifest entry from its build report."""
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
        "status": "built",
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
    """``LAKE/manifest.json``."""
    fs, root = filesystem(join(lake, MANIFEST), storage_options)
    if not fs.exists(root):
        raise UserError(f"{lake} has no {MANIFEST}: not a tmass-lake lake (or its build never finished)")
    return read_json(fs, root)


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


@dataclass
class Check:
    """What verifying one table found."""

    table: str
    problems: list[str] = field(default_factory=list)

    def expect(self, ok: bool, problem: str) -> None:
        if not ok:
            self.problems.append(problem)


def _quarantined_rows(lake: str, entry: dict, storage_options: dict) -> int:
    fs, root = filesystem(join(lake, entry["path"], "quarantine"), storage_options)
    files = fs.glob(join(root, "*.parquet")) if fs.exists(root) else []
    return sum(pq.read_metadata(p, filesystem=fs).num_rows for p in files)


def _metadata_rows(url: str, storage_options: dict) -> int:
    fs, path = filesystem(join(url, "dataset", "_metadata"), storage_options)
    return pq.read_metadata(path, filesystem=fs).num_rows


def _file_rows(url: str, storage_options: dict) -> int:
    """Rows in the data files themselves (every footer under ``dataset/``), not what _metadata says."""
    fs, root = filesystem(join(url, "dataset"), storage_options)
    files = [p for p in fs.find(root) if p.endswith(".parquet")]
    return sum(pq.read_metadata(p, filesystem=fs).num_rows for p in files)


def _count(check: Check, what: str, url: str, expected: int, storage_options: dict) -> None:
    """Rows of a catalog's files and of its _metadata against the manifest."""
    in_files, in_meta = _file_rows(url, storage_options), _metadata_rows(url, storage_options)
    check.expect(in_files == expected, f"{what}: data files hold {in_files} rows, manifest {expected}")
    check.expect(in_meta == expected, f"{what}: _metadata counts {in_meta} rows, manifest {expected}")


def verify_collection(lake: str, entry: dict, storage_options: dict, check: Check) -> None:
    """HATS strict validation, and every count against the manifest."""
    url = join(lake, entry["path"])
    check.expect(is_valid_collection(upath(url, storage_options), strict=True),
                 "not a valid HATS collection (hats strict validation)")
    collection = hats.read_hats(upath(url, storage_options))
    main = collection.main_catalog
    check.expect(main.catalog_info.total_rows == entry["rows"],
                 f"catalog properties say {main.catalog_info.total_rows} rows, manifest {entry['rows']}")
    _count(check, "catalog", join(url, entry["catalog"]), entry["rows"], storage_options)
    check.expect(len(main.get_healpix_pixels()) == entry["partitions"],
                 f"{len(main.get_healpix_pixels())} partitions, manifest {entry['partitions']}")
    if entry.get("margin"):
        _count(check, "margin", join(url, entry["margin"]), entry["margin_rows"], storage_options)
        check.expect(collection.default_margin == entry["margin"],
                     "margin not listed in collection.properties")
    listed = collection.all_indexes or {}
    for col, idx in (entry.get("indexes") or {}).items():
        check.expect(listed.get(col) == idx["path"], f"index on {col} not listed in collection.properties")
        _count(check, f"index on {col}", join(url, idx["path"]), idx["rows"], storage_options)


def verify_parquet(lake: str, entry: dict, storage_options: dict, check: Check) -> None:
    """Every data file readable (footer and first row group), counts against the manifest."""
    url = join(lake, entry["path"])
    props = read_table_properties(url, storage_options)
    check.expect(props.get("table") == entry["name"], f"table.properties names {props.get('table')}")
    check.expect(int(props.get("total_rows", -1)) == entry["rows"], "table.properties row count differs")
    fs, root = filesystem(join(url, "dataset"), storage_options)
    files = sorted(fs.glob(join(root, "part-*.parquet")))
    check.expect(len(files) == entry["partitions"],
                 f"{len(files)} data files, manifest {entry['partitions']}")
    rows = 0
    for p in files:
        try:
            f = pq.ParquetFile(p, filesystem=fs)
            rows += f.metadata.num_rows
            if f.metadata.num_row_groups:
                f.read_row_group(0)
        except (OSError, ValueError) as e:
            check.problems.append(f"{p}: unreadable: {e}")
    check.expect(rows == entry["rows"], f"data files hold {rows} rows, manifest {entry['rows']}")
    check.expect(_metadata_rows(url, storage_options) == entry["rows"], "_metadata row count differs")
    names = pq.read_schema(join(root, "_common_metadata"), filesystem=fs).names
    check.expect(names == [c["name"] for c in entry["schema"]["columns"]],
                 "columns differ from the manifest's schema")


def verify_lake(lake: str, storage_options: dict | None = None) -> list[Check]:
    """Re-run the validations of every table in the manifest."""
    so = storage_options or {}
    manifest = read_manifest(lake, so)
    checks = []
    for name, entry in sorted(manifest["tables"].items()):
        check = Check(name)
        try:
            if entry["type"] == "parquet":
                verify_parquet(lake, entry, so, check)
            else:
                verify_collection(lake, entry, so, check)
            q = _quarantined_rows(lake, entry, so)
            check.expect(q == entry["rows_quarantined"],
                         f"quarantine holds {q} lines, manifest {entry['rows_quarantined']}")
            check.expect(entry["lines_read"] == entry["rows"] + entry["rows_quarantined"]
                         or entry["type"] in DERIVED_TYPES, "manifest: lines read != rows + quarantined")
        except Exception as e:  # report, don't stop: verify every table
            check.problems.append(f"{type(e).__name__}: {e}")
        checks.append(check)
    return checks
