"""The deterministic mock Extended Mission: format, determinism, consistency, realism."""

from __future__ import annotations

import csv
import datetime
import gzip
import hashlib
import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import astropy.units as u
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.coordinates import GeocentricMeanEcliptic, SkyCoord

from tmass_lake.mock import format_table, generate
from tmass_lake.mock.bulkfmt import chunk_suffix
from tmass_lake.mock.families import Proportion
from tmass_lake.mock.geometry import ecliptic_latitude
from tmass_lake.mock.tables import membership
from tmass_lake.schema import list_tables, load_schema

DATA = Path(__file__).parent / "data"
SAMPLE = DATA / "psc_aaa_gz_line1.psv"
SCALE = 0.02
ALL = [t for t in list_tables() if load_schema(t).product != "all-sky"]


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mock")
    generate(str(out), scale=SCALE, seed=7, workers=2, progress=False)
    return out


def read_rows(out: Path, table: str) -> list[list[str]]:
    rows = []
    for f in sorted((out / "irsa" / table).glob(f"{table}_*.gz")):
        with gzip.open(f, "rt") as fh:
            rows += [line.rstrip("\n").split("|") for line in fh]
    return rows


def columns(out: Path, table: str) -> dict[str, list[str]]:
    names = load_schema(table).names
    rows = read_rows(out, table)
    return {n: [r[i] for r in rows] for i, n in enumerate(names)}


def num(v: list[str]) -> np.ndarray:
    return np.array([np.nan if x == "\\N" else float(x) for x in v])


def digest(out: Path) -> dict[str, str]:
    files = sorted(p for p in out.rglob("*") if p.is_file()
                   and (p.parts[-3] == "irsa" or p.parent.name == "truth"))
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


# --------------------------------------------------------------------------------------------


def test_format_table_reproduces_real_bulk_line():
    schema = load_schema("fp_psc")
    line = SAMPLE.read_text().rstrip("\n")
    cols = {}
    for c, v in zip(schema.columns, line.split("|"), strict=True):
        t = c.arrow_type
        if v == "\\N":
            cols[c.name] = pa.array([None], t)
        elif pa.types.is_date32(t):
            cols[c.name] = pa.array([datetime.date.fromisoformat(v)], t)
        elif pa.types.is_string(t):
            cols[c.name] = pa.array([v], t)
        else:
            cols[c.name] = pa.array([int(v) if pa.types.is_integer(t) else float(v)], t)
    assert format_table(pa.table(cols), schema).decode() == line + "\n"


def test_format_table_styles():
    schema = load_schema("pt_src_rej")
    t = pa.table({"ra": pa.array([0.5, 359.9999996, -0.0000004]),
                  "j_m": pa.array([12.0, None, -1.2345], pa.float32()),
                  "date": pa.array([0, 11222, None], pa.int32()).cast(pa.date32())})
    lines = format_table(t, schema).decode().splitlines()
    fields = [ln.split("|") for ln in lines]
    names = schema.names
    assert all(len(f) == len(names) for f in fields)
    ra, jm, date = (names.index(c) for c in ("ra", "j_m", "date"))
    assert [f[ra] for f in fields] == ["0.5", "360", "0"]
    assert [f[jm] for f in fields] == ["12", "\\N", "-1.235"]
    assert [f[date] for f in fields] == ["1970-01-01", "2000-09-22", "\\N"]
    fixed = format_table(t, schema, trim_zeros=False).decode().splitlines()[0].split("|")
    assert fixed[ra] == "0.500000" and fixed[jm] == "12.000"
    assert chunk_suffix(0) == "aaa" and chunk_suffix(27) == "abb"


def test_determinism(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    kw = {"scale": 0.01, "progress": False, "reference": False, "rows_per_file": 4000}
    ma = generate(str(a), seed=3, workers=1, **kw)
    generate(str(b), seed=3, workers=2, **kw)
    generate(str(c), seed=4, workers=1, tables=["pt_src_c", "pt_src_rej"], **kw)
    da, db = digest(a), digest(b)
    assert da == db and len(da) > 40
    assert (a / "manifest.json").read_bytes() == (b / "manifest.json").read_bytes()
    # bounded files: the point tables are split into several files of <= rows_per_file rows
    assert len(ma["tables"]["pt_src_rej"]["files"]) > 1
    assert all(f["rows"] <= 4000 for t in ma["tables"].values() for f in t["files"])
    dc = digest(c)
    key = "irsa/pt_src_c/pt_src_c_aaa.gz"
    assert key in dc and dc[key] != da[key]
    assert not (c / "irsa" / "pt_src_6x2").exists()
    with gzip.open(a / key) as f:
        assert f.read(1)  # valid gzip
    assert (a / key).read_bytes()[4:8] == b"\0\0\0\0"  # gzip mtime 0


def test_every_table_and_field_count(lake):
    manifest = json.loads((lake / "manifest.json").read_text())
    assert set(manifest["tables"]) == set(ALL)
    for t in ALL:
        rows = read_rows(lake, t)
        n = len(load_schema(t).columns)
        assert all(len(r) == n for r in rows), t
        assert len(rows) == manifest["tables"][t]["rows"], t
        assert sum(f["rows"] for f in manifest["tables"][t]["files"]) == len(rows)
        assert rows, f"{t} is empty"
    assert 0.5 * SCALE * 1e6 < sum(manifest["tables"][t]["rows"] for t in
                                   ("pt_src_rej", "pt_src_6x2", "pt_src_c", "pt_src_sc")) < \
        2 * SCALE * 1e6


def test_nulls_and_number_formats(lake):
    for t in ALL:
        schema = load_schema(t)
        rows = read_rows(lake, t)
        for i, c in enumerate(schema.columns):
            vals = {r[i] for r in rows}
            if not c.nullable:
                assert "\\N" not in vals, f"{t}.{c.name}"
            vals.discard("\\N")
            at = c.arrow_type
            if pa.types.is_floating(at) and c.scale is not None:
                frac = rf"(\.\d{{0,{c.scale - 1}}}[1-9])?" if c.scale else ""
                pat = re.compile(rf"^-?\d+{frac}$")
            elif pa.types.is_integer(at):
                pad = re.match(r"^%?0(\d+)", c.type)
                pat = re.compile(rf"^\d{{{pad.group(1)}}}$") if pad else re.compile(r"^-?\d+$")
            elif pa.types.is_date32(at):
                pat = re.compile(r"^\d{4}-\d{2}-\d{2}$")
            else:
                w = re.search(r"(\d+)", c.type)
                assert all(len(v) <= int(w.group(1)) for v in vals), f"{t}.{c.name}"
                continue
            bad = [v for v in vals if not pat.match(v)]
            assert not bad, f"{t}.{c.name} {c.type}: {bad[:3]}"


def _families():
    return [(load_schema(t).links["detections"], t) for t in ALL
            if load_schema(t).kind == "cross_reference"]


@pytest.mark.parametrize("det,link", _families())
def test_link_and_merged_tables(lake, det, link):
    """Links: (gcntr, key) pairs, each once; a linked row carries its lowest gcntr, an unlinked row
    a null one; a group's gcntr is its first member; napp and means count every link."""
    lschema = load_schema(link)
    key = lschema.links["detection_key"]
    d = columns(lake, det)
    ln = columns(lake, link)
    info = columns(lake, lschema.links["merged"])
    keys = [int(x) for x in d[key]]
    assert len(set(keys)) == len(keys), "keys unique per table"
    member = next(c for c in lschema.names if c != "gcntr")
    pairs = [(int(g), int(k)) for g, k in zip(ln["gcntr"], ln[member], strict=True)]
    assert len(set(pairs)) == len(pairs) and pairs == sorted(pairs), "each link once, sorted"
    groups_of = defaultdict(list)
    members = defaultdict(list)
    for g, k in pairs:
        groups_of[k].append(g)
        members[g].append(k)
    assert set(groups_of) <= set(keys), "every link names a detection"
    for k, g in zip(keys, d["gcntr"], strict=True):
        assert (g == "\\N") == (k not in groups_of), "null gcntr exactly when in no group"
        assert g == "\\N" or int(g) == min(groups_of[k]), "a row carries its lowest gcntr"
    assert all(min(m) == g for g, m in members.items()), "gcntr = seed (first) member"
    assert all(len(m) >= 2 for m in members.values()), "a group is a source seen at least twice"
    assert sorted(members) == sorted(int(g) for g in info["gcntr"])
    ra = dict(zip(keys, num(d["ra"]), strict=True))
    for g, napp, mra in zip(info["gcntr"], info["napp"], num(info["ra"]), strict=True):
        m = members[int(g)]
        assert int(napp) == len(m)
        r = np.array([ra[k] for k in m])
        r = r[0] + (r - r[0] + 180) % 360 - 180
        assert abs((r.mean() - mra + 180) % 360 - 180) < 2e-6
    multi = sum(len(v) > 1 for v in groups_of.values())
    if det in ("pt_src_c", "ext_src_c"):  # IRSA: links exceed detections in the calibration
        assert len(pairs) > len(keys) and multi > 0
    elif det in ("pt_src_6x2", "pt_src_rej", "pt_src_sc", "ext_src_6x2", "ext_src_sc"):
        assert len(pairs) < len(keys) and multi == 0


def test_proportions_follow_irsa(lake):
    """Per product, links per group and per detection are IRSA's (what the manifest reports
    is what the files hold)."""
    manifest = json.loads((lake / "manifest.json").read_text())
    irsa = {}
    with open(DATA / "irsa_gator_catalogs.csv") as f:
        for row in csv.DictReader(f):
            irsa[row["catname"]] = int(row["rows"])
    seen = 0
    for family, products in manifest["proportions"].items():
        for prefix, p in products.items():
            t = p["tables"]
            assert (p["irsa"]["groups"], p["irsa"]["links"], p["irsa"]["detections"]) == (
                irsa[t["groups"]], irsa[t["links"]], irsa[t["detections"]])
            mock = p["mock"]
            assert (mock["groups"], mock["links"], mock["detections"]) == tuple(
                manifest["tables"][t[k]]["rows"] for k in ("groups", "links", "detections"))
            want = p["irsa"]["links"] / p["irsa"]["detections"]
            tol = max(0.02, 3 / mock["detections"])
            assert mock["links"] / mock["detections"] == pytest.approx(want, abs=tol), (family, prefix)
            assert (mock["extra_links"] > 0) == (mock["links"] > mock["detections"] - mock["unlinked"])
            if mock["groups"] >= 10:  # links per group: statistical at this scale
                per = p["irsa"]["links"] / p["irsa"]["groups"]
                assert mock["links"] / mock["groups"] == pytest.approx(per, rel=0.12), (family, prefix)
                seen += 1
    assert seen >= 5


def _truth_det(lake: Path, table: str) -> dict[int, int]:
    t = pq.read_table(lake / "truth" / "detections.parquet").to_pandas()
    t = t[t["table"] == table]
    return dict(zip(t["key"], t["truth_id"], strict=True))


def test_6x_catalog_flag_once_per_source(lake):
    d = columns(lake, "pt_src_6x2")
    truth = _truth_det(lake, "pt_src_6x2")
    src = pq.read_table(lake / "truth" / "sources.parquet").to_pandas().set_index("truth_id")
    cats = Counter()
    for k, c in zip(d["cntr"], d["cat"], strict=True):
        tid = truth[int(k)]
        if tid >= 0 and src.loc[tid, "kind"] == "star":
            cats[tid] += c == "1"
        else:
            assert c == "0"
    assert cats and all(v == 1 for v in cats.values())
    assert set(d["rel"]) <= set("ABCDEF")
    repeats = Counter(truth[int(k)] for k in d["cntr"])
    assert max(repeats.values()) >= 2, "6x sources have repeat detections"


def test_calibration_epochs_noise_and_geometry(lake):
    manifest = json.loads((lake / "manifest.json").read_text())
    fields = {f["tile"]: f for f in manifest["families"]["cal"]["fields"]}
    scans = columns(lake, "pscan_dat_c")
    tile_of = dict(zip((int(x) for x in scans["scan_key"]), (int(x) for x in scans["tile"]),
                       strict=True))
    d = columns(lake, "pt_src_c")
    truth = _truth_det(lake, "pt_src_c")
    src = pq.read_table(lake / "truth" / "sources.parquet").to_pandas().set_index("truth_id")
    tid = np.array([truth[int(k)] for k in d["cntr"]])
    epochs = Counter(tid[tid >= 0])
    assert max(epochs.values()) >= 28
    ra, dec = num(d["ra"]), num(d["dec"])
    for r, de, sk in zip(ra, dec, d["scan_key"], strict=True):
        f = fields[tile_of[int(sk)]]
        assert abs(de - f["dec"]) <= 0.5 + 5 / 3600
        dra = ((r - f["ra"] + 180) % 360 - 180) * np.cos(np.radians(de)) * 60
        assert abs(dra) <= 4.25 + 0.5
    jd = num(d["jdate"])
    assert jd.min() > 2450600 and jd.max() < 2451956 and np.ptp(jd) > 365
    assert set(d["hemis"]) == {"n", "s"}
    # constant stars: chi2/dof of K about the truth with the printed k_msigcom is ~1
    k, sk = num(d["k_m"]), num(d["k_msigcom"])
    ok = (tid >= 0) & ~np.isnan(sk)
    const = np.array([not src.loc[t, "is_variable"] if t >= 0 else False for t in tid])
    ktrue = src["k_m"].reindex(tid[ok & const]).to_numpy()
    chi2 = ((k[ok & const] - ktrue) / sk[ok & const]) ** 2
    assert 0.8 < chi2.mean() < 1.25
    var = ok & ~const
    if var.any():
        kt = pq.read_table(lake / "truth" / "detections.parquet").to_pandas()
        kt = kt[kt["table"] == "pt_src_c"].set_index("key")["k_true"]
        pred = kt.reindex([int(x) for x in np.array(d["cntr"])[var]]).to_numpy()
        assert (((k[var] - pred) / sk[var]) ** 2).mean() < 1.5


def test_6x_geometry_and_scan_keys(lake):
    manifest = json.loads((lake / "manifest.json").read_text())
    regions = manifest["families"]["6x"]["regions"]
    d = columns(lake, "pt_src_6x2")
    for r, de in zip(num(d["ra"]), num(d["dec"]), strict=True):
        inside = False
        for g in regions:
            span = (g["ra_max"] - g["ra_min"]) % 360
            tol = 40 / 3600 / max(np.cos(np.radians(de)), 0.05)
            if (g["dec_min"] - 0.01 <= de <= g["dec_max"] + 0.01
                    and (r - g["ra_min"] + tol) % 360 <= span + 2 * tol):
                inside = True
        assert inside, (r, de)
    for det, scan, coadd in (("pt_src_6x2", "pscan_dat_6x2", "coadd_dat_6x2"),
                             ("pt_src_rej", "pscan_dat", "coadd_dat"),
                             ("ext_src_sc", "pscan_dat_sc", "coadd_dat_sc")):
        dd, s, c = columns(lake, det), columns(lake, scan), columns(lake, coadd)
        sk = set(s["scan_key"])
        assert set(dd["scan_key"]) <= sk
        cmap = dict(zip(c["coadd_key"], c["scan_key"], strict=True))
        assert all(cmap[ck] == k for ck, k in zip(dd["coadd_key"], dd["scan_key"], strict=True))
        nsrc = Counter(dd["scan_key"]) if det.startswith("pt") else None
        if nsrc:
            assert all(int(n) == nsrc.get(k, 0) for k, n in zip(s["scan_key"], s["nsrc"],
                                                                strict=True))


def test_ecliptic_latitude_is_astropys():
    ra = np.array([0.0, 10.0, 100.0, 200.0, 270.0, 300.0])
    dec = np.array([0.0, -60.0, 20.0, -10.0, 66.56, 45.0])
    ecl = SkyCoord(ra=ra * u.deg, dec=dec * u.deg).transform_to(GeocentricMeanEcliptic(equinox="J2000"))
    assert np.allclose(ecliptic_latitude(ra, dec), ecl.lat.deg, atol=0.01)  # frame bias: ~15"


def test_moving_objects_and_spurious(lake):
    ast = columns(lake, "ast_assoc")
    assert ast["object"] == sorted(ast["object"]) and len(ast["object"]) >= 3
    d = columns(lake, "pt_src_rej")
    mp = {k for k, f in zip(d["cntr"], d["mp_flg"], strict=True) if f == "1"}
    surv = [k for k, ds in zip(ast["cntr"], ast["dataset"], strict=True) if ds == "survey"]
    assert surv and set(surv) <= mp
    pos = Counter(zip(ast["object"], ast["ra"], ast["dec"], strict=True))
    assert max(pos.values()) == 1, "each detection of a moving object in a different place"
    assert max(num(ast["dist"])) < 10
    # along the ecliptic where a footprint reaches it: the survey's tiles are all over the sky
    beta = ecliptic_latitude(np.array(num(ast["ra"])), np.array(num(ast["dec"])))
    survey = np.array(ast["dataset"]) == "survey"
    assert np.median(np.abs(beta[survey])) < 20, beta[survey]
    truth = _truth_det(lake, "pt_src_rej")
    rel = dict(zip(d["cntr"], d["rel"], strict=True))
    spur = [k for k, t in truth.items() if t == -1]
    assert spur and all(rel[str(k)] in "DEF" for k in spur)


def test_survey_density_and_proper_motion(lake):
    src = pq.read_table(lake / "truth" / "sources.parquet").to_pandas()
    assert {"star", "galaxy", "moving"} <= set(src["kind"])
    stars = src[src["kind"] == "star"]
    pm = np.hypot(stars["pmra"], stars["pmdec"])
    assert (pm > 200).any() and pm.max() < 6000
    assert 0.02 < stars["is_variable"].mean() < 0.09
    det = pq.read_table(lake / "truth" / "detections.parquet").to_pandas()
    d = columns(lake, "pt_src_rej")
    glat = np.abs(num(d["glat"]))
    per_src = Counter(det[det["table"] == "pt_src_rej"]["truth_id"])
    per_src.pop(-1, None)
    assert set(per_src.values()) <= {1, 2, 3, 4, 5, 6}
    assert (glat < 10).sum() / max((glat > 30).sum(), 1) > 0.3


def test_reference_catalogs_are_valid_hats(lake):
    import lsdb
    from hats.io.validation import is_valid_catalog

    gmap = pq.read_table(lake / "truth" / "gaia_map.parquet").to_pandas()
    src = pq.read_table(lake / "truth" / "sources.parquet").to_pandas()
    for name, n_min in (("gaia_dr3", len(gmap)), ("allwise", 10)):
        cat = lsdb.open_catalog(lake / "reference" / name)
        assert is_valid_catalog(lake / "reference" / name / name, strict=True)
        df = cat.compute()
        assert len(df) >= n_min
    gaia = lsdb.open_catalog(lake / "reference" / "gaia_dr3").compute()
    assert {"source_id", "ra", "dec", "pmra", "pmdec", "parallax", "ref_epoch",
            "phot_g_mean_mag"} <= set(gaia.columns)
    assert (gaia["ref_epoch"] == 2016.0).all() and len(gaia) > len(gmap)  # Gaia-only sources
    stars = src[src["kind"] == "star"]
    assert 0.8 < len(gmap) / len(stars) < 0.99  # some stars have no Gaia counterpart
    wise = lsdb.open_catalog(lake / "reference" / "allwise").compute()
    assert wise["designation"].str.match(r"^J\d{6}\.\d{2}[+-]\d{6}\.\d$").all()


def test_membership_second_groups():
    """Groups of a source seen at least twice; second groups add exactly the missing links, never
    take a source's first row, and each row carries the lowest gcntr of its groups."""
    rng = np.random.default_rng(0)
    source = np.concatenate([np.repeat(np.arange(1, 41), rng.integers(1, 30, 40)), -np.arange(1, 6)])
    key = 1 + rng.permutation(len(source))
    p = Proportion(groups=10, links=120, detections=100)  # 1.2 links per detection
    mem = membership(source, key, p, np.random.default_rng(1))
    pairs = set(zip(mem.group_gcntr[mem.link_group].tolist(), key[mem.link_row].tolist(), strict=True))
    assert len(pairs) == len(mem.link_row), "each link once"
    assert len(mem.link_row) == round(1.2 * len(key))
    groups_of = defaultdict(set)
    members = defaultdict(list)
    for g, k in pairs:
        groups_of[k].add(g)
        members[g].append(k)
    first = {s: key[source == s].min() for s in np.unique(source)}
    counts = Counter(source.tolist())
    for s, k, g, linked in zip(source, key, mem.row_gcntr, mem.linked, strict=True):
        assert linked == (s > 0 and counts[s] >= 2)
        assert not linked or g == min(groups_of[k])
        assert len(groups_of[k]) <= 2
        if len(groups_of[k]) == 2:
            assert k != first[s], "a second group never takes the first row"
    assert all(min(m) == g for g, m in members.items())
    assert sum(len(v) == 2 for v in groups_of.values()) == len(mem.link_row) - int(mem.linked.sum())
