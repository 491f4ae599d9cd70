"""Reduce stage: assemble each partition (and its margin) from spill-run slices, sort, write once.

Runs of inputs with other columns (headers that differ) are brought to the table's one schema.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pyarrow as pa

from tmass_lake.convert.parameters import TableArguments
from tmass_lake.convert.plan import Partition, Slice
from tmass_lake.convert.resume import record_of
from tmass_lake.convert.spill import read_rows
from tmass_lake.convert.writer import HEALPIX_COLUMN, pixel_file, write_partition
from tmass_lake.readers import conform


def run_schema(args: TableArguments) -> pa.Schema:
    """The schema of every run once brought to the table's: ``_healpix_29``, then the table's columns."""
    table = args.schema.arrow_schema()
    return table.insert(0, pa.field(HEALPIX_COLUMN, pa.int64(), nullable=False))

PARTITION_RECORD = record_of(order=int, pixel=int, rows=int, bytes=int, margin_rows=int, margin_bytes=int)
"""What a written partition's resume record holds (:func:`reduce_partition`'s result)."""


def read_slices(args: TableArguments, slices: tuple[Slice, ...]) -> pa.Table | None:
    """Concatenate run slices in run order: one gather per run, however many slices it has."""
    by_run: dict[str, list[Slice]] = defaultdict(list)
    for s in slices:
        by_run[s.run].append(s)
    target = run_schema(args)
    parts = [conform(read_rows(run, np.concatenate([np.arange(s.start, s.stop, dtype=np.int64)
                                                    for s in wanted]), args.storage_options), target)
             for run, wanted in by_run.items()]
    return pa.concat_tables(parts) if parts else None


def _sorted(table: pa.Table) -> pa.Table:
    order = np.argsort(table.column(HEALPIX_COLUMN).to_numpy(), kind="stable")
    return table.take(order)


def reduce_partition(args: TableArguments, part: Partition, catalog_url: str, margin_url: str) -> dict:
    """Write a partition and its margin; returns what was written (the partition's resume record)."""
    table = _sorted(read_slices(args, part.slices))
    if table.num_rows != part.rows:
        raise AssertionError(f"{part.pixel}: planned {part.rows} rows, assembled {table.num_rows}")
    level = args.params.compression_level
    so = args.storage_options
    rec = {"order": part.pixel.order, "pixel": part.pixel.pixel, "rows": table.num_rows,
           "bytes": write_partition(table, pixel_file(catalog_url, part.pixel), compression_level=level,
                                    storage_options=so),
           "margin_rows": 0, "margin_bytes": 0}
    margin = read_slices(args, part.margin_slices) if part.margin_slices else None
    if margin is not None:
        shift = 2 * (29 - part.margin_order)
        inside = np.isin(margin.column(HEALPIX_COLUMN).to_numpy() >> shift, part.margin_pixels)
        margin = margin.filter(pa.array(inside))
        if margin.num_rows:
            margin = _sorted(margin)
            rec["margin_rows"] = margin.num_rows
            rec["margin_bytes"] = write_partition(margin, pixel_file(margin_url, part.pixel),
                                                  compression_level=level, storage_options=so)
    return rec
