"""Map stage: parse each input (a file, or a TAP chunk) once into spill runs sorted by ``_healpix_29``.

Each run carries its sparse histogram at ``HISTOGRAM_ORDER``; the histogram doubles as the
run's index, so a reducer reads just the batches holding one partition. The text is never
parsed again. What the map learned about a file (:class:`MapResult`) is its resume record,
its column layout included (inputs with a header); :func:`unified_schema` makes every file's
layout one schema before reduce. :func:`map_inputs` runs any per-input task this way (Parquet
tables convert each file instead).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from dask.distributed import Client
from hats.pixel_math.spatial_index import compute_spatial_index

from tmass_lake.convert.parameters import HISTOGRAM_ORDER, TableArguments, run_bytes_for
from tmass_lake.convert.resume import ResumePlan, record_of
from tmass_lake.convert.spill import SpillRun, write_run
from tmass_lake.convert.tasks import run_tasks
from tmass_lake.convert.writer import HEALPIX_COLUMN
from tmass_lake.errors import BuildError
from tmass_lake.readers import (
    BadLine,
    FileDigest,
    FileLayout,
    ParsedBlock,
    is_tap,
    quarantine_table,
    quarantined_lines,
    read_input,
    unify,
)
from tmass_lake.readers.tap import chunk_identity
from tmass_lake.schema import TableSchema
from tmass_lake.storage import filesystem, identity, join, write_parquet

log = logging.getLogger(__name__)
FINE_SHIFT = 2 * (29 - HISTOGRAM_ORDER)


@dataclass
class MapResult:
    """What one input file became: lines read, rows spilled, lines quarantined, where, and its hash."""

    index: int
    path: str
    lines: int = 0
    rows: int = 0
    quarantined: int = 0
    runs: list[SpillRun] = field(default_factory=list)
    quarantine_path: str | None = None
    bytes: int = 0
    sha256: str = ""
    identity: dict = field(default_factory=dict)
    written_bytes: int = 0  # Parquet tables: the size of the file this input became
    layout: dict | None = None  # inputs with a header: how its columns met the schema (FileLayout JSON)
    queries: list[dict] = field(default_factory=list)  # TAP chunks: every query run, with its counts

    def to_json(self) -> dict:
        return {"index": self.index, "path": self.path, "lines": self.lines, "rows": self.rows,
                "quarantined": self.quarantined, "runs": [r.to_json() for r in self.runs],
                "quarantine_path": self.quarantine_path, "bytes": self.bytes, "sha256": self.sha256,
                "identity": self.identity, "written_bytes": self.written_bytes, "layout": self.layout,
                "queries": self.queries}

    def file_layout(self) -> FileLayout | None:
        return FileLayout.from_json(self.layout) if self.layout else None

    @classmethod
    def from_json(cls, d: dict) -> MapResult:
        d = _MAP_RECORD(d)
        if not isinstance(d.get("quarantine_path"), str | None):
            raise ValueError(f"'quarantine_path' is {d['quarantine_path']!r}")
        return cls(**(d | {"runs": [SpillRun.from_json(r) for r in d["runs"]]}))

    def report(self) -> dict:
        """This input as the build report lists it."""
        out = {"path": self.path, "bytes": self.bytes, "sha256": self.sha256, "lines": self.lines,
               "rows": self.rows, "quarantined": self.quarantined, "quarantine": self.quarantine_path,
               "format": self.layout["format"] if self.layout else "bulk"}
        return out | ({"queries": self.queries} if self.queries else {})


_MAP_RECORD = record_of(index=int, path=str, lines=int, rows=int, quarantined=int, runs=list, bytes=int,
                        sha256=str, identity=dict, written_bytes=int)


def with_healpix(table: pa.Table, ra: str, dec: str) -> pa.Table:
    """Prepend the ``_healpix_29`` spatial index column."""
    h = compute_spatial_index(table.column(ra).to_numpy(), table.column(dec).to_numpy())
    return table.add_column(0, pa.field(HEALPIX_COLUMN, pa.int64(), nullable=False), pa.array(h))


def _spill(args: TableArguments, key: str, n: int, tables: list[pa.Table]) -> SpillRun:
    table = with_healpix(pa.concat_tables(tables), args.schema.ra_column, args.schema.dec_column)
    h = table.column(0).to_numpy()
    order = np.argsort(h, kind="stable")
    table = table.take(order)
    pixels, counts = np.unique(h[order] >> FINE_SHIFT, return_counts=True)
    url = args.path("spill", f"{key}_{n:04d}.arrow")
    nbytes = write_run(table, url, args.storage_options)
    return SpillRun(url, table.num_rows, nbytes, pixels.astype(np.int64), counts.astype(np.int64))


def quarantine(args: TableArguments, index: int, bad: list[BadLine]) -> str | None:
    """Write an input's bad lines to ``OUTPUT/quarantine/<key>.parquet``; returns the URL."""
    if not bad:
        return None
    fs, root = filesystem(args.output, args.storage_options)
    path = join(root, "quarantine", f"{args.input_key(index)}.parquet")
    write_parquet(quarantine_table(bad), fs, path)
    return fs.unstrip_protocol(path) if "://" in args.output else path


def input_identity(args: TableArguments, index: int) -> dict:
    """Size and mtime/ETag of an input file, or a TAP chunk's query and count: what a resume compares."""
    if is_tap(args.inputs[index]):
        return chunk_identity(args.inputs[index], args.schema.names)
    fs, path = filesystem(args.inputs[index], args.storage_options)
    return identity(fs, path)


def check_accounting(result: MapResult) -> None:
    if result.lines != result.rows + result.quarantined:
        raise AssertionError(f"{result.path}: {result.lines} lines but {result.rows} rows + "
                             f"{result.quarantined} quarantined")


def map_input(args: TableArguments, index: int) -> MapResult:
    """Parse one input file into sorted spill runs; quarantine its bad lines."""
    path = args.inputs[index]
    key = args.input_key(index)
    result = MapResult(index=index, path=path)
    run_bytes = args.params.run_bytes or run_bytes_for(None)  # build_table sets it from the workers
    pending: list[pa.Table] = []
    pending_bytes = 0
    bad: list[BadLine] = []
    block: ParsedBlock
    digest = FileDigest()
    for block in read_input(path, args.schema, input_format=args.params.input_format,
                            block_bytes=args.params.block_bytes, storage_options=args.storage_options,
                            digest=digest, tap=args.tap, max_line_bytes=args.params.max_line_bytes):
        result.lines += block.n_lines
        result.queries.extend(block.queries)
        bad.extend(block.bad)
        if block.layout is not None and result.layout is None:
            result.layout = block.layout.to_json()
        if block.table.num_rows:
            pending.append(block.table)
            pending_bytes += block.table.nbytes
        if pending_bytes >= run_bytes:
            result.runs.append(_spill(args, key, len(result.runs), pending))
            pending, pending_bytes = [], 0
    if pending:
        result.runs.append(_spill(args, key, len(result.runs), pending))
    result.rows = sum(r.rows for r in result.runs)
    result.bytes, result.sha256 = digest.bytes, digest.sha256
    result.identity = input_identity(args, index)
    result.quarantined = quarantined_lines(bad)
    result.quarantine_path = quarantine(args, index, bad)
    check_accounting(result)
    return result


def unified_schema(args: TableArguments, results: list[MapResult]) -> tuple[TableSchema, dict]:
    """The one schema every input of a table is brought to before reduce, and its drift report
    (``--strict-layout``: drift is an error); an index column no input has is refused, named."""
    schema, drift = unify(args.schema, [(r.path, r.file_layout()) for r in results],
                          strict=args.params.strict_layout)
    if lost := [c for c in args.indexes if c not in schema.names]:
        raise BuildError(f"{args.table}: no input has column(s) {', '.join(lost)}, which its index(es) "
                         "need")
    return schema, drift


def map_inputs(args: TableArguments, plan: ResumePlan, client: Client,
               task: Callable[[TableArguments, int], MapResult] = map_input, stage: str = "map",
               ) -> list[MapResult]:
    """Run ``task`` once per input not yet recorded in ``plan``; every input's result, in order.

    On resume, a recorded input must be unchanged (same size and mtime/ETag), or the build stops
    naming it. Inputs with the same bytes under different names are refused (both named) unless
    ``allow_duplicate_content``: they would put every row in the lake twice.
    """
    done: dict[int, MapResult] = {}
    fs, spill = filesystem(args.path("spill"), args.storage_options)
    spilled = set(fs.glob(join(spill, "*.arrow")))
    for res in plan.all(stage, MapResult.from_json).values():
        if any(filesystem(run.url, args.storage_options)[1] not in spilled for run in res.runs):
            log.warning("%s: spill runs missing, mapping it again", res.path)
            continue
        if res.index < len(args.inputs) and res.path == args.inputs[res.index]:
            now = input_identity(args, res.index)
            if now != res.identity:
                raise BuildError(f"{res.path} changed since the interrupted build read it "
                                 f"({res.identity} then, {now} now): rerun without --resume")
            done[res.index] = res

    def record(res: MapResult) -> None:
        plan.put(stage, args.input_key(res.index), res.to_json())
        done[res.index] = res

    todo = [i for i in range(len(args.inputs)) if i not in done]
    run_tasks(client, lambda i: task(args, i), todo, f"{stage} {args.table}", args.progress, record)
    results = [done[i] for i in range(len(args.inputs))]
    if not args.params.allow_duplicate_content:
        first: dict[str, str] = {}
        for res in results:
            if res.sha256 in first and res.bytes:
                raise BuildError(f"{first[res.sha256]} and {res.path} have the same content (sha256 "
                                 f"{res.sha256[:12]}...): every row would be in the lake twice; drop one, "
                                 "or pass --allow-duplicate-content")
            first[res.sha256] = res.path
    return results
