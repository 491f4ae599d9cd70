"""HATS index catalogs on identifier columns, built from a written main catalog on Dask.

An index catalog (what lsdb's ``Catalog.id_search`` reads through ``all_indexes`` in
``collection.properties``) is a Parquet dataset under ``<collection>/<catalog>_<col>_index/``:
``dataset/index/part-NNNNN.parquet`` files with columns ``<col>, _healpix_29, Norder (uint8),
Npix (uint64)``, sorted by ``<col>`` in small row groups (so Parquet statistics prune a lookup
to a few of them), a ``dataset/_metadata``, and ``hats.properties`` (``catalog_type=index``).

Map: one task per partition reads only ``<cols>, _healpix_29`` and spills, per column, its
non-null rows sorted by value plus a small sample of values. Plan: value boundaries from the
weighted samples so output files hold about ``rows_per_file`` rows over disjoint ranges.
Reduce: one task per output file takes the matching batches of every spill, sorts and writes.
Every step is recorded in the build's resume plan.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from dask.distributed import Client
from hats.pixel_math import HealpixPixel

from tmass_lake.convert.resume import ResumePlan, record_of
from tmass_lake.convert.scratch import remove_inside
from tmass_lake.convert.spill import SPILL_BATCH_ROWS, SpillRun, read_batches, write_run
from tmass_lake.convert.tasks import run_tasks
from tmass_lake.convert.writer import HEALPIX_COLUMN, finish_catalog, index_name, pixel_file, write_partition
from tmass_lake.errors import BuildError
from tmass_lake.storage import filesystem, join, retrying

SAMPLES_PER_PARTITION = 128
ROW_GROUP_ROWS = 32_768
DATA_PAGE_SIZE = 16 << 10
_INDEX_FILE_RECORD = record_of(number=int, rows=int, bytes=int)
_SPILL_RECORD = record_of(run=dict, order=int, pixel=int, sample=list, firsts=list)


@dataclass(frozen=True)
class IndexArguments:
    """Which columns of which written catalog to index, and where to spill."""

    collection: str
    catalog: str
    columns: tuple[str, ...]
    scratch: str
    storage_options: dict = field(default_factory=dict)
    rows_per_file: int = 5_000_000
    compression_level: int = 3
    spill_batch_rows: int = SPILL_BATCH_ROWS
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.columns:
            raise ValueError("no index columns")
        if self.rows_per_file < 1:
            raise ValueError("rows_per_file must be positive")

    @property
    def catalog_url(self) -> str:
        return join(self.collection, self.catalog)


@dataclass
class IndexSpill:
    """One partition's sorted ``(value, _healpix_29)`` rows for one column, with what plans the cut."""

    run: SpillRun
    order: int
    pixel: int
    sample: list
    firsts: list  # the first value of each record batch: a reducer reads only the batches it needs
    last: object = None

    def to_json(self) -> dict:
        return {"run": self.run.to_json(), "order": self.order, "pixel": self.pixel, "sample": self.sample,
                "firsts": self.firsts, "last": self.last}

    @classmethod
    def from_json(cls, d: dict) -> IndexSpill:
        d = _SPILL_RECORD(d)
        return cls(**(d | {"run": SpillRun.from_json(d["run"])}))


def _sorted_by(table: pa.Table, column: str) -> pa.Table:
    return table.take(pc.sort_indices(table, [(column, "ascending"), (HEALPIX_COLUMN, "ascending")]))


def _values(table: pa.Table, column: str) -> np.ndarray:
    return table.column(column).to_numpy(zero_copy_only=False)


def _py(values: np.ndarray) -> list:
    return [v.item() if isinstance(v, np.generic) else v for v in values]


def map_partition(args: IndexArguments, pixel: HealpixPixel, number: int) -> dict[str, dict]:
    """Spill one partition's non-null ``(value, _healpix_29)`` rows per column, sorted by value."""
    fs, path = filesystem(pixel_file(args.catalog_url, pixel), args.storage_options)
    table = retrying(lambda: pq.read_table(path, columns=[*args.columns, HEALPIX_COLUMN], filesystem=fs),
                     what=f"reading {path}")
    spills = {}
    for col in args.columns:
        part = _sorted_by(table.select([col, HEALPIX_COLUMN]).filter(pc.is_valid(table.column(col))), col)
        n = part.num_rows
        url = join(args.scratch, col, f"{number:06d}.arrow")
        run = SpillRun(url, n, write_run(part, url, args.storage_options, args.spill_batch_rows))
        values = _values(part, col)
        picks = np.unique(np.linspace(0, n - 1, min(n, SAMPLES_PER_PARTITION)).astype(np.int64))
        spill = IndexSpill(run, pixel.order, pixel.pixel, _py(values[picks]) if n else [],
                           _py(values[::args.spill_batch_rows]), _py(values[-1:])[0] if n else None)
        spills[col] = spill.to_json()
    return spills


def boundaries(spills: list[IndexSpill], rows_per_file: int) -> list:
    """Cut values splitting all rows into about ``rows / rows_per_file`` ranges ``[b_i, b_i+1)``."""
    total = sum(s.run.rows for s in spills)
    n_files = max(1, math.ceil(total / rows_per_file))
    if n_files == 1:
        return []
    values = np.array([v for s in spills for v in s.sample], dtype=object)
    weights = np.concatenate([np.full(len(s.sample), s.run.rows / len(s.sample)) for s in spills if s.sample])
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(weights[order])
    cuts = [values[order][np.searchsorted(cum, total * k / n_files)] for k in range(1, n_files)]
    return sorted(set(cuts))


def _read_range(args: IndexArguments, spill: IndexSpill, column: str, lo, hi) -> pa.Table | None:
    """The spill's rows with ``lo <= value < hi`` (``None``: unbounded), plus Norder and Npix."""
    if (not spill.run.rows or (lo is not None and spill.last < lo)
            or (hi is not None and spill.firsts[0] >= hi)):
        return None
    firsts = np.array(spill.firsts, dtype=object)
    b0 = 0 if lo is None else max(int(np.searchsorted(firsts, lo, side="left")) - 1, 0)
    b1 = len(firsts) if hi is None else int(np.searchsorted(firsts, hi, side="left"))
    table = read_batches(spill.run.url, np.arange(b0, b1), args.storage_options)
    values = _values(table, column)
    a = 0 if lo is None else int(np.searchsorted(values, lo, side="left"))
    b = len(values) if hi is None else int(np.searchsorted(values, hi, side="left"))
    if b <= a:
        return None
    part = table.slice(a, b - a)
    n = part.num_rows
    part = part.append_column(pa.field("Norder", pa.uint8(), nullable=False),
                              pa.array(np.full(n, spill.order, np.uint8)))
    return part.append_column(pa.field("Npix", pa.uint64(), nullable=False),
                              pa.array(np.full(n, spill.pixel, np.uint64)))


def reduce_range(args: IndexArguments, column: str, spills: list[IndexSpill], cuts: list, number: int,
                 schema: pa.Schema) -> dict:
    """Write index file ``number``: every row whose value lies in its range, sorted."""
    lo = cuts[number - 1] if number > 0 else None
    hi = cuts[number] if number < len(cuts) else None
    parts = [t for s in spills if (t := _read_range(args, s, column, lo, hi)) is not None]
    table = _sorted_by(pa.concat_tables(parts), column) if parts else schema.empty_table()
    url = join(args.collection, index_name(args.catalog, column), "dataset", "index",
               f"part-{number:05d}.parquet")
    nbytes = write_partition(table.cast(schema), url, compression_level=args.compression_level,
                             storage_options=args.storage_options, sort_by=column,
                             data_page_size=DATA_PAGE_SIZE, row_group_size=ROW_GROUP_ROWS)
    return {"number": number, "rows": table.num_rows, "bytes": nbytes}


def index_schema(catalog_schema: pa.Schema, column: str, table: str) -> pa.Schema:
    """``<col>, _healpix_29, Norder, Npix``; the column keeps its description and unit."""
    return pa.schema([
        catalog_schema.field(column).with_nullable(False),
        pa.field(HEALPIX_COLUMN, pa.int64(), nullable=False),
        pa.field("Norder", pa.uint8(), nullable=False),
        pa.field("Npix", pa.uint64(), nullable=False),
    ], metadata={"table": table, "indexing_column": column})


def build_indexes(args: IndexArguments, pixels: list[HealpixPixel], catalog_schema: pa.Schema,
                  plan: ResumePlan, client: Client) -> dict[str, dict]:
    """An index catalog per column; returns ``{column: {"path", "rows", "bytes", "files"}}``."""
    missing = [c for c in args.columns if c not in catalog_schema.names]
    if missing:
        raise BuildError(f"{args.catalog} has no column(s) {missing} to index")
    def spills(record: dict) -> dict:  # every column's spill must parse
        for col in args.columns:
            IndexSpill.from_json(record[col])
        return record

    mapped = plan.all("index-map", spills, key=int)
    todo = [(n, p) for n, p in enumerate(pixels) if n not in mapped]

    def record(item: tuple[int, dict]) -> None:
        plan.put("index-map", f"{item[0]:06d}", item[1])
        mapped[item[0]] = item[1]

    run_tasks(client, lambda item: (item[0], map_partition(args, item[1], item[0])), todo,
              f"index {args.catalog}", args.progress, record)
    return {col: _index_column(args, col, [IndexSpill.from_json(mapped[n][col]) for n in range(len(pixels))],
                               index_schema(catalog_schema, col, args.catalog), plan, client)
            for col in args.columns}


def _index_column(args: IndexArguments, col: str, spills: list[IndexSpill], schema: pa.Schema,
                  plan: ResumePlan, client: Client) -> dict:
    """Reduce and finish the index catalog of one column from its spills."""
    cuts = boundaries(spills, args.rows_per_file)
    name = index_name(args.catalog, col)
    stage = f"index-{col}"
    written = plan.all(stage, _INDEX_FILE_RECORD, key=int)
    if not written:  # a fresh index: nothing of an earlier one may stay beside it
        remove_inside(join(args.collection, name), args.collection, args.storage_options)

    def record(rec: dict) -> None:
        plan.put(stage, f"{rec['number']:05d}", rec)
        written[rec["number"]] = rec

    todo = [i for i in range(len(cuts) + 1) if i not in written]
    run_tasks(client, lambda i: reduce_range(args, col, spills, cuts, i, schema), todo, f"index {col}",
              args.progress, record)
    rows = sum(w["rows"] for w in written.values())
    expected = sum(s.run.rows for s in spills)
    if rows != expected:
        raise BuildError(f"{name}: wrote {rows} rows, {expected} non-null values in the catalog")
    finish_catalog(join(args.collection, name), {
        "catalog_name": name, "catalog_type": "index", "total_rows": rows,
        "primary_catalog": args.catalog, "indexing_column": col,
        "obs_title": f"Index of {args.catalog} on {col}",
    }, expected_rows=rows, storage_options=args.storage_options, schema=schema)
    return {"path": name, "rows": rows, "bytes": sum(w["bytes"] for w in written.values()),
            "files": len(written)}
