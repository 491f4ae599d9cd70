"""VOParquet metadata (IVOA.VOTable-Parquet.content in _common_metadata) in every kind of catalog the
build writes, read back with astropy against the schema files."""

from __future__ import annotations

import io
import warnings

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy import units as u
from astropy.io import votable
from astropy.table import Table

from tmass_lake.convert.writer import VOPARQUET_CONTENT, WRITER_COLUMNS, voparquet_metadata, vounit
from tmass_lake.lake.stats import STAT_COLUMNS
from tmass_lake.schema import load_schema

KINDS = {  # kind: (catalog directory under the lake, schema of its columns)
    "catalog": ("pt_src_c/pt_src_c", "pt_src_c"),
    "margin": ("pt_src_c/pt_src_c_10arcsec", "pt_src_c"),
    "index": ("pt_src_c/pt_src_c_cntr_index", "pt_src_c"),
    "derived": ("pt_src_6x2_cat/pt_src_6x2_cat", "pt_src_6x2"),
    "parquet": ("cf_link", "cf_link"),
    "lightcurves": ("cf_lightcurves/cf_lightcurves", "cf_info"),
    "lightcurves margin": ("cf_lightcurves/cf_lightcurves_10arcsec", "cf_info"),
    "lightcurves index": ("cf_lightcurves/cf_lightcurves_gcntr_index", "cf_info"),
    "merged sources": ("cf_info/cf_info", "cf_info"),
    "merged sources margin": ("cf_info/cf_info_10arcsec", "cf_info"),
    "extended (dates)": ("ext_src_c/ext_src_c", "ext_src_c"),
}
NESTED_SCHEMA = {"cf_info": "pt_src_c"}  # the detections nested in a light-curve collection


def common_metadata(env, kind: str):
    return env.lake / KINDS[kind][0] / "dataset" / "_common_metadata"


def expected(kind: str, name: str) -> dict:
    """unit, ucd and description of a column as the schema files (or the writer) define them."""
    schema = load_schema(KINDS[kind][1])
    if "." in name:
        schema, name = load_schema(NESTED_SCHEMA[schema.table]), name.split(".", 1)[1]
    if name in schema.names:
        c = schema.column(name)
        return {"unit": c.unit, "ucd": c.ucd, "description": c.description}
    meta = WRITER_COLUMNS.get(name) or STAT_COLUMNS[name]
    return {"unit": meta.get("unit"), "ucd": meta.get("ucd"), "description": meta["description"]}


def unit(vo_unit, schema_unit: str | None) -> bool:
    """The VOTable's unit (a VOUnit, as astropy parsed it) is the schema's."""
    if schema_unit is None:
        return vo_unit is None
    return vo_unit is not None and u.Unit(vo_unit) == u.Unit(vounit(schema_unit), format="vounit")


def leaves(schema: pa.Schema) -> list[str]:
    return [f"{f.name}.{c.name}" if pa.types.is_struct(f.type) else f.name
            for f in schema for c in (f.type if pa.types.is_struct(f.type) else [f])]


@pytest.mark.slow  # the shared mock lake
@pytest.mark.parametrize("kind", KINDS)
def test_votable_parsed_back_gives_the_schema(env, kind):
    path = common_metadata(env, kind)
    schema = pq.read_schema(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a VOTable astropy reads without a single complaint
        vot = votable.parse(io.BytesIO(schema.metadata[VOPARQUET_CONTENT.encode()]))
    table = vot.get_first_table()
    assert [f.name for f in table.fields] == leaves(schema)
    for f in table.fields:
        want = expected(kind, f.name)
        assert unit(f.unit, want["unit"]), f.name
        assert f.ucd == want["ucd"] and f.description == want["description"], f.name
    empty = Table.read(vot)  # what astropy's parquet.votable reader starts from
    assert empty.colnames == leaves(schema)
    if "ra" in empty.colnames:
        assert str(empty["ra"].unit) == "deg" and empty["ra"].meta["ucd"].startswith("pos.eq.ra")
    nested = [g for g in table.groups if any(p.name == "is_nested_column" for p in g.entries)]
    assert [g.name for g in nested] == [f.name for f in schema if pa.types.is_struct(f.type)]
    dates = [f for f in table.fields
             if f.name in schema.names and pa.types.is_date32(schema.field(f.name).type)]
    assert all(f.datatype == "char" and f.xtype == "timestamp" for f in dates)


def readable_by_astropy(schema: pa.Schema) -> bool:
    """astropy's parquet.votable reader cannot stitch date32 columns (VOTable has no date type, and
    its vstack refuses text with datetime64) nor nested columns (its Parquet reader has no struct
    type); every other kind is read whole."""
    return not any(pa.types.is_date32(f.type) or pa.types.is_struct(f.type) for f in schema)


@pytest.mark.slow
def test_astropy_parquet_votable_reader(env):
    read = []
    for kind in KINDS:
        path = common_metadata(env, kind)
        if not readable_by_astropy(pq.read_schema(path)):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            t = Table.read(path, format="parquet.votable")
        assert t.colnames == pq.read_schema(path).names
        for name in t.colnames:
            want = expected(kind, name)
            assert unit(t[name].unit, want["unit"]), (kind, name)
            assert t[name].description == want["description"] and t[name].meta.get("ucd") == want["ucd"]
        read.append(kind)
    # Catalogs and margins (of the merged sources), indexes (of a table, of a light-curve collection)
    # and Parquet tables; the others hold a date (the WDBs) or the nested detections.
    assert set(read) == {"merged sources", "merged sources margin", "index", "parquet", "lightcurves index"}


@pytest.mark.slow
def test_lake_schema_agrees_with_voparquet(env, lake):
    t = Table.read(votable.parse(io.BytesIO(
        pq.read_schema(common_metadata(env, "catalog")).metadata[VOPARQUET_CONTENT.encode()])))
    assert vounit("day") == "d" and vounit("DN") == "'DN'" and vounit("mas/yr") == "mas.yr**-1"
    for name in ("j_m", "ra", "jdate", "ph_qual", "date"):
        col = lake.schema("pt_src_c").column(name)
        assert unit(t[name].unit, col.unit)
        assert t[name].description == col.description
    assert lake.schema("cf_lightcurves").table == "cf_info"  # a light-curve collection: its sources' schema


def test_voparquet_types_and_input_metadata():
    """Types VOTable lacks are widened or written as text; metadata the input gave is kept."""
    schema = pa.schema([
        pa.field("i8", pa.int8()), pa.field("u16", pa.uint16()), pa.field("u64", pa.uint64()),
        pa.field("f4", pa.float32()), pa.field("d", pa.date32()), pa.field("b", pa.bool_()),
        pa.field("s", pa.string(), metadata={"documented_type": "%3s", "description": "flags"}),
        pa.field("x", pa.float64(), metadata={"unit": "mJy", "ucd": "phot.flux", "description": "input's"}),
        pa.field("n", pa.struct([pa.field("t", pa.list_(pa.float64()), metadata={"unit": "d"})])),
    ])
    meta = voparquet_metadata(schema, name="t", description="a test table")
    table = votable.parse(io.BytesIO(meta[VOPARQUET_CONTENT].encode())).get_first_table()
    got = {f.name: (f.datatype, f.arraysize, f.xtype, str(f.unit) if f.unit else None) for f in table.fields}
    assert got == {"i8": ("short", None, None, None), "u16": ("int", None, None, None),
                   "u64": ("long", None, None, None), "f4": ("float", None, None, None),
                   "d": ("char", "*", "timestamp", None), "b": ("boolean", None, None, None),
                   "s": ("char", "3*", None, None), "x": ("double", None, None, "mJy"),
                   "n.t": ("double", "*", None, "d")}
    assert table.get_field_by_id("x").ucd == "phot.flux" and meta["table::len::s"] == "3"
    assert table.description == "a test table"


def data_files(env, kind: str) -> list:
    return sorted((env.lake / KINDS[kind][0] / "dataset").rglob("*.parquet"))


@pytest.mark.slow
@pytest.mark.parametrize("kind", [k for k in KINDS if k != "parquet"])
def test_one_data_file_alone_keeps_units_and_ucds(env, kind):
    """A data file downloaded alone carries the compact VOParquet (datatype, unit, UCD per column,
    no descriptions: those are in _common_metadata), and astropy reads it back."""
    files = data_files(env, kind)
    if not files:  # a margin of no partition (the mock's sparse tables): nothing to download
        assert "margin" in kind
        return
    path = files[0]
    meta = pq.ParquetFile(path).metadata.metadata
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = votable.parse(io.BytesIO(meta[VOPARQUET_CONTENT.encode()])).get_first_table()
    schema = pq.read_schema(common_metadata(env, kind))
    assert [f.name for f in table.fields] == leaves(schema)
    for f in table.fields:
        want = expected(kind, f.name)
        assert unit(f.unit, want["unit"]) and f.ucd == want["ucd"], (kind, f.name)
        assert f.description is None
    if readable_by_astropy(schema):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            t = Table.read(path, format="parquet.votable")
        assert "ra" not in t.colnames or t["ra"].unit == u.deg


@pytest.mark.slow
def test_data_file_footer_is_compact(env):
    """Descriptions and provenance are not repeated in every data file; _common_metadata has them."""
    path = data_files(env, "catalog")[0]
    footer = pq.ParquetFile(path).metadata
    assert b"ARROW:schema" not in footer.metadata and b"layout_note" not in footer.metadata
    common = pq.read_schema(common_metadata(env, "catalog"))
    assert common.field("j_m").metadata[b"description"] and b"layout_note" in common.metadata
    assert footer.serialized_size < 1.2 * 220 * len(common)  # hats-import's ~190 B a column, +20 %
