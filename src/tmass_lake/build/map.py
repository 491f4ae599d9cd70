"""Map stage: parse each input file once into spill runs sorted by ``_healpix_29``.

A run is an Arrow IPC file (fixed-size record batches) plus its sparse histogram at
``HISTOGRAM_ORDER``; the histogram doubles as the run's index, so a reducer can read just
the batches holding one partition. The text is never parsed again.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
from hats.pixel_math.spatial_index import compute_spatial_index

from tmass_lake.build.arguments import HISTOGRAM_ORDER, SPILL_BATCH_ROWS, BuildArguments, InputArguments
from tmass_lake.readers import ParsedBlock, quarantine_table, read_bulk, read_ipac
from tmass_lake.readers.bulk import FileDigest
from tmass_lake.readers.errors import BadLine
from tmass_lake.storage import filesystem, join, open_atomic, retrying, url_of, write_parquet

HEALPIX_COLUMN = "_healpix_29"
_SHIFT = 2 * (29 - HISTOGRAM_ORDER)


@dataclass
class Run:
    """One sorted spill run: its file, size, and histogram (sorted pixels with row counts)."""

    path: str
    rows: int
    nbytes: int
    pixels: np.ndarray
    counts: np.ndarray


@dataclass
class MapResult:
    """What the map stage learned about one input file."""

    index: int
    path: str
    lines: int
    rows: int
    quarantined: int
    runs: list[Run] = field(default_factory=list)
    quarantine_path: str | None = None
    bytes: int = 0
    sha256: str = ""


def with_healpix(table: pa.Table, ra: str, dec: str) -> pa.Table:
    """Prepend the ``_healpix_29`` spatial index column."""
    h = compute_spatial_index(table.column(ra).to_numpy(), table.column(dec).to_numpy())
    return table.add_column(0, pa.field(HEALPIX_COLUMN, pa.int64(), nullable=False), pa.array(h))


def _write_run(args: BuildArguments, key: str, n: int, tables: list[pa.Table]) -> Run:
    table = pa.concat_tables(tables)
    table = with_healpix(table, args.schema.ra_column, args.schema.dec_column)
    h = table.column(0).to_numpy()
    order = np.argsort(h, kind="stable")
    table = table.take(order)
    fine = h[order] >> _SHIFT
    pixels, counts = np.unique(fine, return_counts=True)
    fs, root = filesystem(args.spill_dir, args.storage_options)
    path = join(root, f"{key}_{n:04d}.arrow")

    def put() -> None:
        # Atomic: a map task Dask reruns after losing a worker rewrites its runs while reducers
        # may be reading (memory-mapping) them; readers must see the old file or the new one.
        with open_atomic(fs, path) as f, ipc.new_file(f, table.schema) as writer:
            for batch in table.to_batches(max_chunksize=SPILL_BATCH_ROWS):
                writer.write_batch(batch)

    retrying(put, what=f"spilling {url_of(fs, path)}")
    return Run(path, table.num_rows, table.nbytes, pixels.astype(np.int64), counts.astype(np.int64))


def read_blocks(args: InputArguments, path: str, digest: FileDigest | None = None) -> Iterator[ParsedBlock]:
    """The table's reader for its input format (hashing the file as it goes, given a digest)."""
    reader = read_ipac if args.input_format == "ipac" else read_bulk
    return reader(path, args.schema, block_bytes=args.block_bytes, storage_options=args.storage_options,
                  digest=digest)


def map_input(args: BuildArguments, index: int) -> MapResult:
    """Parse one input file into sorted spill runs; quarantine its bad lines."""
    path = args.inputs[index]
    key = args.input_key(index)
    result = MapResult(index=index, path=path, lines=0, rows=0, quarantined=0)
    pending: list[pa.Table] = []
    pending_bytes = 0
    bad: list[BadLine] = []
    block: ParsedBlock
    digest = FileDigest()
    for block in read_blocks(args, path, digest):
        result.lines += block.n_lines
        bad.extend(block.bad)
        if block.table.num_rows:
            pending.append(block.table)
            pending_bytes += block.table.nbytes
        if pending_bytes >= args.run_bytes:
            result.runs.append(_write_run(args, key, len(result.runs), pending))
            pending, pending_bytes = [], 0
    if pending:
        result.runs.append(_write_run(args, key, len(result.runs), pending))
    result.rows = sum(r.rows for r in result.runs)
    result.bytes, result.sha256 = digest.bytes, digest.sha256
    result.quarantined = len(bad)
    if bad:
        fs, root = filesystem(args.output, args.storage_options)
        result.quarantine_path = join(root, "quarantine", f"{key}.parquet")
        write_parquet(quarantine_table(bad), fs, result.quarantine_path)
    if result.lines != result.rows + result.quarantined:
        raise AssertionError(f"{path}: {result.lines} lines but {result.rows} rows + "
                             f"{result.quarantined} quarantined")
    return result
