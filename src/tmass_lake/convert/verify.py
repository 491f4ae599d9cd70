"""``tmass-lake verify``: re-run a lake's validations (HATS strict validation, every row count)
against its ``manifest.json``."""

from __future__ import annotations

from dataclasses import dataclass, field

import hats
import pyarrow.parquet as pq
from hats.io.validation import is_valid_collection

from tmass_lake.convert.manifest import DERIVED_TYPES, read_manifest, unfinished
from tmass_lake.convert.writer import read_table_properties, upath
from tmass_lake.errors import NOT_FINISHED
from tmass_lake.storage import filesystem, join


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
    return sum(_entry_lines(p, fs) for p in files)


def _entry_lines(path: str, fs) -> int:  # noqa: ANN001 - an fsspec filesystem
    """Lines one quarantine file stands for: its ``lines`` column (a run of blank lines is one
    entry), or its rows when written before runs were counted."""
    if "lines" not in pq.read_schema(path, filesystem=fs).names:
        return pq.read_metadata(path, filesystem=fs).num_rows
    return int(pq.read_table(path, columns=["lines"], filesystem=fs).column(0).to_numpy().sum())


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


def check_sources(name: str, entry: dict, tables: dict[str, dict], check: Check) -> None:
    """A derived table (6x catalog, light curves) made from the lake's current build of each source."""
    if entry.get("type") not in DERIVED_TYPES:
        return
    sources = entry.get("sources")
    if not isinstance(sources, dict) or not sources:
        check.problems.append("records no build of the tables it was made from: rebuild it "
                              f"(--rebuild {name})")
        return
    for table, build in sorted(sources.items()):
        now = (tables.get(table) or {}).get("build_id")
        check.expect(now == build, f"made from build {build} of {table}, but the lake's {table} is "
                                   + (f"build {now}" if now else "not built")
                                   + f": stale, rebuild it (--rebuild {table} rebuilds what derives from it)")


def verify_lake(lake: str, storage_options: dict | None = None) -> list[Check]:
    """Re-run the validations of every table in the manifest."""
    so = storage_options or {}
    manifest = read_manifest(lake, so)
    checks = []
    for name, entry in sorted(manifest["tables"].items()):
        check = Check(name)
        try:
            if unfinished(lake, entry, so):
                check.problems.append(NOT_FINISHED)
                checks.append(check)
                continue
            check_sources(name, entry, manifest["tables"], check)
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
