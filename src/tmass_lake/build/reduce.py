"""Reduce stage: assemble each partition (and its margin) from spill-run slices, sort, write once."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
from hats.io.file_io.file_io import get_parquet_write_table_kwargs
from hats.pixel_math import HealpixPixel

from tmass_lake.build.arguments import SPILL_BATCH_ROWS, BuildArguments
from tmass_lake.build.map import HEALPIX_COLUMN
from tmass_lake.build.plan import Partition, Slice
from tmass_lake.storage import filesystem, is_local, join, retrying, url_of, write_parquet


def pixel_file(catalog_dir: str, pixel: HealpixPixel) -> str:
    """``dataset/Norder=k/Dir=d/Npix=p.parquet`` under a catalog."""
    d = pixel.pixel // 10_000 * 10_000
    return join(catalog_dir, "dataset", f"Norder={pixel.order}", f"Dir={d}", f"Npix={pixel.pixel}.parquet")


def read_slices(args: BuildArguments, slices: tuple[Slice, ...]) -> pa.Table | None:
    """Concatenate run slices in run order, reading only the record batches they cover."""
    by_run: dict[str, list[Slice]] = defaultdict(list)
    for s in slices:
        by_run[s.run].append(s)
    fs, _ = filesystem(args.spill_dir, args.storage_options)

    def read_run(run: str, wanted: list[Slice]) -> list[pa.Table]:
        # One gather per run, however many slices (a margin touches ~1000 fine pixels per run).
        rows = np.concatenate([np.arange(s.start, s.stop, dtype=np.int64) for s in wanted])
        batches = np.unique(rows // SPILL_BATCH_ROWS)
        source = pa.memory_map(run) if is_local(fs) else fs.open(run, "rb")
        with source:
            reader = ipc.open_file(source)
            table = pa.Table.from_batches([reader.get_batch(int(b)) for b in batches], schema=reader.schema)
            # Row r of the run sits at (rank of its batch) * SPILL_BATCH_ROWS + r % SPILL_BATCH_ROWS
            # in the gathered batches (all full-size but possibly the run's last one).
            local = np.searchsorted(batches, rows // SPILL_BATCH_ROWS) * SPILL_BATCH_ROWS
            return [table.take(local + rows % SPILL_BATCH_ROWS)]  # take copies: safe once unmapped

    parts = []
    for run, wanted in by_run.items():
        parts.extend(retrying(lambda r=run, w=wanted: read_run(r, w),
                              what=f"reading spill run {url_of(fs, run)}"))
    return pa.concat_tables(parts) if parts else None


def _sorted(table: pa.Table) -> pa.Table:
    order = np.argsort(table.column(HEALPIX_COLUMN).to_numpy(), kind="stable")
    return table.take(order)


def write_partition(table: pa.Table, path: str, args: BuildArguments) -> int:
    """Write one HATS partition file with hats' Parquet layout defaults, sorted by ``_healpix_29``.

    zstd at ``args.compression_level`` (default 3): hats' level 15 costs ~7x the CPU for ~10% less.
    """
    ordering = [(HEALPIX_COLUMN, "ascending")]
    kwargs = get_parquet_write_table_kwargs(table.schema, write_table_kwargs={
        "sorting_columns": pq.SortingColumn.from_ordering(table.schema, ordering),
        "compression_level": args.compression_level})
    fs, _ = filesystem(path, args.storage_options)
    return write_parquet(table, fs, path, **kwargs)


def reduce_partition(args: BuildArguments, part: Partition, catalog_dir: str, margin_dir: str) -> dict:
    """Write a partition and its margin; returns what was written."""
    table = _sorted(read_slices(args, part.slices))
    if table.num_rows != part.rows:
        raise AssertionError(f"{part.pixel}: planned {part.rows} rows, assembled {table.num_rows}")
    nbytes = write_partition(table, pixel_file(catalog_dir, part.pixel), args)
    rec = {"order": part.pixel.order, "pixel": part.pixel.pixel, "rows": table.num_rows,
           "bytes": nbytes, "margin_rows": 0, "margin_bytes": 0}
    margin = read_slices(args, part.margin_slices) if part.margin_slices else None
    if margin is not None:
        shift = 2 * (29 - part.margin_order)
        inside = np.isin(margin.column(HEALPIX_COLUMN).to_numpy() >> shift, part.margin_pixels)
        margin = margin.filter(pa.array(inside))
        if margin.num_rows:
            margin = _sorted(margin)
            rec["margin_rows"] = margin.num_rows
            rec["margin_bytes"] = write_partition(margin, pixel_file(margin_dir, part.pixel), args)
    return rec
