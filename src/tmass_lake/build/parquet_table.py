"""Tables without positions (cross references, scan information) as plain Parquet datasets.

Layout under the table's URL, beside the lake's HATS collections::

    <table>/table.properties          table, schema, kind, rows (key = value lines)
    <table>/dataset/part-NNNNN.parquet one file per input file, row groups per parsed block
    <table>/dataset/_common_metadata  the Arrow schema with the table schema's metadata
    <table>/dataset/_metadata         every file's footer
    <table>/quarantine/*.parquet       bad lines, as for positional tables
    <table>/build_report.json

Same readers, row accounting and quarantine as positional builds, one Dask task per input file.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow.parquet as pq
from dask.distributed import Client

from tmass_lake.build.arguments import InputArguments
from tmass_lake.build.finish import BUILDER
from tmass_lake.build.map import read_blocks
from tmass_lake.build.tasks import run_tasks
from tmass_lake.readers import quarantine_table
from tmass_lake.readers.bulk import FileDigest
from tmass_lake.storage import filesystem, join, open_atomic, retrying, write_parquet, write_text

PROPERTIES_FILE = "table.properties"
ROW_GROUP_ROWS = 100_000  # row-group statistics let a gcntr filter skip most of a link file


class ParquetBuildError(RuntimeError):
    """The Parquet table cannot be built; the message says why."""


@dataclass(frozen=True)
class ParquetTableArguments(InputArguments):
    """What to store, from what, where (no thresholds: one Parquet file per input file)."""


def data_file(output: str, index: int) -> str:
    return join(output, "dataset", f"part-{index:05d}.parquet")


def convert_file(args: ParquetTableArguments, index: int) -> dict:
    """Parse one input file into one Parquet file (one row group per block); quarantine bad lines."""
    path = args.inputs[index]
    target = args.schema.arrow_schema()
    fs, out = filesystem(data_file(args.output, index), args.storage_options)
    res = {"index": index, "path": path, "lines": 0, "rows": 0, "quarantined": 0, "quarantine": None}
    bad = []

    def put() -> int:
        res.update(lines=0, rows=0)
        bad.clear()
        with open_atomic(fs, out) as f, pq.ParquetWriter(f, target, compression="zstd") as writer:
            digest = FileDigest()
            for block in read_blocks(args, path, digest):
                res["lines"] += block.n_lines
                bad.extend(block.bad)
                if block.table.num_rows:
                    writer.write_table(block.table.cast(target), row_group_size=ROW_GROUP_ROWS)
                    res["rows"] += block.table.num_rows
            res.update(input_bytes=digest.bytes, sha256=digest.sha256)
        return int(fs.size(out))

    res["bytes"] = retrying(put, what=f"writing {out}")
    res["quarantined"] = len(bad)
    if bad:
        qfs, qroot = filesystem(args.output, args.storage_options)
        res["quarantine"] = join(qroot, "quarantine", f"{args.input_key(index)}.parquet")
        write_parquet(quarantine_table(bad), qfs, res["quarantine"])
    if res["lines"] != res["rows"] + res["quarantined"]:
        raise AssertionError(f"{path}: {res['lines']} lines but {res['rows']} rows + "
                             f"{res['quarantined']} quarantined")
    return res


def write_properties(fs, root: str, props: dict) -> None:
    """``key = value`` lines, like HATS' ``hats.properties``."""
    text = "".join(f"{k}={v}\n" for k, v in props.items() if v is not None)
    write_text(fs, join(root, PROPERTIES_FILE), text)


def read_properties(url: str, storage_options: dict | None = None) -> dict[str, str]:
    """The ``table.properties`` of a Parquet table."""
    fs, root = filesystem(url, storage_options)
    with fs.open(join(root, PROPERTIES_FILE), "rt") as f:
        return dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)


def _check_output(args: ParquetTableArguments) -> None:
    fs, root = filesystem(args.output, args.storage_options)
    if not args.resume and (fs.exists(join(root, PROPERTIES_FILE)) or fs.exists(join(root, "dataset"))):
        raise ParquetBuildError(f"{args.output} already holds {args.table}; pass --resume to continue "
                                "it or choose a new output")


def build_parquet_table(args: ParquetTableArguments, client: Client) -> dict:
    """Store one non-positional table; returns its build report (also ``build_report.json``)."""
    started = time.time()
    _check_output(args)
    fs, root = filesystem(args.output, args.storage_options)
    tfs, tmp = filesystem(args.tmp_dir, args.storage_options)
    if not args.resume and tfs.exists(tmp):
        tfs.rm(tmp, recursive=True)
    done: dict[int, dict] = {}
    if args.resume:
        for p in tfs.glob(join(tmp, "done", "*.json")):
            with tfs.open(p, "rt") as f:
                rec = json.load(f)
            i = rec["index"]
            if i < len(args.inputs) and rec["path"] == args.inputs[i]:
                done[i] = rec

    def record(rec: dict) -> None:
        write_text(tfs, join(tmp, "done", f"{rec['index']:05d}.json"), json.dumps(rec))
        done[rec["index"]] = rec

    todo = [i for i in range(len(args.inputs)) if i not in done]
    run_tasks(client, lambda i: convert_file(args, i), todo, f"{args.table}", args.progress, record)
    results = [done[i] for i in range(len(args.inputs))]
    stale = set(fs.glob(join(root, "dataset", "part-*.parquet"))) - {
        filesystem(data_file(args.output, i), args.storage_options)[1] for i in range(len(args.inputs))}
    for p in stale:  # files of inputs no longer listed (a resumed build with other inputs)
        fs.rm(p)

    schema = args.schema.arrow_schema()
    collector = []
    for i in range(len(args.inputs)):
        _, p = filesystem(data_file(args.output, i), args.storage_options)
        md = retrying(lambda p=p: pq.read_metadata(p, filesystem=fs), what=f"reading {p}")
        md.set_file_path(f"part-{i:05d}.parquet")
        collector.append(md)
    combined = collector[0]
    for md in collector[1:]:
        combined.append_row_groups(md)

    def put_common() -> None:
        with open_atomic(fs, join(root, "dataset", "_common_metadata")) as f:
            pq.write_metadata(schema, f)

    def put_metadata() -> None:
        with open_atomic(fs, join(root, "dataset", "_metadata")) as f:
            combined.write_metadata_file(f)

    retrying(put_common, what=f"writing {args.table} _common_metadata")
    retrying(put_metadata, what=f"writing {args.table} _metadata")
    lines = sum(r["lines"] for r in results)
    rows = sum(r["rows"] for r in results)
    quarantined = sum(r["quarantined"] for r in results)
    counted = combined.num_rows
    if lines != rows + quarantined or counted != rows:
        raise ParquetBuildError(f"row accounting failed for {args.table}: {lines} lines read, {rows} "
                                f"rows ({counted} in the files) + {quarantined} quarantined")
    s = args.schema
    write_properties(fs, root, {
        "table": s.table, "title": s.title, "product": s.product, "kind": s.kind, "schema": s.table,
        "schema_layout_status": s.layout_status, "key_column": s.key_column,
        "links": json.dumps(s.links) if s.links else None, "format": "parquet",
        "total_rows": rows, "files": len(results), "builder": BUILDER,
        "creation_date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%MUTC"),
    })
    report = {
        "table": args.table,
        "inputs": [{"path": r["path"], "bytes": r["input_bytes"], "sha256": r["sha256"],
                    **{k: r[k] for k in ("lines", "rows", "quarantined", "quarantine")}} for r in results],
        "lines_read": lines, "rows_written": rows, "rows_quarantined": quarantined,
        "partitions": len(results), "bytes": sum(r["bytes"] for r in results),
        "seconds": round(time.time() - started, 3),
    }
    write_text(fs, join(root, "build_report.json"), json.dumps(report, indent=2))
    if tfs.exists(tmp):
        tfs.rm(tmp, recursive=True)
    return report
