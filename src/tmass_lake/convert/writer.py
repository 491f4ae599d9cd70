"""The one catalog writer: data files, HATS metadata, VOParquet, margins, indexes and collections.

Every catalog the conversion makes (a table's main catalog and margin, the derived 6x
catalogs, index catalogs, light-curve collections) and every plain Parquet table is written
through here, so compression, sort order, metadata and the order of writes are the same
everywhere:

1. data files (:func:`write_partition`), each atomic;
2. the row accounting, checked by the caller before any metadata;
3. :func:`finish_catalog` (or :func:`finish_parquet_table`): ``partition_info.csv``,
   ``dataset/_metadata`` and ``_common_metadata`` (their row count checked against the rows
   written), the IVOA VOParquet metadata in ``_common_metadata`` (:func:`write_voparquet`),
   point map and skymaps, and ``hats.properties`` last: a catalog without it is not a catalog
   to hats/lsdb;
4. :func:`write_collection_properties` once every catalog of the collection is finished.

VOParquet (IVOA note "VOTable-Parquet", what TOPCAT, astropy's ``parquet.votable`` reader and
IRSA's own Parquet products use): ``IVOA.VOTable-Parquet.content`` in ``_common_metadata`` is a
VOTable whose FIELDs give every column's datatype, unit (as a VOUnit), UCD and description, taken
from the Arrow field metadata (``unit``, ``ucd``, ``description``: the schema file's, or whatever the
input gave for columns the schema does not describe). Nested columns (struct of lists) follow
hats' convention: one FIELD per sub-column named ``column.sub`` and a GROUP marking the column
as nested.

A failed metadata write (a full disk, a lost connection) removes what it half wrote and raises
a :class:`~tmass_lake.storage.StorageError` naming the file.
"""

from __future__ import annotations

import io
import logging
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import version
from typing import TypeVar
from xml.sax.saxutils import escape as xml_escape

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from astropy import units as u
from astropy.io.votable.tree import Field, FieldRef, Group, Param, Resource, TableElement, VOTableFile
from hats.catalog import PartitionInfo, TableProperties
from hats.catalog.dataset.collection_properties import CollectionProperties
from hats.io import file_io, paths
from hats.io.file_io import write_fits_image
from hats.io.file_io.file_io import get_parquet_write_table_kwargs
from hats.io.parquet_metadata import write_parquet_metadata
from hats.io.skymap import write_skymap
from hats.io.summary_file import write_catalog_summary_file
from hats.pixel_math import HealpixPixel
from hats.pixel_math.spatial_index import SPATIAL_INDEX_COLUMN
from matplotlib import pyplot as plt
from upath import UPath

from tmass_lake.convert.parameters import HISTOGRAM_ORDER
from tmass_lake.schema import TableSchema, string_width
from tmass_lake.storage import (
    StorageError,
    ensure_dir,
    filesystem,
    forget_listings,
    join,
    open_atomic,
    retrying,
    url_of,
)

T = TypeVar("T")
LOG = logging.getLogger(__name__)
HEALPIX_COLUMN = SPATIAL_INDEX_COLUMN
BUILDER = f"tmass-lake v{version('tmass-lake')}"
SKYMAP_ALT_ORDERS = [2, 4, 6]
TABLE_PROPERTIES = "table.properties"
BUILD_ID = "tmass_lake_build"
"""The properties key of a catalog's (or Parquet table's) build id: new at every build."""
PER_PARTITION_STATISTICS = "per_partition_statistics.parquet"
VOPARQUET_VERSION = "IVOA.VOTable-Parquet.version"
VOPARQUET_CONTENT = "IVOA.VOTable-Parquet.content"
WRITER_COLUMNS = {
    HEALPIX_COLUMN: {"description": "HEALPix index of the position at order 29 (nested scheme): "
                                    "hats' spatial index, by which every data file is sorted",
                     "ucd": "pos.healpix"},
    "Norder": {"description": "HEALPix order of the partition holding the row"},
    "Npix": {"description": "HEALPix pixel (at order Norder, nested scheme) of the partition holding the row",
             "ucd": "pos.healpix"},
}
"""Metadata of the columns hats' layout adds (tables' own columns carry theirs from the schema)."""


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
    """Write one data file (already sorted by ``sort_by``) atomically; returns its size in bytes.

    The file is compact (:func:`data_file_schema`): its columns' types, and as key-value metadata the
    compact VOParquet of :func:`voparquet_metadata` (``compact=True``: datatype, unit, UCD of every
    column), so one file downloaded alone keeps its units for astropy and TOPCAT. Descriptions,
    provenance and the table's notes are only in ``_common_metadata`` (:func:`finish_catalog`) and
    the manifest: repeated in every file they made each footer 4x hats-import's. No ``ARROW:schema``
    either (``store_schema=False``): the Parquet types say everything these columns need, and the
    Arrow schema (with its own copy of the key-value metadata) is in ``_common_metadata``.
    """
    fs, path = filesystem(url, storage_options)
    bare = data_file_schema(table.schema)
    kwargs = parquet_kwargs(bare, compression_level, sort_by, **extra)
    row_group_size = kwargs.pop("row_group_size", None)
    kwargs.setdefault("compression", "zstd")
    meta = voparquet_metadata(table.schema, name=url.split("/dataset/")[0].rstrip("/").rsplit("/", 1)[-1],
                              compact=True)
    data = table.cast(bare)

    def put() -> int:
        with open_atomic(fs, path) as f:
            with pq.ParquetWriter(f, bare, store_schema=False, **kwargs) as writer:
                writer.write_table(data, row_group_size=row_group_size)
                writer.add_key_value_metadata(meta)
            return int(f.tell())

    return retrying(put, what=f"writing {url_of(fs, path)}")


def data_file_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` without field or schema metadata (types and nullability only): a data file's."""
    def bare(f: pa.Field) -> pa.Field:
        t = f.type
        if pa.types.is_struct(t):
            t = pa.struct([bare(c) for c in t])
        return pa.field(f.name, t, nullable=f.nullable)
    return pa.schema([bare(f) for f in schema])


def with_metadata(schema: pa.Schema, described: pa.Schema | None) -> pa.Schema:
    """``schema`` (what the data files hold) with each field's metadata, and the schema's, from the
    field of the same name in ``described`` (the table's full schema; sub-fields of nested columns
    too); a field ``described`` lacks keeps its own."""
    if described is None:
        return schema

    def merge(f: pa.Field, d: pa.Field | None) -> pa.Field:
        if d is None:
            return f
        t = f.type
        if pa.types.is_struct(t) and pa.types.is_struct(d.type):
            names = [c.name for c in d.type]
            t = pa.struct([merge(c, d.type[names.index(c.name)] if c.name in names else None) for c in t])
        return pa.field(f.name, t, nullable=f.nullable, metadata=d.metadata or f.metadata)

    fields = [merge(f, described.field(f.name) if f.name in described.names else None) for f in schema]
    return pa.schema(fields, metadata=(schema.metadata or {}) | (described.metadata or {}))


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
        "obs_description": description or archive_description(schema),
        "obs_regime": "Infrared",
        "obs_ack": "This publication makes use of data products from the Two Micron All Sky "
                   "Survey, a joint project of UMass and IPAC/Caltech, funded by NASA and NSF.",
        "bib_reference": "2006AJ....131.1163S",
        "em_min": "1.1e-6",
        "em_max": "2.4e-6",
        "prov_progenitor": progenitor or "IRSA 2MASS Extended Mission " + schema.table,
    }


LAYOUT_WORDING = {
    "documented": "the column layout is the one the Explanatory Supplement documents",
    "partial": "the column layout is partly documented by the Explanatory Supplement, the rest inferred",
    "inferred": "the column layout is inferred from the Explanatory Supplement's descriptions and "
                "the related released catalogs' formats",
    "incomplete": "the column layout is incomplete: IRSA's database has columns the Explanatory "
                  "Supplement does not describe",
}
"""How ``obs_description`` words a table's ``layout_status`` (``inferred from FILE``: ``inferred``)."""


def archive_description(schema: TableSchema) -> str:
    """``obs_description`` of a table in the archive's terms: what IRSA distributes, where it is
    documented, how much of the layout is documented and how much inferred (the schema file's
    working note on how the layout was looked for stays in the manifest and the schema file)."""
    documented = sum(c.provenance.startswith("documented") for c in schema.columns)
    status = LAYOUT_WORDING.get(schema.layout_status.split()[0], schema.layout_status)
    where = f" (Explanatory Supplement: {schema.documentation})" if schema.documentation else ""
    irsa = f"; IRSA's database has {schema.irsa_columns} columns" if schema.irsa_columns else ""
    return (f"{schema.title}, from the 2MASS Extended Mission data distributed by IRSA{where}, "
            f"converted to HATS by tmass-lake. {status[0].upper()}{status[1:]} ({documented} of "
            f"{len(schema.columns)} columns documented, {len(schema.columns) - documented} inferred{irsa}). "
            "Each column's provenance is in dataset/_common_metadata and the lake manifest.")


def positional_properties(ra_column: str, dec_column: str) -> dict:
    """The keys every catalog with positions (object or margin) carries."""
    return {"ra_column": ra_column, "dec_column": dec_column, "hats_col_healpix": HEALPIX_COLUMN,
            "hats_col_healpix_order": 29, "hats_npix_suffix": ".parquet"}


def _vo_datatype(t: pa.DataType) -> dict[str, str]:
    """VOTable ``datatype``/``arraysize``/``xtype`` of an Arrow type (VOTable has no signed byte,
    no unsigned integers beyond a byte and no date type: widened, or ISO-8601 text as DALI says)."""
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _vo_datatype(t.value_type) | {"arraysize": "*"}
    if pa.types.is_boolean(t):
        return {"datatype": "boolean"}
    if pa.types.is_integer(t):
        if t == pa.uint8():
            return {"datatype": "unsignedByte"}
        bits = t.bit_width + (0 if pa.types.is_signed_integer(t) else 1)
        return {"datatype": "short" if bits <= 16 else "int" if bits <= 32 else "long"}
    if pa.types.is_floating(t):
        return {"datatype": "double" if t == pa.float64() else "float"}
    if pa.types.is_date(t):
        return {"datatype": "char", "arraysize": "*", "xtype": "timestamp"}
    if pa.types.is_timestamp(t):
        return {"datatype": "char", "arraysize": "*", "xtype": "timestamp"}
    return {"datatype": "char", "arraysize": "*"}  # strings, and anything else as its text


def vounit(unit: str | None) -> str | None:
    """``unit`` as a VOUnit (what VOTable FIELDs carry): astropy's VOUnit spelling of it (``day`` ->
    ``d``, ``mas/yr`` -> ``mas.yr**-1``), or quoted when VOUnit does not know it (``'DN'``)."""
    if not unit:
        return None
    # parse_strict="raise", not a warnings filter: filters are process-wide, and on an in-process
    # (threaded) cluster an "error" filter here turned other threads' warnings into exceptions
    try:
        spelled = u.Unit(unit, parse_strict="raise").to_string("vounit")
        u.Unit(spelled, format="vounit", parse_strict="raise")  # what a VOTable reader parses
        return spelled
    except ValueError:
        return f"'{unit}'"


def _exact_descriptions(xml: str, table: TableElement) -> str:
    """astropy's writer wraps DESCRIPTION texts over lines (``textwrap``, which also breaks after
    hyphens): the exact texts back, in the order it writes them (table, fields, groups)."""
    texts = [t for t in (table.description, *(f.description for f in table.fields),
                         *(g.description for g in table.groups)) if t is not None]
    found = re.findall(r"<DESCRIPTION>.*?</DESCRIPTION>", xml, flags=re.S)
    if len(found) != len(texts):
        return xml
    exact = iter(texts)
    return re.sub(r"<DESCRIPTION>.*?</DESCRIPTION>",
                  lambda _: f"<DESCRIPTION>{xml_escape(next(exact))}</DESCRIPTION>", xml, flags=re.S)


def _string_width(field: pa.Field) -> int | None:
    return string_width((field.metadata or {}).get(b"documented_type", b"").decode())


def _vo_field(vot: VOTableFile, name: str, field: pa.Field, *, compact: bool = False,
              referenced: bool = False) -> Field:
    meta = WRITER_COLUMNS.get(name, {}) | {k.decode(): v.decode() for k, v in (field.metadata or {}).items()}
    attrs = _vo_datatype(field.type)
    width = _string_width(field)
    if width and pa.types.is_string(field.type):
        attrs["arraysize"] = f"{width}*"
    ident = name if (referenced or not compact) else None  # a nested sub-column's GROUP refers to it
    out = Field(vot, name=name, ID=ident, unit=vounit(meta.get("unit")), ucd=meta.get("ucd") or None, **attrs)
    if meta.get("description") and not compact:
        out.description = meta["description"]
    return out


def _compact_xml(xml: str) -> str:
    """astropy's VOTable text without its comment, schema location and indentation (one FIELD a line)."""
    xml = re.sub(r"<!--.*?-->\s*", "", xml, flags=re.S)
    xml = re.sub(r' xmlns:xsi="[^"]*" xsi:schemaLocation="[^"]*"', "", xml)
    xml = re.sub(r">\s+<", "><", xml).replace("<FIELD", "\n<FIELD")
    return re.sub(r"(<FIELD[^>]*)></FIELD>", r"\1/>", xml)


def voparquet_metadata(schema: pa.Schema, *, name: str, description: str | None = None,
                       compact: bool = False) -> dict[str, str]:
    """The VOParquet keys for ``schema``: a VOTable with one FIELD per column (per sub-column of a
    nested column, hats' convention), plus astropy's ``table::len::`` for fixed-width strings.

    ``compact`` (every data file's): datatype, unit and UCD only, no descriptions, no indentation.

    Not hats' :func:`hats.io.parquet_metadata.write_voparquet_in_common_metadata`: it builds FIELDs
    from pandas dtypes (every string ``char`` of no width, unsigned integers astropy cannot write),
    takes units and descriptions as separate dicts, and writes only ``_common_metadata``, while
    every data file needs the compact form too. Its nested convention (``column.sub`` FIELDs, a
    GROUP with ``is_nested_column``) is followed here.
    """
    vot = VOTableFile()
    resource = Resource()
    vot.resources.append(resource)
    table = TableElement(vot, name=name, ID=name)
    resource.tables.append(table)
    if description and not compact:
        table.description = description
    keys: dict[str, str] = {}
    for field in schema:
        if pa.types.is_struct(field.type):
            group = Group(table, name=field.name, ID=field.name)
            if not compact:
                group.description = (field.metadata or {}).get(b"description", b"").decode() or \
                    "multi-column nested format"
            group.entries.append(Param(vot, name="is_nested_column", datatype="boolean", value="t"))
            for child in field.type:
                sub = f"{field.name}.{child.name}"
                table.fields.append(_vo_field(vot, sub, child, compact=compact, referenced=True))
                group.entries.append(FieldRef(table, ref=sub))
            table.groups.append(group)
            continue
        table.fields.append(_vo_field(vot, field.name, field, compact=compact))
        width = _string_width(field)
        if width and pa.types.is_string(field.type):
            keys[f"table::len::{field.name}"] = str(width)
    out = io.BytesIO()
    vot.to_xml(out)
    xml = out.getvalue().decode()
    xml = _compact_xml(xml) if compact else _exact_descriptions(xml, table)
    return {VOPARQUET_VERSION: "1.0", VOPARQUET_CONTENT: xml} | keys


def write_voparquet(root: UPath, *, name: str, description: str | None = None,
                    schema: pa.Schema | None = None) -> None:
    """Give the ``_common_metadata`` of the catalog or table at ``root`` the full metadata: each
    column's from ``schema`` (the table's described schema: the data files carry only types) and
    the VOParquet made from it, descriptions included."""
    pointer = paths.get_common_metadata_pointer(root)
    described = schema

    def put() -> None:
        schema = with_metadata(file_io.read_parquet_metadata(pointer).schema.to_arrow_schema(), described)
        schema = schema.with_metadata({k: v for k, v in (schema.metadata or {}).items()
                                       if not k.startswith(b"table::len::")})
        vo = voparquet_metadata(schema, name=name, description=description)
        meta = dict(schema.metadata or {}) | {k.encode(): v.encode() for k, v in vo.items()}
        file_io.write_parquet_metadata(schema.with_metadata(meta), pointer)

    _guarded(f"writing the VOParquet metadata of {pointer}", put, [pointer])


def finish_catalog(url: str, properties: dict, *, expected_rows: int, storage_options: dict | None = None,
                   pixels: list[HealpixPixel] | None = None,
                   histogram: tuple[np.ndarray, np.ndarray] | None = None,
                   empty_schema: pa.Schema | None = None, schema: pa.Schema | None = None,
                   id_columns: tuple[str, ...] = ()) -> None:
    """Write a catalog's metadata around its written data files, ``hats.properties`` last.

    ``pixels`` (object and margin catalogs) gives ``partition_info.csv`` and
    ``per_partition_statistics.parquet``; without them (index catalogs) ``_metadata`` is not
    reordered by pixel. Every catalog gets hats' ``data_thumbnail.parquet`` (one row per data file);
    its summaries are written on request (:func:`write_catalog_summaries`). ``histogram`` (object
    catalogs: the non-empty order-10 pixels and their row counts) gives the point map and skymaps.
    ``schema`` is the catalog's described schema (units, UCDs, descriptions, provenance), for
    ``_common_metadata``: the data files carry types and compact VOParquet only. Unless the
    properties set it, ``hats_cols_default`` is :func:`default_columns` of it (and ``id_columns``,
    the table's key). Raises if
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
    _write_metadata(root, url, expected_rows, order_by_healpix=pixels is not None,
                    empty_schema=empty_schema if pixels == [] else None, statistics=bool(pixels))
    write_voparquet(root, name=properties["catalog_name"], schema=schema or empty_schema,
                    description=properties.get("obs_description") or properties.get("obs_title"))
    if "hats_cols_default" not in properties:
        extra["hats_cols_default"] = default_columns(common_schema(url, storage_options), id_columns) or None
    if histogram is not None:
        dense = np.zeros(12 * 4**HISTOGRAM_ORDER, dtype=np.int64)
        np.add.at(dense, histogram[0], histogram[1])
        _guarded(f"writing the point map of {url}",
                 lambda: write_fits_image(dense, paths.get_point_map_file_pointer(root)))
        _guarded(f"writing the skymaps of {url}",
                 lambda: write_skymap(histogram=dense, catalog_dir=root, orders=SKYMAP_ALT_ORDERS))
        extra |= {"hats_skymap_order": HISTOGRAM_ORDER, "hats_skymap_alt_orders": SKYMAP_ALT_ORDERS}
    provenance = TableProperties.new_provenance_dict(root, builder=BUILDER)
    extra[BUILD_ID] = uuid.uuid4().hex  # another build at the same URL has other properties (and ETag)
    props = TableProperties(**(provenance | properties | extra))
    target = root / "hats.properties"
    _guarded(f"writing {target}", lambda: props.to_properties_file(root), [target])


def write_summaries(root: UPath) -> None:
    """hats' catalog summaries of the catalog or collection at ``root`` (``README.md`` and
    ``index.html``: :func:`hats.io.summary_file.write_catalog_summary_file`, hats' own templates).

    A collection's summary shows its main catalog (columns, sky maps, how to open it). hats 0.11.1
    draws the density map with a logarithmic colour scale, which matplotlib refuses for a catalog
    of a few pixels (the mock's smallest): that summary is skipped, the log says so, and the figure
    hats left open is closed (left open, it broke every later summary in the process)."""
    for fmt, name in (("markdown", "README.md"), ("html", "index.html")):
        target = root / name
        before = set(plt.get_fignums())
        try:
            _guarded(f"writing {target}",
                     lambda fmt=fmt: write_catalog_summary_file(root, fmt=fmt, uri=str(root)), [target])
        except ValueError as e:
            LOG.warning("no catalog summary %s: hats could not draw its density map (%s)", target, e)
        finally:
            for number in set(plt.get_fignums()) - before:
                plt.close(number)


MAGNITUDE_BANDS = ("em.IR.J", "em.IR.H", "em.IR.K")


def default_columns(schema: pa.Schema, id_columns: tuple[str, ...] = ()) -> list[str]:
    """``hats_cols_default``: the columns a user needs first, chosen from the described schema.

    IRSA publishes no short form of the Extended Mission working databases (Gator's short form is
    the All-Sky release's), and the schema files record no TAP ``principal`` flags, so the choice
    follows the table's key and indexed columns (``id_columns``, so ``id_search`` works on a plain
    open) and the documented UCDs: every ``meta.main`` column (the position, the observation
    date), the epoch (``time.epoch``), per 2MASS band J, H, Ks the first magnitude (``phot.mag``) and
    its first uncertainty (``stat.error;phot.mag``), and every nested column (the light curves).
    Empty for a schema with none of these (hats then loads every column)."""
    ucds = {f.name: (f.metadata or {}).get(b"ucd", b"").decode() for f in schema}
    chosen = [c for c in id_columns if c in ucds]  # the key and every indexed column (id_search)
    chosen += [n for n, ucd in ucds.items() if "meta.main" in ucd or ucd.startswith("time.epoch")]
    for band in MAGNITUDE_BANDS:
        for kind in ("phot.mag", "stat.error;phot.mag"):
            chosen += [n for n, ucd in ucds.items() if ucd.startswith(kind) and band in ucd][:1]
    chosen += [f.name for f in schema if pa.types.is_struct(f.type)]
    return list(dict.fromkeys(chosen))


def finish_margin(url: str, primary_url: str, *, threshold_arcsec: float, pixels: list[HealpixPixel],
                  rows: int, ra_column: str, dec_column: str, storage_options: dict | None = None) -> None:
    """A margin catalog's metadata (:func:`finish_catalog`), written even when it has no partition.

    The catalog names are the URLs' last parts (``<collection>/<margin>``, ``<collection>/<primary>``);
    an empty margin takes its primary catalog's schema, so lsdb loads a margin for every table, and
    its primary's ``hats_cols_default``.
    """
    primary = TableProperties.read_from_dir(upath(primary_url, storage_options))
    default = {"hats_cols_default": primary.default_columns} if primary.default_columns else {}
    finish_catalog(url, positional_properties(ra_column, dec_column) | default | {
        "catalog_name": url.rstrip("/").rsplit("/", 1)[-1], "catalog_type": "margin", "total_rows": rows,
        "primary_catalog": primary_url.rstrip("/").rsplit("/", 1)[-1], "margin_threshold": threshold_arcsec,
    }, expected_rows=rows, storage_options=storage_options, pixels=pixels,
        empty_schema=common_schema(primary_url, storage_options))  # also the margin's described schema


def _write_metadata(root: UPath, url: str, expected_rows: int, *, order_by_healpix: bool,
                    empty_schema: pa.Schema | None = None, statistics: bool = False,
                    thumbnail: bool = True) -> None:
    """``_metadata`` and ``_common_metadata`` of the data files under ``root`` (of no file: from
    ``empty_schema``), hats' ``data_thumbnail.parquet`` (``thumbnail``) and, with ``statistics``,
    its ``per_partition_statistics.parquet``; removed again, and an error raised, unless they count
    ``expected_rows`` rows."""
    targets = [paths.get_parquet_metadata_pointer(root), paths.get_common_metadata_pointer(root)]
    made = [paths.get_data_thumbnail_pointer(root), root / PER_PARTITION_STATISTICS]
    if empty_schema is not None:
        written = _guarded(f"writing {targets[0]}", lambda: _write_empty_metadata(empty_schema, targets),
                           targets)
    else:
        def write() -> int:
            try:
                return write_parquet_metadata(root, order_by_healpix=order_by_healpix,
                                              create_thumbnail=thumbnail,
                                              create_per_partition_stats=statistics)
            except StopIteration:  # hats' thumbnail takes every data file's first row: an empty file has none
                LOG.warning("%s: a data file holds no row, so no data_thumbnail.parquet", url)
                return write_parquet_metadata(root, order_by_healpix=order_by_healpix, create_thumbnail=False,
                                              create_per_partition_stats=statistics)

        written = _guarded(f"writing {targets[0]}", write, targets + made)
    if written != expected_rows:
        for p in targets + made:
            p.unlink(missing_ok=True)
        raise StorageError(f"{url}: the data files hold {written} rows, {expected_rows} were written")


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
                         storage_options: dict | None = None, schema: pa.Schema | None = None) -> None:
    """A plain Parquet table's ``_metadata``/``_common_metadata`` (``schema``: its described schema)
    and, last, ``table.properties``."""
    root = written_by_workers(url, storage_options)
    _write_metadata(root, url, expected_rows, order_by_healpix=False, thumbnail=False)
    write_voparquet(root, name=properties["table"], description=properties.get("title"), schema=schema)
    stamp = {"builder": BUILDER, "creation_date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%MUTC"),
             BUILD_ID: uuid.uuid4().hex}
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


def write_catalog_summaries(url: str, storage_options: dict | None = None) -> None:
    """hats' summaries of a finished collection (its main catalog), its margins and its indexes.

    On request (``build --catalog-summaries``), as hats writes them: each draws the catalog's
    pixel and density maps, ~5 s per collection and format, so a build does not pay it unasked.
    """
    root = upath(url, storage_options)
    props = CollectionProperties.read_from_dir(root)
    write_summaries(root)
    for sub in [*(props.all_margins or []), *(props.all_indexes or {}).values()]:
        write_summaries(root / sub)


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


