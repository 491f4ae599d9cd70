"""The one catalog writer: data files, HATS metadata, margins, indexes and collections.

Every catalog the conversion makes (a table's main catalog and margin, the derived 6x
catalogs, index catalogs) is written through here, so compression, sort order, metadata and
the order of writes are the same everywhere:

1. data files (:func:`write_partition`), each atomic;
2. the row accounting, checked by the caller before any metadata;
3. :func:`finish_catalog`: ``partition_info.csv``, ``dataset/_metadata`` and
   ``_common_metadata`` (their row count checked against the rows written), point map and
   skymaps, and ``hats.properties`` last: a catalog without it is not a catalog to hats/lsdb;
4. :func:`write_collection_properties` once every catalog of the collection is finished.

A failed metadata write (a full disk, a lost connection) removes what it half wrote and raises
a :class:`~tmass_lake.storage.StorageError` naming the file.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import version
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from hats.catalog import PartitionInfo, TableProperties
from hats.catalog.dataset.collection_properties import CollectionProperties
from hats.io import paths
from hats.io.file_io import write_fits_image
from hats.io.file_io.file_io import get_parquet_write_table_kwargs
from hats.io.parquet_metadata import write_parquet_metadata
from hats.io.skymap import write_skymap
from hats.pixel_math import HealpixPixel
from hats.pixel_math.spatial_index import SPATIAL_INDEX_COLUMN
from upath import UPath

from tmass_lake.convert.parameters import HISTOGRAM_ORDER
from tmass_lake.schema import TableSchema
from tmass_lake.storage import (
    StorageError,
    ensure_dir,
    filesystem,
    forget_listings,
    join,
    retrying,
    write_parquet,
)

T = TypeVar("T")
HEALPIX_COLUMN = SPATIAL_INDEX_COLUMN
BUILDER = f"tmass-lake v{version('tmass-lake')}"
SKYMAP_ALT_ORDERS = [2, 4, 6]
TABLE_PROPERTIES = "table.properties"


def upath(url: str, storage_options: dict | None = None) -> UPath:
    return UPath(url, **(storage_options or {}))


def written_by_workers(url: str, storage_options: dict | None = None) -> UPath:
    """``url`` as a path whose listings are read afresh: the workers wrote below it."""
    root = upath(url, storage_options)
    forget_listings(root.fs, root.path)
    return root


def pixel_file(catalog_url: str, pixel: HealpixPixel) -> str:
    """``CATALOG/dataset/Norder=k/Dir=d/Npix=p.parquet`` (hats' layout), as a URL."""
    return str(paths.pixel_catalog_file(catalog_url, pixel))


def parquet_kwargs(schema: pa.Schema, compression_level: int, sort_by: str | None = HEALPIX_COLUMN,
                   **extra: object) -> dict:
    """hats' Parquet layout defaults (per-column encodings), zstd at ``compression_level``, sorted."""
    extra = {"compression_level": compression_level, **extra}
    if sort_by is not None:
        extra["sorting_columns"] = pq.SortingColumn.from_ordering(schema, [(sort_by, "ascending")])
    return get_parquet_write_table_kwargs(schema, write_table_kwargs=extra)


def write_partition(table: pa.Table, url: str, *, compression_level: int, storage_options: dict | None = None,
                    sort_by: str | None = HEALPIX_COLUMN, **extra: object) -> int:
    """Write one data file (already sorted by ``sort_by``) atomically; returns its size in bytes."""
    fs, path = filesystem(url, storage_options)
    return write_parquet(table, fs, path, **parquet_kwargs(table.schema, compression_level, sort_by, **extra))


def _guarded(what: str, fn: Callable[[], T], partial: list[UPath] = ()) -> T:
    """``fn()``; on failure remove the ``partial`` files it may have left and name ``what``."""
    try:
        return retrying(fn, what=what)
    except (OSError, StorageError) as e:
        for p in partial:
            try:
                if p.exists():
                    p.unlink()
            except OSError:
                pass
        raise e if isinstance(e, StorageError) else StorageError(f"{what}: {e}") from e


def observation_properties(schema: TableSchema, *, title: str | None = None,
                           description: str | None = None, progenitor: str | None = None) -> dict:
    """IVOA ``obs_*`` description keys for a 2MASS table (or a catalog derived from one)."""
    return {
        "obs_title": title or schema.title,
        "obs_description": description or (
            f"{schema.title}, converted from IRSA's distribution by tmass-lake. "
            f"Layout: {schema.layout_status}. {schema.layout_note}"),
        "obs_regime": "Infrared",
        "obs_ack": "This publication makes use of data products from the Two Micron All Sky "
                   "Survey, a joint project of UMass and IPAC/Caltech, funded by NASA and NSF.",
        "bib_reference": "2006AJ....131.1163S",
        "em_min": "1.1e-6",
        "em_max": "2.4e-6",
        "prov_progenitor": progenitor or "IRSA 2MASS Extended Mission " + schema.table,
    }


def positional_properties(ra_column: str, dec_column: str) -> dict:
    """The keys every catalog with positions (object or margin) carries."""
    return {"ra_column": ra_column, "dec_column": dec_column, "hats_col_healpix": HEALPIX_COLUMN,
            "hats_col_healpix_order": 29, "hats_npix_suffix": ".parquet"}


def finish_catalog(url: str, properties: dict, *, expected_rows: int, storage_options: dict | None = None,
                   pixels: list[HealpixPixel] | None = None,
                   histogram: tuple[np.ndarray, np.ndarray] | None = None,
                   empty_schema: pa.Schema | None = None) -> None:
    """Write a catalog's metadata around its written data files, ``hats.properties`` last.

    ``pixels`` (object and margin catalogs) gives ``partition_info.csv``; without them (index
    catalogs) ``_metadata`` is not reordered by pixel. ``histogram`` (object catalogs: the
    non-empty order-10 pixels and their row counts) gives the point map and skymaps. Raises if
    ``_metadata`` does not count ``expected_rows`` rows. A catalog of no partition at all (the
    margin of a table whose partitions have no neighbours) is written from ``empty_schema``:
    hats and lsdb open it as an empty catalog.
    """
    root = written_by_workers(url, storage_options)
    fs, path = filesystem(url, storage_options)
    ensure_dir(fs, join(path, "dataset"))  # local disk: a catalog may have no data file to make it
    extra: dict = {}
    if pixels is not None:
        info = PartitionInfo.from_healpix(pixels)
        _guarded(f"writing {root / 'partition_info.csv'}",
                 lambda: info.write_to_file(paths.get_partition_info_pointer(root)))
        extra = {"hats_order": info.get_highest_order() if pixels else 0,
                 "moc_sky_fraction": f"{info.calculate_fractional_coverage() if pixels else 0:0.5f}"}
    metadata = [paths.get_parquet_metadata_pointer(root), paths.get_common_metadata_pointer(root)]
    if pixels == [] and empty_schema is not None:
        written = _guarded(f"writing {metadata[0]}", lambda: _write_empty_metadata(empty_schema, metadata),
                           metadata)
    else:
        by_pixel = pixels is not None
        written = _guarded(f"writing {metadata[0]}",
                           lambda: write_parquet_metadata(root, order_by_healpix=by_pixel), metadata)
    if written != expected_rows:
        for p in metadata:
            p.unlink(missing_ok=True)
        raise StorageError(f"{url}: the data files hold {written} rows, {expected_rows} were written")
    if histogram is not None:
        dense = np.zeros(12 * 4**HISTOGRAM_ORDER, dtype=np.int64)
        np.add.at(dense, histogram[0], histogram[1])
        _guarded(f"writing the point map of {url}",
                 lambda: write_fits_image(dense, paths.get_point_map_file_pointer(root)))
        _guarded(f"writing the skymaps of {url}",
                 lambda: write_skymap(histogram=dense, catalog_dir=root, orders=SKYMAP_ALT_ORDERS))
        extra |= {"hats_skymap_order": HISTOGRAM_ORDER, "hats_skymap_alt_orders": SKYMAP_ALT_ORDERS}
    provenance = TableProperties.new_provenance_dict(root, builder=BUILDER)
    props = TableProperties(**(provenance | properties | extra))
    target = root / "hats.properties"
    _guarded(f"writing {target}", lambda: props.to_properties_file(root), [target])


def _write_empty_metadata(schema: pa.Schema, targets: list[UPath]) -> int:
    for target in targets:
        with target.open("wb") as f:
            pq.write_metadata(schema, f)
    return 0


def common_schema(url: str, storage_options: dict | None = None) -> pa.Schema:
    """The Arrow schema of a written catalog (its ``dataset/_common_metadata``)."""
    target = paths.get_common_metadata_pointer(upath(url, storage_options))
    with target.open("rb") as f:
        return pq.read_schema(f)


def finish_parquet_table(url: str, properties: dict, *, expected_rows: int,
                         storage_options: dict | None = None) -> None:
    """A plain Parquet table's ``_metadata``/``_common_metadata`` and, last, ``table.properties``."""
    root = written_by_workers(url, storage_options)
    metadata = [paths.get_parquet_metadata_pointer(root), paths.get_common_metadata_pointer(root)]
    written = _guarded(f"writing {metadata[0]}",
                       lambda: write_parquet_metadata(root, order_by_healpix=False), metadata)
    if written != expected_rows:
        for p in metadata:
            p.unlink(missing_ok=True)
        raise StorageError(f"{url}: the data files hold {written} rows, {expected_rows} were written")
    stamp = {"builder": BUILDER, "creation_date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%MUTC")}
    text = "".join(f"{k}={v}\n" for k, v in (properties | stamp).items() if v is not None)
    target = root / TABLE_PROPERTIES
    _guarded(f"writing {target}", lambda: target.write_text(text), [target])


def read_table_properties(url: str, storage_options: dict | None = None) -> dict[str, str]:
    """The ``table.properties`` of a plain Parquet table."""
    text = (upath(url, storage_options) / TABLE_PROPERTIES).read_text()
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def write_collection_properties(url: str, *, name: str, title: str, margins: list[str],
                                indexes: dict[str, str], default_index: str | None = None,
                                storage_options: dict | None = None) -> None:
    """``collection.properties``: the main catalog, its margin and its index catalogs."""
    if default_index not in indexes:
        default_index = next(iter(indexes), None)
    props = CollectionProperties(
        obs_collection=name, hats_primary_table_url=name, all_margins=margins or None,
        default_margin=margins[0] if margins else None, all_indexes=indexes or None,
        default_index=default_index, obs_title=title, hats_builder=BUILDER,
    )
    root = upath(url, storage_options)
    target = root / "collection.properties"
    _guarded(f"writing {target}", lambda: props.to_properties_file(root), [target])


def margin_name(catalog: str, margin_arcsec: float) -> str:
    return f"{catalog}_{margin_arcsec:g}arcsec"


def index_name(catalog: str, column: str) -> str:
    """Directory (and catalog name) of the index of ``column`` in a collection."""
    return f"{catalog}_{column}_index"


def is_written(url: str, storage_options: dict | None = None) -> bool:
    """Whether a catalog or collection was finished (its properties file exists)."""
    fs, root = filesystem(url, storage_options)
    names = ("collection.properties", "hats.properties", TABLE_PROPERTIES)
    return any(fs.exists(join(root, f)) for f in names)


