"""Tables without positions (cross references, scan information) as plain Parquet datasets.

Layout under the table's URL, beside the lake's HATS collections::

    <table>/table.properties           table, schema, kind, rows (key = value lines)
    <table>/dataset/part-NNNNN.parquet one file per input file, row groups per parsed block
    <table>/dataset/_common_metadata   the Arrow schema with the table schema's metadata
    <table>/dataset/_metadata          every file's footer
    <table>/quarantine/*.parquet       bad lines, as for positional tables
    <table>/build_report.json

Same readers, row accounting, quarantine and resume as positional builds, one task per file.
Each file is written with the columns its input has; when inputs with a header differ, the files
are then brought to the table's one schema (the documented columns, then every input's own).
"""

from __future__ import annotations

import json
import time
from dataclasses import replace

import pyarrow as pa
import pyarrow.parquet as pq
from dask.distributed import Client

from tmass_lake.convert.collection import check_rows
from tmass_lake.convert.map import (
    MapResult,
    check_accounting,
    input_identity,
    map_inputs,
    quarantine,
    unified_schema,
)
from tmass_lake.convert.parameters import TableArguments
from tmass_lake.convert.resume import ResumePlan
from tmass_lake.convert.tasks import run_tasks
from tmass_lake.convert.writer import finish_parquet_table, parquet_kwargs
from tmass_lake.readers import BadLine, FileDigest, conform, quarantined_lines, read_input
from tmass_lake.storage import filesystem, join, open_atomic, retrying, url_of

ROW_GROUP_ROWS = 100_000  # row-group statistics let a gcntr filter skip most of a link file


def data_file(output: str, index: int) -> str:
    return join(output, "dataset", f"part-{index:05d}.parquet")


def _writer_kwargs(target: pa.Schema, args: TableArguments) -> dict:
    kwargs = parquet_kwargs(target, args.params.compression_level, sort_by=None)
    kwargs.pop("row_group_size", None)  # a writer's option per write_table call, not per file
    return kwargs


def convert_file(args: TableArguments, index: int) -> MapResult:
    """Parse one input file into one Parquet file (row groups per block); quarantine bad lines.

    The file gets the columns of its input: the schema's, then those only its header has.
    """
    path = args.inputs[index]
    fs, out = filesystem(data_file(args.output, index), args.storage_options)
    res = MapResult(index=index, path=path)
    bad: list[BadLine] = []

    def put() -> int:
        res.lines = res.rows = 0
        res.layout = None
        res.queries.clear()
        bad.clear()
        digest = FileDigest()
        with open_atomic(fs, out) as f:
            writer = None
            for block in read_input(path, args.schema, input_format=args.params.input_format,
                                    block_bytes=args.params.block_bytes,
                                    storage_options=args.storage_options, digest=digest, tap=args.tap,
                                    max_line_bytes=args.params.max_line_bytes):
                if writer is None:
                    target = block.table.schema
                    writer = pq.ParquetWriter(f, target, **_writer_kwargs(target, args))
                    res.layout = block.layout.to_json() if block.layout else None
                res.lines += block.n_lines
                res.queries.extend(block.queries)
                bad.extend(block.bad)
                if block.table.num_rows:
                    writer.write_table(block.table.cast(target), row_group_size=ROW_GROUP_ROWS)
                    res.rows += block.table.num_rows
            if writer is None:
                target = args.schema.arrow_schema()
                writer = pq.ParquetWriter(f, target, **_writer_kwargs(target, args))
            writer.close()
        res.bytes, res.sha256 = digest.bytes, digest.sha256
        return int(fs.size(out))

    res.written_bytes = retrying(put, what=f"writing {url_of(fs, out)}")
    res.identity = input_identity(args, index)
    res.quarantined = quarantined_lines(bad)
    res.quarantine_path = quarantine(args, index, bad)
    check_accounting(res)
    return res


def conform_file(args: TableArguments, index: int) -> bool:
    """Rewrite one input's Parquet file with the table's schema if it has another; whether it did."""
    target = args.schema.arrow_schema()
    fs, out = filesystem(data_file(args.output, index), args.storage_options)
    if pq.read_schema(out, filesystem=fs).equals(target, check_metadata=True):
        return False

    def put() -> None:
        source = pq.ParquetFile(out, filesystem=fs)
        with open_atomic(fs, out) as f, pq.ParquetWriter(f, target, **_writer_kwargs(target, args)) as writer:
            for i in range(source.num_row_groups):
                writer.write_table(conform(source.read_row_group(i), target), row_group_size=ROW_GROUP_ROWS)

    retrying(put, what=f"conforming {url_of(fs, out)}")
    return True


def build_parquet_table(args: TableArguments, plan: ResumePlan, client: Client) -> dict:
    """Store one table without positions; returns the report's counts."""
    clock = time.time()
    results = map_inputs(args, plan, client, task=convert_file, stage="convert")
    schema, drift = unified_schema(args, results)
    if any(r.layout for r in results):  # inputs with a header: their files may differ
        args = replace(args, schema=schema)
        run_tasks(client, lambda i: conform_file(args, i), list(range(len(results))), f"unify {args.table}",
                  args.progress)
    fs, root = filesystem(args.output, args.storage_options)
    expected = {filesystem(data_file(args.output, i), args.storage_options)[1]
                for i in range(len(args.inputs))}
    for stale in set(fs.glob(join(root, "dataset", "part-*.parquet"))) - expected:
        fs.rm(stale)  # a file of an input no longer listed (a resumed build with other inputs)
    rows = sum(r.rows for r in results)
    lines, quarantined = check_rows(args.table, results, rows)
    s = args.schema
    finish_parquet_table(args.output, {
        "table": s.table, "title": s.title, "product": s.product, "kind": s.kind, "schema": s.table,
        "schema_layout_status": s.layout_status, "key_column": s.key_column,
        "links": json.dumps(s.links) if s.links else None, "format": "parquet",
        "total_rows": rows, "files": len(results),
    }, expected_rows=rows, storage_options=args.storage_options)
    return {"inputs": [r.report() for r in results], "lines_read": lines, "rows_written": rows,
            "rows_quarantined": quarantined, "partitions": len(results),
            "bytes": sum(r.written_bytes for r in results),
            "stage_seconds": {"convert": round(time.time() - clock, 3)}, "columns": drift}
