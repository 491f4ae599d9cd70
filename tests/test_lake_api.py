"""open_lake / Lake: table discovery, lazy lsdb catalogues with margins, pushdown, the 6x Catalog."""

from __future__ import annotations

import json
import warnings

import lsdb
import numpy as np
import pytest

import tmass_lake
from tmass_lake.lake import Lake, open_lake

pytestmark = pytest.mark.slow  # the shared mock lake


def test_open_lake_lists_tables(lake, env):
    assert isinstance(tmass_lake.open_lake(str(env.lake)), Lake)
    for name in ("pt_src_c", "cf_info", "cf_link", "pt_src_6x2", "sixxf_info", "sixxf_link",
                 "pt_src_6x2_cat"):
        assert name in lake.tables, name
    assert "report" not in lake.tables and "_lake" not in lake.tables
    assert lake.entry("cf_link").format == "parquet"
    assert lake.entry("pt_src_c").format == "hats"
    manifest = json.loads((env.lake / "manifest.json").read_text())
    assert set(manifest["tables"]) <= set(lake.tables)
    assert lake.schema("pt_src_c").column("jdate").unit == "day"
    assert lake.schema("pt_src_6x2_cat").table == "pt_src_6x2"  # derived: its source's schema
    with pytest.raises(KeyError, match="no table 'nope'"):
        lake["nope"]
    with pytest.raises(FileNotFoundError):
        open_lake(str(env.root / "missing"))


def test_fsspec_url_and_storage_options(env):
    lake = open_lake(f"file://{env.lake}", auto_mkdir=False)
    assert "pt_src_c" in lake.tables
    assert lake.storage_options == {"auto_mkdir": False}
    assert lake.open("pt_src_c", columns=["cntr"]).hc_structure.catalog_info.total_rows > 0


def test_catalog_has_margin_and_pushes_columns_down(lake):
    cat = lake["pt_src_c"]
    assert isinstance(cat, lsdb.Catalog)
    assert cat.margin is not None and cat.margin.hc_structure.catalog_info.margin_threshold == 10.0
    small = lake.open("pt_src_c", columns=["cntr", "jdate", "j_m"])
    assert set(small.columns) == {"cntr", "jdate", "j_m", "ra", "dec"}
    df = small.compute(progress_bar=False)
    assert len(df) == cat.hc_structure.catalog_info.total_rows
    assert df["jdate"].between(2450600, 2451960).all()
    assert lake.open("pt_src_c", margin=False).margin is None


def test_filters_and_searches_are_lsdbs(lake):
    cat = lake.open("pt_src_c", columns=["cntr", "k_m"], filters=[("k_m", "<", 12.0)])
    df = cat.compute(progress_bar=False)
    assert len(df) and (df["k_m"] < 12.0).all()
    full = lake.open("pt_src_c", columns=["cntr"]).compute(progress_bar=False)
    ra0, dec0 = float(full["ra"].iloc[0]), float(full["dec"].iloc[0])
    cone = lake["pt_src_c"].cone_search(ra0, dec0, 120.0).compute(progress_bar=False)
    sep = np.hypot((cone["ra"] - ra0) * np.cos(np.radians(dec0)), cone["dec"] - dec0) * 3600
    assert len(cone) and (sep <= 120.0 + 1e-6).all()
    box = lake["pt_src_c"].box_search(ra=(ra0 - 0.02, ra0 + 0.02), dec=(dec0 - 0.02, dec0 + 0.02))
    assert len(box.compute(progress_bar=False)) > 0
    pushed = lake.open("pt_src_c", columns=["cntr"], search_filter=lsdb.ConeSearch(ra0, dec0, 120.0))
    assert set(pushed.compute(progress_bar=False)["cntr"]) == set(cone["cntr"])


def test_six_x_catalog_without_filtering_by_hand(lake):
    full = lake.open("pt_src_6x2", columns=["cntr", "cat"]).compute(progress_bar=False)
    expected = set(full.loc[full["cat"] == "1", "cntr"])
    view = lake.six_x_catalog("point", columns=["cntr"]).compute(progress_bar=False)
    assert set(view["cntr"]) == expected and (view["cat"] == "1").all()
    derived = lake["pt_src_6x2_cat"]  # built by the 6x pipeline as its own collection
    assert set(derived.compute(progress_bar=False)["cntr"]) == expected
    assert lake.six_x_catalog("point").margin is not None
    with pytest.raises(ValueError, match="6x catalogues"):
        lake.six_x_catalog("pt_src_c")


def test_six_x_view_when_not_built(env, tmp_path):
    """Without the derived collection, ``lake["pt_src_6x2_cat"]`` is the filtered view."""
    (tmp_path / "pt_src_6x2").symlink_to(env.lake / "pt_src_6x2")
    lake = open_lake(str(tmp_path))
    assert lake.tables == ["pt_src_6x2"] and "pt_src_6x2_cat" in lake
    cat = lake["pt_src_6x2_cat"]
    assert cat.name == "pt_src_6x2_cat"
    assert (cat.compute(progress_bar=False)["cat"] == "1").all()


def test_parquet_table_is_dask(lake, env):
    links = lake["cf_link"]
    manifest = json.loads((env.lake / "manifest.json").read_text())
    assert len(links) == manifest["tables"]["cf_link"]["rows"]
    assert list(links.columns) == ["gcntr", "cntr", "ngrp"]
    table = lake.parquet_dataset("cf_link").to_table()
    assert table.num_rows == manifest["tables"]["cf_link"]["rows"]
    with pytest.raises(TypeError):
        lake.parquet_dataset("cf_info")


def test_reference_lookup(lake, env, tmp_path):
    assert lake.reference_url(str(env.reference())) == str(env.reference())
    assert lake.reference_url("gaia_dr3") == "https://data.lsdb.io/hats/gaia_dr3"
    (tmp_path / "reference").mkdir()
    (tmp_path / "reference" / "gaia_dr3").symlink_to(env.reference())
    local = open_lake(str(tmp_path))
    assert local.reference_url("gaia_dr3").endswith("reference/gaia_dr3")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gaia = local.open_reference("gaia_dr3", columns=["source_id"])
    assert {"pmra", "pmdec", "ref_epoch", "source_id"} <= set(gaia.columns)
    with pytest.raises(KeyError):
        lake.reference_url("sdss")

