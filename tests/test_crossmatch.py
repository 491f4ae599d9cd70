"""Epoch-aware crossmatch against the mock Gaia DR3 / AllWISE, scored on the mock truth."""

from __future__ import annotations

import importlib
import json
import warnings

import astropy.units as u
import numpy as np
import pandas as pd
import pytest
from astropy.coordinates import SkyCoord
from astropy.time import Time

from tmass_lake.cli import main
from tmass_lake.cli.query import write_output
from tmass_lake.lake import (
    ALLWISE,
    GAIA_DR3,
    EpochCrossmatch,
    MarginWarning,
    ReferenceProfile,
    crossmatch,
    open_reference,
)
from tmass_lake.mock.scoring import score_crossmatch

cm = importlib.import_module("tmass_lake.lake.crossmatch")
pytestmark = pytest.mark.slow  # the shared mock lake
RADIUS = 1.5  # arcsec: ~3 sigma of the faintest 6x detections' astrometry
COLUMNS = ["cntr", "jdate"]


@pytest.fixture(scope="module")
def gaia(env):
    return open_reference(str(env.reference("gaia_dr3")))


@pytest.mark.parametrize("table", ["pt_src_6x2", "pt_src_c"])
def test_epoch_aware_beats_positional_on_truth(lake, env, gaia, table):
    with warnings.catch_warnings():
        warnings.simplefilter("error", MarginWarning)  # the fast movers are gathered: nothing to warn
        aware_cat = lake.crossmatch(table, gaia, radius_arcsec=RADIUS, columns=COLUMNS)
    aware = aware_cat.compute(progress_bar=False)
    plain = lake.crossmatch(table, gaia, radius_arcsec=RADIUS, columns=COLUMNS,
                            epoch_aware=False).compute(progress_bar=False)
    a = score_crossmatch(env, table, aware)
    p = score_crossmatch(env, table, plain)
    print(f"\n{table}: epoch-aware {a}\n{table}: positional  {p}")
    assert a.with_counterpart > 10_000 and a.duplicates == 0
    assert a.recall >= 0.995 and a.purity >= 0.995
    assert a.fast >= 20 and a.fast_recall >= 0.995  # stars moving > 200 mas/yr
    assert p.fast_recall < 0.5 and p.recall < a.recall  # positional matching loses them
    assert {"cntr_2mass", "jdate_2mass", "source_id_gaia_dr3", "pmra_gaia_dr3", "_dist_arcsec",
            "_dt_yr"} <= set(aware.columns)
    years = 2000.0 + (aware["jdate_2mass"].to_numpy(dtype=float) - 2451545.0) / 365.25
    assert np.allclose(aware["_dt_yr"].to_numpy(dtype=float), years - 2016.0)
    assert (aware["_dist_arcsec"].to_numpy(dtype=float) <= RADIUS).all()


def test_six_x_catalog_crossmatch(lake, env, gaia):
    """The 6x Catalog (cat == '1' rows) crossmatches like any table, without hand filtering."""
    result = crossmatch(lake.six_x_catalog("point", columns=COLUMNS), gaia,
                        radius_arcsec=RADIUS).compute(progress_bar=False)
    s = score_crossmatch(env, "pt_src_6x2", result)
    catalog = lake["pt_src_6x2_cat"].hc_structure.catalog_info.total_rows
    assert len(result) <= catalog and len(result) > 0.8 * catalog
    assert s.purity >= 0.995
    left = crossmatch(lake.six_x_catalog("point", columns=COLUMNS), gaia, radius_arcsec=RADIUS, how="left",
                      margin_policy="ignore").compute(progress_bar=False)
    assert len(left) == catalog and left["source_id_gaia_dr3"].notna().sum() == len(result)


def test_allwise_profile(lake, env):
    wise = open_reference(str(env.reference("allwise")))
    assert cm.detect_profile(wise) is ALLWISE
    result = lake.crossmatch("pt_src_c", wise, radius_arcsec=RADIUS, columns=COLUMNS,
                             reference="allwise").compute(progress_bar=False)
    s = score_crossmatch(env, "pt_src_c", result, got="cntr_allwise", reference="allwise")
    print(f"\npt_src_c x allwise: {s}")
    assert s.recall >= 0.99 and s.purity >= 0.99
    assert np.allclose(result["_dt_yr"].to_numpy(dtype=float) + ALLWISE.epoch,
                       2000.0 + (result["jdate_2mass"].to_numpy(dtype=float) - 2451545.0) / 365.25)


def test_margin_check(lake, gaia):
    left = lake.open("pt_src_c", columns=COLUMNS)
    algo = EpochCrossmatch(RADIUS, margin_policy="raise")
    need, max_dt, max_pm = algo.required_margin_arcsec(left, gaia)
    assert 18.0 < max_dt < 19.0 and max_pm > 1000.0  # pmra/pmdec extremes from the statistics
    assert need == pytest.approx(RADIUS + max_pm * max_dt / 1000.0)
    with pytest.raises(ValueError, match="right margin"):  # without the fast-mover table
        crossmatch(left, gaia, radius_arcsec=RADIUS, margin_policy="raise", fast_movers=False)
    with pytest.warns(MarginWarning, match="may be missed near partition boundaries"):
        crossmatch(left, gaia, radius_arcsec=RADIUS, fast_movers=False)
    with pytest.raises(ValueError, match="exceeds the right margin"):
        crossmatch(left, gaia, radius_arcsec=12.0)
    algo = EpochCrossmatch(RADIUS, margin_policy="raise")  # with it: the stars beyond the margin, gathered
    algo.check_margin(left, gaia)
    covered = (10.0 - RADIUS) / max_dt * 1000.0
    fast = algo.fast_movers
    pm = np.hypot(fast["pmra"].to_numpy(dtype=float), fast["pmdec"].to_numpy(dtype=float))
    assert len(pm) > 0 and (pm > covered).all()
    assert set(fast.columns) == set(gaia.columns)
    # Slow enough for the 10" margin: no warning, nothing gathered.
    with warnings.catch_warnings():
        warnings.simplefilter("error", MarginWarning)
        crossmatch(left, gaia, radius_arcsec=RADIUS, max_pm_mas_yr=300.0)
    with pytest.raises(ValueError, match="lacks columns"):
        crossmatch(left, gaia[["source_id", "ra", "dec"]], radius_arcsec=RADIUS)


def test_profile_detection(gaia):
    assert cm.detect_profile(gaia) is GAIA_DR3
    assert cm.detect_profile(gaia, "allwise") is ALLWISE
    custom = ReferenceProfile("mine", epoch=2015.5, pmra="pmra", pmdec="pmdec")
    assert custom.columns == ["ra", "dec", "pmra", "pmdec"]
    df = pd.DataFrame({"ra": [1.0], "dec": [2.0], "x": [3]})
    import lsdb

    with pytest.raises(ValueError, match="cannot tell"):
        cm.detect_profile(lsdb.from_dataframe(df, catalog_name="other"))


def test_epoch_conversions():
    assert cm.to_jyear(2451545.0, "jd") == pytest.approx(2000.0)
    assert cm.to_jyear(55400.0, "mjd") == pytest.approx(Time(55400.0, format="mjd").jyear)
    assert ALLWISE.epoch == pytest.approx(2010.5558, abs=1e-4)
    assert cm.to_jyear(2016.0, "jyear") == 2016.0
    with pytest.raises(ValueError):
        cm.to_jyear(1.0, "besselian")


def test_propagation_agrees_with_astropy():
    """Linear space motion (what Gaia epoch propagation does without radial velocity)."""
    ra, dec, pmra, pmdec = np.array([10.0, 250.0]), np.array([75.0, -30.0]), np.array([4000.0, -800.0]), \
        np.array([-3000.0, 1200.0])
    dt = -17.3
    moved = cm._normalise(cm._unit_vectors(ra, dec) + cm._motion_vectors(ra, dec, pmra, pmdec) * dt)
    c = SkyCoord(ra=ra * u.deg, dec=dec * u.deg, pm_ra_cosdec=pmra * u.mas / u.yr,
                 pm_dec=pmdec * u.mas / u.yr, distance=1 * u.kpc, radial_velocity=0 * u.km / u.s,
                 obstime=Time(2016.0, format="jyear"))
    ref = c.apply_space_motion(new_obstime=Time(2016.0 + dt, format="jyear"))
    exp = cm._unit_vectors(ref.ra.deg, ref.dec.deg)
    sep = np.degrees(np.arccos(np.clip(np.einsum("ij,ij->i", moved, exp), -1, 1))) * 3.6e6
    assert (sep < 1.0).all()  # mas


def test_match_moving_kernel():
    """A 5"/yr star seen at three epochs, a slow neighbour, and n_neighbors ranking."""
    t_ref = 2016.0
    ra = np.array([150.0, 150.0 + 3.0 / 3600])
    dec = np.array([2.0, 2.0])
    pmra, pmdec = np.array([0.0, 0.0]), np.array([5000.0, 0.0])
    epochs = np.array([1998.0, 1999.5, 2001.0])
    det_dec = 2.0 + 5.0 * (epochs - t_ref) / 3600.0
    l_xyz = cm._unit_vectors(np.full(3, 150.0), det_dec)
    li, ri, sep, dt = cm.match_moving(l_xyz, epochs, ra, dec, pmra, pmdec, np.full(2, t_ref), 1.0)
    assert li.tolist() == [0, 1, 2] and ri.tolist() == [0, 0, 0]
    assert np.allclose(sep, 0.0, atol=1e-3) and np.allclose(dt, epochs - t_ref)
    # A detection of the slow star, and a ranked second neighbour within a wide radius.
    l2 = cm._unit_vectors(np.array([150.0 + 3.0 / 3600, 150.0 + 1.5 / 3600]), np.array([2.0, 2.0]))
    li, ri, sep, _ = cm.match_moving(l2, np.array([1999.0, 2016.0]), ra, dec, pmra, pmdec,
                                     np.full(2, t_ref), 2.0, n_neighbors=2)
    assert li.tolist() == [0, 1, 1] and ri[0] == 1 and sep[1] <= sep[2]
    empty = cm.match_moving(l2[:0], np.zeros(0), ra, dec, pmra, pmdec, np.full(2, t_ref), 1.0)
    assert all(len(x) == 0 for x in empty)


def test_cli_crossmatch(lake, env, tmp_path):
    out = tmp_path / "x.parquet"
    code = main(["crossmatch", "--lake", str(env.lake), "--table", "pt_src_c", "--with",
                 str(env.reference("gaia_dr3")), "--radius", str(RADIUS), "--output", str(out),
                 "--columns", "cntr", "jdate", "--workers", "1", "--max-pm", "300"])
    assert code == 0
    got = pd.read_parquet(out)
    s = score_crossmatch(env, "pt_src_c", got)
    assert s.recall >= 0.995 and s.duplicates == 0
    # The HATS writer the command uses for directory outputs (here without a cluster).
    hats_out = tmp_path / "x_hats"
    plain = lake.crossmatch("pt_src_c", str(env.reference("gaia_dr3")), radius_arcsec=RADIUS,
                            columns=["cntr"], epoch_aware=False)
    write_output(plain, str(hats_out), "hats", {}, "pt_src_c_x_gaia_dr3")
    import lsdb

    rows = len(lsdb.open_catalog(hats_out).compute(progress_bar=False))
    assert 0 < rows < len(got)  # positional loses the high-proper-motion stars
    assert json.loads((env.lake / "manifest.json").read_text())["tables"]["pt_src_c"]["rows"] >= len(got)


def test_fast_movers_found_across_partition_edges(tmp_path):
    """Stars of up to 5"/yr placed across the partition boundaries of a reference with a 10" margin
    (their 2MASS and 2016 positions in different partitions, most of them far beyond the margin)
    are all found; without the fast-mover table the partition-wise match misses them."""
    import lsdb
    from hats.pixel_math.healpix_shim import radec2pix

    rng = np.random.default_rng(11)
    order = 6  # every reference partition at order 6 (~0.9 deg): the boundaries are known in advance

    def on_sky(n: int, half: float) -> tuple[np.ndarray, np.ndarray]:
        return 150.0 + rng.uniform(-half, half, n), 2.0 + rng.uniform(-half, half, n)

    def at_epoch(ra, dec, pmra, pmdec, years):
        motion = cm._motion_vectors(ra, dec, pmra, pmdec) * years[:, None]
        xyz = cm._normalise(cm._unit_vectors(ra, dec) + motion)
        return np.degrees(np.arctan2(xyz[:, 1], xyz[:, 0])) % 360.0, np.degrees(np.arcsin(xyz[:, 2]))

    # Candidate fast stars; keep those whose motion since 2MASS crosses an order-7 boundary.
    ra_c, dec_c = on_sky(20_000, 1.8)
    speed_c, angle = rng.uniform(100, 5000, 20_000), rng.uniform(0, 2 * np.pi, 20_000)
    pmra_c, pmdec_c = speed_c * np.sin(angle), speed_c * np.cos(angle)
    jd_c = rng.uniform(2450700.5, 2451900.5, 20_000)
    years_c = cm.to_jyear(jd_c, "jd") - 2016.0
    ra2_c, dec2_c = at_epoch(ra_c, dec_c, pmra_c, pmdec_c, years_c)
    crossing = radec2pix(order, ra_c, dec_c) != radec2pix(order, ra2_c, dec2_c)
    pick = rng.permutation(np.flatnonzero(crossing))[:200]
    n_bg = 4_000
    ra_bg, dec_bg = on_sky(n_bg, 2.0)
    ra = np.r_[ra_bg, ra_c[pick]]
    dec = np.r_[dec_bg, dec_c[pick]]
    pmra = np.r_[rng.normal(0, 5, n_bg), pmra_c[pick]]
    pmdec = np.r_[rng.normal(0, 5, n_bg), pmdec_c[pick]]
    ref = pd.DataFrame({"source_id": np.arange(len(ra), dtype=np.int64), "ra": ra, "dec": dec, "pmra": pmra,
                        "pmdec": pmdec, "ref_epoch": 2016.0})
    lsdb.from_dataframe(ref, catalog_name="gaia_dr3", lowest_order=order, highest_order=order,
                        margin_threshold=10.0).write_catalog(tmp_path / "gaia", progress_bar=False)
    gaia = open_reference(str(tmp_path / "gaia"), reference="gaia_dr3")
    assert gaia.margin.hc_structure.catalog_info.margin_threshold == 10.0 and gaia.npartitions > 15
    assert {p.order for p in gaia.get_healpix_pixels()} == {order}

    # One 2MASS detection of every fast star, where it was at its epoch.
    fast = np.arange(n_bg, len(ra))
    left = lsdb.from_dataframe(pd.DataFrame({"cntr": fast, "ra": ra2_c[pick], "dec": dec2_c[pick],
                                             "jdate": jd_c[pick]}),
                               catalog_name="pt_src_test", partition_rows=50, margin_threshold=None)
    shift = np.hypot(pmra_c[pick], pmdec_c[pick]) * np.abs(years_c[pick]) / 1000.0  # arcsec
    assert len(pick) == 200 and (shift > 11.0).sum() >= 150  # mostly far beyond the 10" margin

    with warnings.catch_warnings():
        warnings.simplefilter("error", MarginWarning)  # nothing left for the warning to say
        got = crossmatch(left, gaia, radius_arcsec=1.0).compute(progress_bar=False)
    found = dict(zip(got["cntr_2mass"].to_numpy(), got["source_id_gaia_dr3"].to_numpy(), strict=True))
    assert all(found.get(i) == i for i in fast), "every fast star is found, at any speed"
    assert len(got) == len(fast)

    partitioned = crossmatch(left, gaia, radius_arcsec=1.0, fast_movers=False,
                             margin_policy="ignore").compute(progress_bar=False)
    missed = set(fast) - set(partitioned["cntr_2mass"].to_numpy())
    assert len(missed) >= 40  # what the table is for: the margin alone loses many of them...
    assert missed <= set(fast[shift > 10.0])  # ...all moved beyond it
