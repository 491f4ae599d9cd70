"""Exports keep the lake's metadata: `tmass-lake crossmatch` and `tmass-lake lightcurves` outputs (one
Parquet file, a Parquet directory, HATS) carry each column's unit, UCD and description (both sides of
a crossmatch, with their suffixes; a light curve's nested detections) and VOParquet astropy parses."""

from __future__ import annotations

import io
import warnings

import hats
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy import units as u
from astropy.io import votable
from hats.io import paths

from tmass_lake.cli import main
from tmass_lake.cli.export_metadata import Source, crossmatch_sources, described_schema
from tmass_lake.convert.writer import VOPARQUET_CONTENT
from tmass_lake.schema import load_schema


def first_file(out) -> object:
    if out.is_file():
        return out
    files = sorted(p for p in out.rglob("*.parquet") if "Npix=" in p.name or p.name.startswith("part-"))
    common = sorted(out.rglob("_common_metadata"))
    return common[0] if common else files[0]


def vo_fields(schema: pa.Schema) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = votable.parse(io.BytesIO(schema.metadata[VOPARQUET_CONTENT.encode()])).get_first_table()
    return {f.name: f for f in table.fields}


def meta(schema: pa.Schema, name: str, key: str) -> str | None:
    field = schema
    for part in name.split("."):
        field = (field.field(part) if isinstance(field, pa.Schema)
                 else next(c for c in field.type if c.name == part))
    value = (field.metadata or {}).get(key.encode())
    return value.decode() if value else None


@pytest.mark.slow
@pytest.mark.parametrize("form", ["x.parquet", "xdir", "xhats"])
def test_crossmatch_exports_carry_both_sides_metadata(env, tmp_path, form):
    out = tmp_path / form
    fmt = ["--format", "parquet"] if form == "xdir" else []
    assert main(["crossmatch", "--lake", str(env.lake), "--table", "pt_src_c", "--with",
                 str(env.reference("gaia_dr3")), "--radius", "1.5", "--output", str(out),
                 "--columns", "cntr", "jdate", "j_m", "--workers", "1", "--max-pm", "300", *fmt]) == 0
    schema = pq.read_schema(first_file(out))
    pt = load_schema("pt_src_c")
    left = [n for n in schema.names if n.endswith("_2mass")]
    assert {"ra_2mass", "j_m_2mass", "jdate_2mass"} <= set(left)
    for name in ("ra_2mass", "j_m_2mass", "jdate_2mass"):
        col = pt.column(name.removesuffix("_2mass"))
        assert meta(schema, name, "description") == col.description and meta(schema, name, "ucd") == col.ucd
    assert meta(schema, "_dist_arcsec", "unit") == "arcsec"
    fields = vo_fields(schema)
    assert u.Unit(fields["ra_2mass"].unit) == u.deg and fields["j_m_2mass"].ucd == pt.column("j_m").ucd
    # the reference's columns keep whatever metadata the reference's own _common_metadata gives
    ref = hats.read_hats(env.reference("gaia_dr3"))
    primary = getattr(ref, "main_catalog", ref)
    ref = pq.read_schema(paths.get_common_metadata_pointer(primary.catalog_base_dir))
    assert "source_id_gaia_dr3" in schema.names
    assert schema.field("source_id_gaia_dr3").metadata == ref.field("source_id").metadata


@pytest.mark.slow
@pytest.mark.parametrize("form", ["lc.parquet", "lcdir", "lchats"])
def test_lightcurve_exports_carry_metadata(env, tmp_path, form):
    out = tmp_path / form
    fmt = ["--format", "hats"] if form == "lchats" else []
    assert main(["lightcurves", "--lake", str(env.lake), "--product", "calibration", "--output", str(out),
                 "--workers", "1", *fmt]) == 0
    schema = pq.read_schema(first_file(out))
    info, det = load_schema("cf_info"), load_schema("pt_src_c")
    assert meta(schema, "ra", "unit") == "deg" and meta(schema, "gcntr", "description") == \
        info.column("gcntr").description
    assert meta(schema, "detections.j_m", "ucd") == det.column("j_m").ucd
    assert meta(schema, "n_epochs", "description")
    fields = vo_fields(schema)
    assert fields["detections.jdate"].unit is not None and u.Unit(fields["ra"].unit) == u.deg


def test_crossmatch_sources_find_each_sides_suffix():
    left = pa.schema([pa.field("ra", pa.float64(), metadata={"unit": "deg", "description": "2MASS ra"})])
    right = pa.schema([pa.field("ra", pa.float64(), metadata={"unit": "deg", "description": "Gaia ra"}),
                       pa.field("source_id", pa.int64(), metadata={"description": "Gaia id"})])
    result = pa.schema([pa.field("ra_2mass", pa.float64()), pa.field("ra_gaia_dr3", pa.float64()),
                        pa.field("source_id_gaia_dr3", pa.int64()), pa.field("_dist_arcsec", pa.float64())])
    sources = crossmatch_sources(result.names, left, right)
    assert sources[1] == Source(right, "_gaia_dr3")
    out = described_schema(result, sources, name="x")
    assert [meta(out, n, "description") for n in result.names[:3]] == ["2MASS ra", "Gaia ra", "Gaia id"]
    assert meta(out, "_dist_arcsec", "unit") == "arcsec" and VOPARQUET_CONTENT.encode() in out.metadata
