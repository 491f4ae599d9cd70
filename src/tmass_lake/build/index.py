"""HATS index catalogs on identifier columns, built from a written main catalog on Dask.

An index catalog (the format lsdb's ``Catalog.id_search`` reads through ``all_indexes`` in
``collection.properties``) is a plain Parquet dataset under ``<collection>/<catalog>_<col>_index/``:
``dataset/index/part-NNNNN.parquet`` files with columns ``<col>, _healpix_29, Norder (uint8),
Npix (uint64)``, sorted by ``<col>`` in small row groups (so Parquet statistics prune a lookup to
a few of them), a ``dataset/_metadata`` that lookups filter through, and ``hats.properties`` saying
``dataproduct_type=index``, ``hats_index_column=<col>``, ``hats_primary_table_url=<catalog>``.

Map: one task per partition reads only ``<cols>, _healpix_29`` once and spills, per column, its
non-null rows sorted by value (Arrow IPC) plus a small sample of values. Plan: value boundaries
from the weighted samples so output files hold about ``rows_per_file`` rows over disjoint ranges.
Reduce: one task per output file takes the matching slice of every spill, sorts and writes it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
from dask.distributed import Client
from hats.catalog import TableProperties
from hats.catalog.dataset.collection_properties import CollectionProperties
from hats.io.file_io.file_io import get_parquet_write_table_kwargs
from hats.io.parquet_metadata import write_parquet_metadata
from hats.pixel_math import HealpixPixel

from tmass_lake.build.finish import BUILDER, upath
from tmass_lake.build.map import HEALPIX_COLUMN
from tmass_lake.build.reduce import pixel_file
from tmass_lake.build.tasks import run_tasks
from tmass_lake.storage import ensure_dir, filesystem, is_local, join, retrying, write_parquet

SAMPLES_PER_PARTITION = 128
ROW_GROUP_ROWS = 32_768
DATA_PAGE_SIZE = 16 << 10


@dataclass(frozen=True)
class IndexArguments:
    """Which columns of which catalog to index, and where to spill."""

    collection: str
    catalog: str
    columns: tuple[str, ...]
    tmp_dir: str
    storage_options: dict = field(default_factory=dict)
    rows_per_file: int = 5_000_000
    spill_batch_rows: int = 65_536
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.columns:
            raise ValueError("no index columns")
        if self.rows_per_file < 1:
            raise ValueError("rows_per_file must be positive")

    @property
    def catalog_url(self) -> str:
        return join(self.collection, self.catalog)


@dataclass(frozen=True)
class Spill:
    """One partition's sorted ``(value, _healpix_29)`` rows for one column: file, pixel, count, sample."""

    path: str
    order: int
    pixel: int
    rows: int
    sample: list
    firsts: list  # the first value of each record batch, so a reducer reads only the batches it needs
    last: object = None


def index_name(catalog: str, column: str) -> str:
    """Directory (and catalog name) of the index of ``column`` in a collection."""
    return f"{catalog}_{column}_index"


def _sorted_by(table: pa.Table, column: str) -> pa.Table:
    return table.take(pc.sort_indices(table, [(column, "ascending"), (HEALPIX_COLUMN, "ascending")]))


def _values(table: pa.Table, column: str) -> np.ndarray:
    return table.column(column).to_numpy(zero_copy_only=False)


def _py(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else value


def _spill(table: pa.Table, fs, root: str, path: str, batch_rows: int) -> None:
    ensure_dir(fs, root)
    with fs.open(path, "wb") as f, ipc.new_file(f, table.schema) as w:
        for batch in table.combine_chunks().to_batches(max_chunksize=batch_rows):
            w.write_batch(batch)


def map_partition(args: IndexArguments, pixel: HealpixPixel, number: int) -> dict[str, Spill]:
    """Spill one partition's non-null ``(value, _healpix_29)`` rows per column, sorted by value."""
    fs, path = filesystem(pixel_file(args.catalog_url, pixel), args.storage_options)
    table = retrying(lambda: pq.read_table(path, columns=[*args.columns, HEALPIX_COLUMN], filesystem=fs),
                     what=f"reading {path}")
    spills = {}
    for col in args.columns:
        part = table.select([col, HEALPIX_COLUMN]).filter(pc.is_valid(table.column(col)))
        n = part.num_rows
        part = _sorted_by(part, col)
        sfs, root = filesystem(join(args.tmp_dir, col), args.storage_options)
        spill = join(root, f"{number:06d}.arrow")

        retrying(lambda part=part, sfs=sfs, root=root, spill=spill:
                 _spill(part, sfs, root, spill, args.spill_batch_rows), what=f"spilling {spill}")
        values = _values(part, col)
        picks = np.unique(np.linspace(0, n - 1, min(n, SAMPLES_PER_PARTITION)).astype(np.int64))
        spills[col] = Spill(spill, pixel.order, pixel.pixel, n, values[picks].tolist() if n else [],
                            values[::args.spill_batch_rows].tolist(), _py(values[-1]) if n else None)
    return spills


def boundaries(spills: list[Spill], rows_per_file: int) -> list:
    """Cut values splitting all rows into about ``rows / rows_per_file`` ranges ``[b_i, b_i+1)``."""
    total = sum(s.rows for s in spills)
    n_files = max(1, math.ceil(total / rows_per_file))
    if n_files == 1:
        return []
    values = np.array([v for s in spills for v in s.sample], dtype=object)
    weights = np.concatenate([np.full(len(s.sample), s.rows / len(s.sample)) for s in spills if s.sample])
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(weights[order])
    cuts = [values[order][np.searchsorted(cum, total * k / n_files)] for k in range(1, n_files)]
    return sorted(set(cuts))


def _read_range(args: IndexArguments, spill: Spill, column: str, lo, hi) -> pa.Table | None:
    """The spill's rows with ``lo <= value < hi`` (``None``: unbounded), plus Norder and Npix."""
    if not spill.rows or (lo is not None and spill.last < lo) or (hi is not None and spill.firsts[0] >= hi):
        return None
    firsts = np.array(spill.firsts, dtype=object)
    b0 = 0 if lo is None else max(int(np.searchsorted(firsts, lo, side="left")) - 1, 0)
    b1 = len(firsts) if hi is None else int(np.searchsorted(firsts, hi, side="left"))
    fs, _ = filesystem(spill.path, args.storage_options)
    source = pa.memory_map(spill.path) if is_local(fs) else fs.open(spill.path, "rb")
    with source:
        reader = ipc.open_file(source)
        table = pa.Table.from_batches([reader.get_batch(i) for i in range(b0, b1)], schema=reader.schema)
        values = _values(table, column)
        a = 0 if lo is None else int(np.searchsorted(values, lo, side="left"))
        b = len(values) if hi is None else int(np.searchsorted(values, hi, side="left"))
        if b <= a:
            return None
        part = table.slice(a, b - a).combine_chunks()
    n = part.num_rows
    part = part.append_column(pa.field("Norder", pa.uint8(), nullable=False),
                              pa.array(np.full(n, spill.order, np.uint8)))
    return part.append_column(pa.field("Npix", pa.uint64(), nullable=False),
                              pa.array(np.full(n, spill.pixel, np.uint64)))


def reduce_range(args: IndexArguments, column: str, spills: list[Spill], cuts: list, number: int,
                 schema: pa.Schema) -> dict:
    """Write index file ``number``: every row whose value lies in its range, sorted."""
    lo = cuts[number - 1] if number > 0 else None
    hi = cuts[number] if number < len(cuts) else None
    parts = [t for s in spills if s.rows and (t := _read_range(args, s, column, lo, hi)) is not None]
    table = _sorted_by(pa.concat_tables(parts), column) if parts else schema.empty_table()
    table = table.cast(schema)
    kwargs = get_parquet_write_table_kwargs(schema, write_table_kwargs={
        "data_page_size": DATA_PAGE_SIZE, "row_group_size": ROW_GROUP_ROWS,
        "sorting_columns": pq.SortingColumn.from_ordering(schema, [(column, "ascending")])})
    url = join(args.collection, index_name(args.catalog, column), "dataset", "index",
               f"part-{number:05d}.parquet")
    fs, path = filesystem(url, args.storage_options)
    return {"rows": table.num_rows, "bytes": write_parquet(table, fs, path, **kwargs)}


def index_schema(catalog_schema: pa.Schema, column: str, table: str) -> pa.Schema:
    """``<col>, _healpix_29, Norder, Npix``; the column keeps its description and unit."""
    return pa.schema([
        catalog_schema.field(column).with_nullable(False),
        pa.field(HEALPIX_COLUMN, pa.int64(), nullable=False),
        pa.field("Norder", pa.uint8(), nullable=False),
        pa.field("Npix", pa.uint64(), nullable=False),
    ], metadata={"table": table, "indexing_column": column})


def build_indexes(args: IndexArguments, client: Client) -> dict[str, dict]:
    """Build an index catalog per column; returns ``{column: {"path", "rows", "bytes", "files"}}``.

    Call :func:`register_indexes` afterwards to list them in ``collection.properties``.
    """
    import hats

    catalog = hats.read_hats(upath(args.catalog_url, args.storage_options))
    missing = [c for c in args.columns if c not in catalog.schema.names]
    if missing:
        raise ValueError(f"{args.catalog} has no column(s) {missing} to index")
    pixels = list(catalog.get_healpix_pixels())
    tfs, tmp = filesystem(args.tmp_dir, args.storage_options)
    if tfs.exists(tmp):
        tfs.rm(tmp, recursive=True)
    mapped: list[dict[str, Spill]] = run_tasks(
        client, lambda item: map_partition(args, item[1], item[0]), list(enumerate(pixels)),
        f"index {args.catalog}", args.progress)
    out: dict[str, dict] = {}
    for col in args.columns:
        spills = [m[col] for m in mapped]
        cuts = boundaries(spills, args.rows_per_file)
        name = index_name(args.catalog, col)
        ifs, iroot = filesystem(join(args.collection, name), args.storage_options)
        if ifs.exists(iroot):
            ifs.rm(iroot, recursive=True)
        schema = index_schema(catalog.schema, col, args.catalog)
        written = run_tasks(client, lambda i, col=col, spills=spills, cuts=cuts, schema=schema:
                            reduce_range(args, col, spills, cuts, i, schema),
                            list(range(len(cuts) + 1)), f"index {col}", args.progress)
        rows = sum(w["rows"] for w in written)
        expected = sum(s.rows for s in spills)
        if rows != expected:
            raise AssertionError(f"{name}: wrote {rows} rows, {expected} non-null values in the catalog")
        root = upath(join(args.collection, name), args.storage_options)
        counted = write_parquet_metadata(root, order_by_healpix=False)
        if counted != rows:
            raise AssertionError(f"{name}: _metadata counts {counted} rows, wrote {rows}")
        props = TableProperties.new_provenance_dict(root, builder=BUILDER) | {
            "catalog_name": name, "catalog_type": "index", "total_rows": rows,
            "primary_catalog": args.catalog, "indexing_column": col,
            "obs_title": f"Index of {args.catalog} on {col}",
        }
        TableProperties(**props).to_properties_file(root)
        out[col] = {"path": name, "rows": rows, "bytes": sum(w["bytes"] for w in written),
                    "files": len(written)}
    if tfs.exists(tmp):
        tfs.rm(tmp, recursive=True)
    return out


def register_indexes(collection: str, indexes: dict[str, str], storage_options: dict,
                     default: str | None = None) -> None:
    """Add ``{column: index dir}`` to ``collection.properties`` (``default`` becomes default_index)."""
    root = upath(collection, storage_options)
    props = CollectionProperties.read_from_dir(root)
    merged = (props.all_indexes or {}) | indexes
    default = default if default in merged else (props.default_index or next(iter(merged), None))
    values = props.model_dump(by_alias=True, exclude_none=True)
    values |= {"all_indexes": merged or None, "default_index": default}
    CollectionProperties(**values).to_properties_file(root)

