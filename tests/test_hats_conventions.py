"""hats' conventions in every catalog of the lake: data_thumbnail.parquet, per-partition statistics,
catalog summaries and hats_cols_default, read back with hats and lsdb themselves."""

from __future__ import annotations

import hats
import lsdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hats.io import paths

from tmass_lake.convert.writer import PER_PARTITION_STATISTICS, default_columns, write_catalog_summaries

COLLECTIONS = ("pt_src_c", "pt_src_6x2_cat", "cf_lightcurves", "ext_src_c")
NO_SUMMARY = {"ext_src_c"}  # the mock's 6 sky pixels: hats 0.11.1's density map fails (README.md)


def catalogs(env, name: str) -> dict[str, object]:
    collection = hats.read_hats(env.lake / name)
    out = {"main": collection.main_catalog, "margin": hats.read_hats(collection.default_margin_catalog_dir)}
    for index in collection.all_indexes.values():
        out[index] = hats.read_hats(env.lake / name / index)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", COLLECTIONS)
def test_thumbnail_statistics_and_summaries(env, name):
    root = env.lake / name
    assert not (root / "README.md").exists()  # summaries are written on request (--catalog-summaries)
    write_catalog_summaries(str(root))
    if name not in NO_SUMMARY:
        assert (root / "README.md").read_text().lstrip().startswith("#") and (root / "index.html").exists()
    for kind, cat in catalogs(env, name).items():
        files = list((cat.catalog_base_dir / "dataset").rglob("*.parquet"))
        if not files:  # an empty margin (no partition has neighbours): no row to show
            assert kind == "margin" and cat.catalog_info.total_rows == 0
            continue
        thumb = pq.read_table(paths.get_data_thumbnail_pointer(cat.catalog_base_dir))
        assert thumb.num_rows == len(files), kind
        if kind in ("main", "margin"):
            assert (cat.catalog_base_dir / PER_PARTITION_STATISTICS).exists()
            stats = cat.per_partition_statistics()  # hats reads its cached file
            assert len(stats) == len(cat.get_healpix_pixels()), kind
        if kind != "main":
            assert (cat.catalog_base_dir / "README.md").exists(), kind


@pytest.mark.slow
@pytest.mark.parametrize("name", COLLECTIONS)
def test_default_columns_are_what_lsdb_opens(env, name):
    cat = lsdb.open_catalog(env.lake / name)
    default = cat.hc_structure.catalog_info.default_columns
    assert default and "ra" in default and "dec" in default
    assert list(cat.columns) == default
    everything = lsdb.open_catalog(env.lake / name, columns="all")
    assert len(everything.columns) > len(default)


def test_default_columns_rule():
    def f(name, ucd, t=None):
        return pa.field(name, t or pa.float32(), metadata={"ucd": ucd})
    schema = pa.schema([f("cntr", "meta.id;meta.main", pa.int64()), f("ra", "pos.eq.ra;meta.main"),
                        f("x", "phot.mag;em.IR.J"), f("j_m", "phot.mag;em.IR.J"), f("junk", "stat.fit.chi2"),
                        f("j_msig", "stat.error;phot.mag;em.IR.J"), f("k_m", "phot.mag;em.IR.K"),
                        f("jdate", "time.epoch"),
                        pa.field("lc", pa.struct([pa.field("t", pa.list_(pa.float64()))]))])
    assert default_columns(schema) == ["ra", "cntr", "jdate", "x", "j_msig", "k_m", "lc"] or \
        default_columns(schema) == ["cntr", "ra", "jdate", "x", "j_msig", "k_m", "lc"]
    with_ids = default_columns(schema, ("cntr", "junk"))  # the key and an indexed column come first
    assert with_ids[:2] == ["cntr", "junk"] and with_ids[2:] == ["ra", "jdate", "x", "j_msig", "k_m", "lc"]
