"""``tmass-lake info LAKE`` (what the manifest says) and ``tmass-lake verify LAKE`` (re-check it)."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, field

import pyarrow.parquet as pq

from tmass_lake.build.finish import upath
from tmass_lake.build.lake import MANIFEST
from tmass_lake.storage import filesystem, join


def read_manifest(lake: str, storage_options: dict | None = None) -> dict:
    """``LAKE/manifest.json``."""
    fs, root = filesystem(join(lake, MANIFEST), storage_options)
    if not fs.exists(root):
        raise ValueError(f"{lake} has no {MANIFEST}: not a tmass-lake lake (or its build never finished)")
    with fs.open(root, "rt") as f:
        return json.load(f)


def format_info(manifest: dict) -> str:
    """A human summary of a manifest: one line per table, then totals and tools."""
    out = [f"{manifest['lake']} (manifest v{manifest['manifest_version']}, updated {manifest['updated']})"]
    for name, p in sorted(manifest["pipelines"].items()):
        out.append(f"pipeline {name}: {p['description']} [{p['file']}]")
    out.append("")
    out.append(f"{'table':<18} {'type':<10} {'rows':>12} {'quarant.':>9} {'parts':>6}  "
               "schema (layout) / indexes")
    for name, e in sorted(manifest["tables"].items()):
        idx = ", ".join(e.get("indexes") or {})
        src = f" from {e['derived_from']['table']}" if e.get("derived_from") else ""
        out.append(f"{name:<18} {e['type']:<10} {e['rows']:>12,} {e['rows_quarantined']:>9,} "
                   f"{e['partitions']:>6}  {e['schema']['name']} ({e['schema']['layout_status']}){src}"
                   + (f"; indexes {idx}" if idx else ""))
    t = manifest["totals"]
    out += ["", f"{t['tables']} tables, {t['rows']:,} rows, {t['rows_quarantined']:,} quarantined, "
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
    """Rows of a HATS catalog's files and of its _metadata against the manifest."""
    in_files, in_meta = _file_rows(url, storage_options), _metadata_rows(url, storage_options)
    check.expect(in_files == expected, f"{what}: data files hold {in_files} rows, manifest {expected}")
    check.expect(in_meta == expected, f"{what}: _metadata counts {in_meta} rows, manifest {expected}")


def verify_collection(lake: str, entry: dict, storage_options: dict, check: Check) -> None:
    """HATS strict validation, and every count against the manifest."""
    import hats
    from hats.io.validation import is_valid_collection

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
    from tmass_lake.build.parquet_table import read_properties

    url = join(lake, entry["path"])
    props = read_properties(url, storage_options)
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
    expected = entry["schema"]["columns"]
    names = pq.read_schema(join(root, "_common_metadata"), filesystem=fs).names
    check.expect(names == [c["name"] for c in expected], "columns differ from the manifest's schema")


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
                         or entry["type"] == "derived", "manifest: lines read != rows + quarantined")
        except Exception as e:  # report, don't stop: verify every table
            check.problems.append(f"{type(e).__name__}: {e}")
        checks.append(check)
    return checks


def cmd_info(ns: argparse.Namespace) -> int:
    from tmass_lake.cli import _storage_options

    manifest = read_manifest(ns.lake, _storage_options(ns.storage_option))
    print(json.dumps(manifest, indent=1) if ns.json else format_info(manifest))
    return 0


def cmd_verify(ns: argparse.Namespace) -> int:
    from tmass_lake.cli import _storage_options

    logging.getLogger("root").setLevel(logging.ERROR)  # hats logs each check at WARNING
    checks = verify_lake(ns.lake, _storage_options(ns.storage_option))
    for c in checks:
        print(f"{c.table:<18} {'ok' if not c.problems else 'FAILED'}")
        for p in c.problems:
            print(f"    {p}")
    bad = [c.table for c in checks if c.problems]
    failed = f"; failed: {', '.join(bad)}" if bad else ""
    print(f"{len(checks) - len(bad)}/{len(checks)} tables verified{failed}")
    return 1 if bad else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``info`` and ``verify``."""
    i = subparsers.add_parser("info", help="print a lake's manifest")
    i.add_argument("lake", help="lake URL")
    i.add_argument("--json", action="store_true", help="the whole manifest as JSON")
    i.add_argument("--storage-option", action="append", metavar="KEY=VALUE")
    i.set_defaults(func=cmd_info)
    v = subparsers.add_parser("verify", help="re-run a lake's validations against its manifest")
    v.add_argument("lake", help="lake URL")
    v.add_argument("--storage-option", action="append", metavar="KEY=VALUE")
    v.set_defaults(func=cmd_verify)
