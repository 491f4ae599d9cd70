"""Every table schema loads, is honest about its provenance, and round-trips documented precision."""

import csv
import json
from pathlib import Path

import pyarrow as pa
import pytest

from tmass_lake.schema import list_tables, load_schema

IRSA_TABLES = {
    "pt_src_rej", "ext_src_rej", "wsdb_info", "wsdb_link", "ewsdbf_info", "ewsdbf_link", "pscan_dat",
    "coadd_dat", "pt_src_6x2", "ext_src_6x2", "sixxf_info", "sixxf_link", "esixxf_info", "esixxf_link",
    "pscan_dat_6x2", "coadd_dat_6x2", "pt_src_c", "ext_src_c", "cf_info", "cf_link", "ecf_info",
    "ecf_link", "pscan_dat_c", "coadd_dat_c", "deepcal_src", "pt_src_sc", "ext_src_sc", "scf_info",
    "scf_link", "escf_info", "escf_link", "pscan_dat_sc", "coadd_dat_sc", "fp_psc", "fp_xsc",
    "ast_assoc", "com_assoc", "pla_assoc",
}


def test_every_extended_mission_table_has_a_schema():
    assert set(list_tables()) >= IRSA_TABLES


@pytest.mark.parametrize("table", sorted(IRSA_TABLES))
def test_schema_loads_with_metadata(table):
    s = load_schema(table)
    schema = s.arrow_schema()
    assert schema.metadata[b"table"].decode() == table
    assert json.loads(schema.metadata[b"sources"])
    assert s.layout_status in {"documented", "partial", "inferred", "incomplete"}
    for c, f in zip(s.columns, schema, strict=True):
        assert c.provenance in {"documented", "inferred"}, c
        assert c.source and c.description, c
        assert f.metadata[b"description"]
        if c.unit:
            assert f.metadata[b"unit"].decode() == c.unit
        if c.ucd:
            assert f.metadata[b"ucd"].decode() == c.ucd
    if s.positional:
        assert s.column(s.ra_column).arrow_type == pa.float64()
        assert s.column(s.ra_column).ucd.startswith("pos.eq.ra")


def test_incomplete_layouts_say_so():
    assert load_schema("pt_src_rej").layout_status == "inferred"
    assert "gives no column list" in load_schema("pt_src_6x2").layout_note
    assert load_schema("fp_psc").layout_status == "documented"
    documented = {c.name for c in load_schema("cf_info").columns if c.provenance == "documented"}
    assert {"gcntr", "napp"} <= documented


def test_6x_tables_have_cat_and_rel():
    names = load_schema("pt_src_6x2").names
    assert "cat" in names and "rel" in names and "gcntr" in names
    assert "designation" not in names  # seca1_5: not carried in the WDBs


@pytest.mark.parametrize("text,doc_type", [("123.456789", "decimal(9,6)"), ("-89.918610", "%10.6f"),
                                           ("12.467", "%6.3f"), ("2451809.7124", "%12.4f"),
                                           ("5385.6", "%10.1f")])
def test_arrow_type_round_trips_documented_precision(text, doc_type):
    from tmass_lake.schema import Column

    arrow = "float64" if doc_type in ("decimal(9,6)", "%10.6f", "%12.4f", "%10.1f") else "float32"
    col = Column("x", doc_type, arrow, None, None, "d", True, "documented", "test")
    value = pa.array([text]).cast(col.arrow_type)[0].as_py()
    assert f"{value:.{col.scale}f}" == text


def test_user_schema_file_can_replace_a_layout(tmp_path):
    import yaml

    doc = yaml.safe_load(Path(load_schema("pt_src_6x2").path).read_text())
    doc["columns"] = doc["columns"][:5]
    path = tmp_path / "pt_src_6x2.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert load_schema(str(path)).names == ["ra", "dec", "err_maj", "err_min", "err_ang"]


IRSA_CSV = Path(__file__).parent / "data" / "irsa_gator_catalogs.csv"
IRSA = {r["catname"]: r for r in csv.DictReader(IRSA_CSV.open())}


@pytest.mark.parametrize("table", sorted(IRSA_TABLES))
def test_schema_carries_irsas_table_facts(table):
    s = load_schema(table)
    r = IRSA.get(table)
    if r is None:  # the association lists are not Gator catalogs
        assert s.irsa_key is None and "not in IRSA" in s.rows_source
        return
    assert s.rows == int(r["rows"]) and "irsa_gator_catalogs.csv" in s.rows_source
    assert s.irsa_key == r["key"] and s.irsa_columns == int(r["cols"])
    assert s.default_constraint == (r["where1"] or None)
    assert s.data_dictionary == r["ddname"].split(":", 1)[1]
    link = r["ddlink"] or None
    if link and link.startswith("/"):
        link = "https://irsa.ipac.caltech.edu" + link
    assert s.documentation == link
    if s.layout_status == "incomplete":
        assert len(s.columns) < s.irsa_columns
        said = f"IRSA's database has {s.irsa_columns} columns where this layout has {len(s.columns)}"
        assert said in s.layout_note
    elif len(s.columns) > s.irsa_columns:
        assert f"more than the {s.irsa_columns} of IRSA's database" in s.layout_note


@pytest.mark.parametrize("table,cols", [("cf_info", 56), ("deepcal_src", 20),
                                        ("pscan_dat", 405)])
def test_layouts_irsa_shows_incomplete_say_so(table, cols):
    s = load_schema(table)
    assert s.layout_status == "incomplete" and s.irsa_columns == cols


LINK_TABLES = sorted(t for t in IRSA_TABLES if t.endswith("_link"))


@pytest.mark.parametrize("table", LINK_TABLES)
def test_link_tables_have_irsas_three_columns_with_ngrp(table):
    """Expl. Suppl. A6.3c: gcntr, the WDB extraction's key and ngrp; one format (link_dd) for all."""
    s = load_schema(table)
    assert s.names == ["gcntr", "cntr", "ngrp"] and len(s.names) == s.irsa_columns
    ngrp = s.column("ngrp")
    assert ngrp.provenance == "documented" and "seca6_3c" in ngrp.source and ngrp.nullable
    assert s.data_dictionary == "link_dd" and s.layout_status == "partial"


def test_shared_data_dictionaries_and_documented_layout_facts():
    for family, dd in (("info", "info_dd"), ("einfo", "einfo_dd")):
        extended = family == "einfo"
        tables = [t for t in IRSA_TABLES if t.endswith("_info") and t.startswith("e") == extended]
        assert {load_schema(t).data_dictionary for t in tables} == {dd}, family
    assert {load_schema(t).data_dictionary for t in ("pt_src_c", "pt_src_sc")} == {"pt_src_c_dd"}
    deep = load_schema("deepcal_src")
    assert deep.names[:3] == ["id", "ra", "dec"] and deep.names[-1] == "cc_flg"
    assert deep.column("id").type == "%6d" and deep.column("cc_flg").provenance == "documented"
    for t in ("pt_src_rej", "ext_src_rej", "pt_src_6x2", "ext_src_6x2", "pt_src_c", "ext_src_c"):
        assert "designation" not in load_schema(t).names, t  # seca1_5: the WDBs carry none


def test_irsa_default_constraints_are_filters():
    assert load_schema("pt_src_6x2").default_filter() == ("cat", "1")
    assert load_schema("ext_src_6x2").default_filter() == ("cat", "1")
    assert load_schema("deepcal_src").default_filter() == ("cc_flg", "0")
    assert load_schema("pt_src_c").default_filter() is None


def test_aliases_and_widths():
    s = load_schema("fp_psc")
    assert s.column("date").aliases == ("xdate",) and s.lookup()["xdate"].name == "date"
    assert s.lookup()["decl"].name == "dec" and s.lookup()["DEC".lower()].name == "dec"
    assert s.column("ph_qual").width == 3 and s.column("designation").width == 17
    assert s.column("ra").width is None
    for table in IRSA_TABLES:
        for c in load_schema(table).columns:
            if c.name in ("date", "dec"):
                assert c.aliases, (table, c.name)
