"""Nested light curves: every link exactly once, statistics scored on the mock truth, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import lsdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hats.io.validation import is_valid_collection

from tmass_lake.cli import main
from tmass_lake.cli.query import read_source
from tmass_lake.lake import Thresholds, light_curve_stats, open_lake
from tmass_lake.lake.lightcurves import product_tables
from tmass_lake.mock.scoring import light_curve_truth, score_light_curves

pytestmark = pytest.mark.slow  # the shared mock lake
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def cal(lake) -> pd.DataFrame:
    return lake.light_curves("calibration").compute(progress_bar=False)


def link_pairs(lc: pd.DataFrame, key: str = "cntr") -> pd.DataFrame:
    lengths = np.asarray(lc["detections"].array.list_lengths)
    flat = lc["detections"].nest.to_flat()
    return pd.DataFrame({"gcntr": np.repeat(lc["gcntr"].to_numpy(dtype=np.int64), lengths),
                         "cntr": flat[key].to_numpy(dtype=np.int64)})


def same_pairs(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    a = a.sort_values(["gcntr", "cntr"]).to_numpy()
    b = b.sort_values(["gcntr", "cntr"]).to_numpy()
    return a.shape == b.shape and bool((a == b).all())


def test_product_tables():
    t = product_tables("cal")
    assert (t.info, t.detections, t.link, t.key) == ("cf_info", "pt_src_c", "cf_link", "cntr")
    assert product_tables("6x").info == "sixxf_info"
    assert product_tables("survey").detections == "pt_src_rej"
    assert product_tables("calibration", "extended").link == "ecf_link"
    with pytest.raises(KeyError):
        product_tables("all-sky")


def test_every_link_exactly_once(cal, lake):
    pairs = link_pairs(cal)
    links = lake["cf_link"].compute()
    assert not pairs.duplicated().any()
    assert same_pairs(pairs, links[["gcntr", "cntr"]])
    assert cal["gcntr"].is_unique and len(cal) == lake["cf_info"].hc_structure.catalog_info.total_rows
    assert (cal["n_epochs"] == cal["napp"]).all()
    lengths = np.asarray(cal["detections"].array.list_lengths)
    assert lengths.max() >= 500  # calibration fields: hundreds to thousands of epochs per source
    jd = cal["detections"].nest.to_flat()["jdate"].to_numpy(dtype=float)
    start = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    inner = np.ones(len(jd), bool)
    inner[start] = False
    assert (np.diff(jd, prepend=jd[0])[inner] >= 0).all()  # each light curve sorted by epoch
    assert {"cntr", "jdate", "ra", "dec", "j_m", "j_msigcom", "h_m", "k_m", "ph_qual", "rd_flg",
            "cc_flg"} <= set(cal["detections"].nest.columns)


def test_six_x_from_detections_gcntr(lake):
    """Membership from the detections' gcntr gives the same pairs as the link table."""
    lc = lake.light_curves("6x", links="detections", stats=False).compute(progress_bar=False)
    pairs = link_pairs(lc)
    assert not pairs.duplicated().any()
    assert same_pairs(pairs, lake["sixxf_link"].compute()[["gcntr", "cntr"]])
    assert "n_epochs" not in lc.columns
    with pytest.raises(KeyError, match="link table"):
        open_lake(str(Path(lake.url))).light_curves("survey", links="table")


def test_extended_light_curves(lake):
    """Extended detections (ext_src_c, keyed by ext_key) under ecf_info, through ecf_link."""
    lc = lake.light_curves("calibration", kind="extended").compute(progress_bar=False)
    pairs = link_pairs(lc, key="ext_key")
    links = lake["ecf_link"].compute()  # link tables call the member key (here ext_key) cntr
    assert same_pairs(pairs, links[["gcntr", "cntr"]])
    assert {"ext_key", "j_m_k20fe", "k_msig_k20fe"} <= set(lc["detections"].nest.columns)
    assert lc["k_mean"].notna().mean() > 0.9 and (lc["n_epochs"] == lc["napp"]).all()


def multiply_linked(links: pd.DataFrame) -> pd.DataFrame:
    """The links of detections linked to more than one group."""
    return links[links["cntr"].duplicated(keep=False)]


def test_multiply_linked_detections_once_per_group(cal, lake):
    """IRSA's calibration links outnumber its detections: a detection under two groups appears
    under both, once each, with the same row; none is dropped or duplicated."""
    links = lake["cf_link"].compute()[["gcntr", "cntr"]]
    det_rows = lake["pt_src_c"].hc_structure.catalog_info.total_rows
    assert len(links) > det_rows
    multi = multiply_linked(links)
    assert multi["cntr"].nunique() > 100
    pairs = link_pairs(cal)
    got = pairs[pairs["cntr"].isin(multi["cntr"])]
    assert same_pairs(got, multi)  # every link of them, none twice
    flat = cal["detections"].nest.to_flat()
    rows = flat[flat["cntr"].isin(multi["cntr"])]
    same = rows.groupby("cntr")[["jdate", "ra", "dec", "k_m"]].nunique(dropna=False)
    assert (same == 1).all().all()  # the one detection row, copied under each of its groups


def test_detections_gcntr_is_the_lowest_group(lake):
    """With links="detections" each detection is under the one group its own gcntr names (the
    lowest of its groups; second groups come out empty), exactly as many as the gcntr index
    counts; with the link table it is under all of them."""
    lc = lake.light_curves("calibration", kind="extended", links="detections").compute(progress_bar=False)
    pairs = link_pairs(lc, key="ext_key")
    det = lake["ext_src_c"].compute()[["ext_key", "gcntr"]].dropna()
    own = pd.DataFrame({"gcntr": det["gcntr"].to_numpy(dtype=np.int64),
                        "cntr": det["ext_key"].to_numpy(dtype=np.int64)})
    assert same_pairs(pairs, own) and not pairs["cntr"].duplicated().any()
    links = lake["ecf_link"].compute()[["gcntr", "cntr"]]
    assert len(multiply_linked(links)) > 0
    lowest = links.groupby("cntr")["gcntr"].min()
    assert (lowest.reindex(own["cntr"]).to_numpy() == own["gcntr"].to_numpy()).all()
    second = set(links["gcntr"]) - set(own["gcntr"])
    assert second and (lc.set_index("gcntr").loc[sorted(second), "n_epochs"] == 0).all()


def test_accounting_and_indexes_with_multiply_linked_detections(env, lake):
    """Link tables (Parquet) hold every link, detection collections every row, the gcntr index
    the rows in a group and the cntr index every row; verify agrees."""
    mock = json.loads((env.mock / "manifest.json").read_text())
    built = json.loads((env.lake / "manifest.json").read_text())["tables"]
    for name in ("pt_src_c", "cf_link", "cf_info", "ext_src_c", "ecf_link", "ecf_info", "pt_src_6x2",
                 "sixxf_link", "sixxf_info"):
        assert built[name]["rows"] == mock["tables"][name]["rows"]
        assert built[name]["lines_read"] == built[name]["rows"] and built[name]["rows_quarantined"] == 0
    for family, (det, key) in (("cal", ("pt_src_c", "cntr")), ("cal", ("ext_src_c", "ext_key")),
                               ("6x", ("pt_src_6x2", "cntr"))):
        product = mock["proportions"][family]["pt" if det.startswith("pt") else "ext"]["mock"]
        idx = built[det]["indexes"]
        assert idx[key]["rows"] == built[det]["rows"] == product["detections"]
        assert idx["gcntr"]["rows"] == product["detections"] - product["unlinked"]
    assert mock["proportions"]["cal"]["pt"]["mock"]["multiply_linked"] > 0
    code = main(["verify", str(env.lake)])
    assert code == 0


def test_statistics_against_truth(cal, env):
    truth = light_curve_truth(env, "pt_src_c", cal)
    s = score_light_curves(truth)
    print(f"\ncalibration light curves: {s}")
    assert s.variables >= 8 and s.recovered >= 0.90
    assert s.constants >= 200 and s.false_positive <= 0.01
    assert s.movers >= 1 and s.movers_flagged == 1.0 and s.slow_flagged == 0
    movers = truth[(truth["kind"] == "star") & (truth["true_pm"] > 200)]
    for c in ("pmra", "pmdec"):
        err = (movers[c] - movers[f"true_{c}"]) / movers[f"{c}_err"]
        assert (err.abs() < 5).all()


def test_cone_restricted_light_curves(lake, cal):
    row = cal.sort_values("napp").iloc[-1]
    cone = lsdb.ConeSearch(float(row["ra"]), float(row["dec"]), 60.0)
    sub = lake.light_curves("calibration", search_filter=cone).compute(progress_bar=False)
    assert 0 < len(sub) < len(cal) and int(row["gcntr"]) in set(sub["gcntr"])
    assert (sub["n_epochs"] == sub["napp"]).all()


def test_repair_restores_groups_cut_by_partitions(env, lake, tmp_path):
    """With small partitions and the join run without margins, groups on pixel edges lose members
    in the partition-wise join; the planning pass finds them and the result is exactly the links."""
    root = tmp_path / "lake"
    root.mkdir()
    subprocess.run([str(BIN / "tmass-lake"), "build", "--table", "pt_src_c", "--input",
                    str(env.mock / "irsa" / "pt_src_c"), "--output", str(root / "pt_src_c"),
                    "--pixel-threshold", "1000", "--workers", "2", "--quiet"],
                   check=True, stdout=subprocess.DEVNULL)
    for name in ("cf_info", "cf_link"):
        (root / name).symlink_to(env.lake / name)
    small = open_lake(str(root))
    assert small["pt_src_c"].npartitions > 100
    quick = small.light_curves("calibration", complete=False, margin=False).compute(progress_bar=False)
    assert (quick["n_epochs"] < quick["napp"]).sum() > 0
    fixed = small.light_curves("calibration", margin=False).compute(progress_bar=False)
    assert same_pairs(link_pairs(fixed), lake["cf_link"].compute()[["gcntr", "cntr"]])
    assert (fixed["n_epochs"] == fixed["napp"]).all()


def test_stats_thousands_of_epochs():
    """Vectorised statistics of 300 sources x 3,000 epochs: means, chi-square, flags and motions right."""
    rng = np.random.default_rng(5)
    n_src, n_ep = 300, 3000
    g = np.repeat(np.arange(n_src), n_ep)
    jd = 2450600.5 + rng.uniform(0, 1300, g.size)
    sig = np.full(g.size, 0.05)
    amp = np.where(np.arange(n_src) < 30, 0.06, 0.0)  # 30 variables, 6 cmmag peak-to-peak
    period = rng.uniform(0.5, 50.0, n_src)
    mag = 12.0 + 0.5 * amp[g] * np.sin(2 * np.pi * jd / period[g]) + rng.normal(0, 1, g.size) * sig
    pm = np.where(np.arange(n_src) % 50 == 7, 400.0, 5.0)  # mas/yr in RA
    years = (jd - 2451545.0) / 365.25
    dec0 = np.full(n_src, 30.0)
    ra = 100.0 + (pm[g] * years / 3.6e6 + rng.normal(0, 80, g.size) / 3.6e6) / np.cos(np.radians(30.0))
    dec = 30.0 + rng.normal(0, 80, g.size) / 3.6e6
    frame = pd.DataFrame({"jdate": jd, "ra": ra, "dec": dec, "err_maj": 0.08, "err_min": 0.08, "err_ang": 0,
                          **{f"{b}_m": mag for b in "jhk"}, **{f"{b}_msigcom": sig for b in "jhk"}})
    st = light_curve_stats(g, n_src, frame, ra0=np.full(n_src, 100.0), dec0=dec0)
    assert (st["n_epochs"] == n_ep).all()
    assert st["is_variable"].to_numpy()[:30].all() and not st["is_variable"].to_numpy()[30:].any()
    assert st["k_chi2dof"].to_numpy()[30:].mean() == pytest.approx(1.0, abs=0.02)
    assert np.allclose(st["j_mean"].to_numpy()[30:], 12.0, atol=0.005)
    movers = pm > 100
    assert (st["is_moving"].to_numpy() == movers).all()
    assert np.allclose(st["pmra"].to_numpy()[movers], 400.0, atol=5.0)
    assert np.allclose(st["pmdec"].to_numpy(), 0.0, atol=5.0)
    assert np.allclose(st["pos_rms_arcsec"].to_numpy()[~movers], 0.08 * np.sqrt(2), rtol=0.1)
    strict = light_curve_stats(g, n_src, frame, thresholds=Thresholds(var_log10_p=-200.0))
    assert not strict["is_variable"].any()


def test_cli_lightcurves_with_plot(env, cal, tmp_path):
    out = tmp_path / "lc"
    gcntr = int(cal.sort_values("napp").iloc[-1]["gcntr"])
    assert main(["lightcurves", "--lake", str(env.lake), "--product", "calibration", "--output", str(out),
                 "--plot", str(gcntr), "--workers", "1"]) == 0
    png = tmp_path / f"lc_lightcurve_{gcntr}.png"
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    back = pd.read_parquet(out, columns=["gcntr", "n_epochs", "is_variable"])
    assert len(back) == len(cal) and back["gcntr"].is_unique
    row = read_source(str(out), gcntr)
    assert len(row["detections"]) == int(cal.set_index("gcntr").loc[gcntr, "napp"])


COLLECTIONS = {("calibration", "point"): "cf_lightcurves", ("calibration", "extended"): "ecf_lightcurves",
               ("6x", "point"): "sixxf_lightcurves"}


@pytest.mark.parametrize(("product", "kind"), list(COLLECTIONS))
def test_stored_collection_equals_the_join(env, lake, product, kind):
    """The collection the lake build stores: valid HATS, one row per merged source, every link exactly
    once, equal to the on-the-fly join, struct-of-lists on disk, with a margin and a gcntr index."""
    name = COLLECTIONS[(product, kind)]
    tables = product_tables(product, kind)
    assert tables.collection == name and name in lake.tables
    root = env.lake / name
    assert is_valid_collection(str(root), strict=True)
    props = (root / "collection.properties").read_text()
    assert f"{name}_gcntr_index" in props and "default_index=gcntr" in props
    stored = lake.light_curves(product, kind=kind)
    assert stored.name == name  # opened, not joined
    on_the_fly = lake.light_curves(product, kind=kind, stored=False)
    assert on_the_fly.name == tables.info
    a = stored.compute(progress_bar=False).sort_values("gcntr")
    b = on_the_fly.compute(progress_bar=False).sort_values("gcntr")
    assert list(a.columns) == list(b.columns) and a.dtypes.equals(b.dtypes)
    assert (a.index.to_numpy() == b.index.to_numpy()).all()
    pd.testing.assert_frame_equal(pd.DataFrame(a.drop(columns="detections")).reset_index(drop=True),
                                  pd.DataFrame(b.drop(columns="detections")).reset_index(drop=True))
    pd.testing.assert_frame_equal(a["detections"].nest.to_flat().reset_index(drop=True),
                                  b["detections"].nest.to_flat().reset_index(drop=True))
    key = tables.key
    links = lake[tables.link].compute()[["gcntr", "cntr"]]
    assert not link_pairs(a, key).duplicated().any() and same_pairs(link_pairs(a, key), links)
    assert len(a) == lake[tables.info].hc_structure.catalog_info.total_rows
    schema = pq.read_schema(root / name / "dataset" / "_common_metadata")
    nested = schema.field("detections").type
    assert pa.types.is_struct(nested) and all(pa.types.is_list(f.type) for f in nested)
    assert schema.field("detections").type.field("jdate").metadata[b"unit"] == b"day"
    # The margin holds the information margin's sources, with their light curves.
    info_margin = lake.open(tables.info).margin
    if info_margin is not None:
        margin = lake.open(name).margin.compute(progress_bar=False)
        assert set(margin["gcntr"]) == set(info_margin.compute(progress_bar=False)["gcntr"])
        assert (margin["n_epochs"].to_numpy() == np.asarray(margin["detections"].array.list_lengths)).all()
    row = a.iloc[len(a) // 2]
    found = lake[name].id_search(values={"gcntr": int(row["gcntr"])}).compute(progress_bar=False)
    assert len(found) == 1 and len(found.iloc[0]["detections"]) == row["n_epochs"]


def test_stored_collection_serves_what_it_holds(lake):
    """Subsets of its columns come from the collection; anything else is joined on the fly."""
    few = lake.light_curves("calibration", detection_columns=["jdate", "k_m"], stats=False)
    assert few.name == "cf_lightcurves"
    part = few.partitions[0].compute(progress_bar=False)
    assert list(part.columns) == ["gcntr", "ra", "dec", "napp", "detections"]
    assert list(part["detections"].nest.columns) == ["cntr", "jdate", "k_m"]
    renamed = lake.light_curves("calibration", nested_name="epochs", stored=True)
    assert "epochs" in renamed.columns and "detections" not in renamed.columns
    assert lake.light_curves("calibration", source_columns=["j_m"]).name == "cf_info"  # not stored
    assert lake.light_curves("calibration", thresholds=Thresholds(var_log10_p=-8.0)).name == "cf_info"
    assert lake.light_curves("calibration", links="detections").name == "cf_info"
    with pytest.raises(KeyError, match="cannot be used"):
        lake.light_curves("calibration", source_columns=["j_m"], stored=True)
