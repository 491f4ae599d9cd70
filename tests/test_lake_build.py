"""Whole-lake builds: pipelines, collections with margins and indexes, Parquet tables, the 6x
catalogs, manifest, report, resume, ``info`` and ``verify``.

One small mock (the 6x family, a scan and an atlas table, an association list) plus groups of
detections straddling order-0 HEALPix edges (always partition edges) and two bad lines is built
once through ``tmass-lake build pipelines/``; the tests read that lake (mutating ones use a copy).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from pathlib import Path

import astropy.units as u
import hats
import lsdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pds
import pyarrow.parquet as pq
import pytest
from astropy.coordinates import Latitude, Longitude, SkyCoord, search_around_sky
from cdshealpix.nested import cone_search, lonlat_to_healpix, neighbours
from PIL import Image

from tmass_lake.cli import main
from tmass_lake.convert import LakeArguments, load_pipelines
from tmass_lake.convert.index import IndexArguments, build_indexes
from tmass_lake.convert.pipelines import load_pipeline
from tmass_lake.convert.resume import ResumePlan
from tmass_lake.errors import UserError
from tmass_lake.mock import format_table, generate
from tmass_lake.readers import read_bulk
from tmass_lake.schema import light_curve_collection, list_tables, load_schema

pytestmark = pytest.mark.slow  # builds a lake (or a cluster) of its own

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"
TABLES = ["pt_src_6x2", "ext_src_6x2", "sixxf_info", "sixxf_link", "esixxf_info", "esixxf_link",
          "pscan_dat_6x2", "coadd_dat_6x2", "ast_assoc"]
PIXEL_THRESHOLD = 250
MARGIN = 10.0
EDGE_GROUPS = 24
EDGE_OFFSETS = (-3.0, 2.0, 5.5)  # arcsec along a path crossing an order-0 edge: pairs 5", 3.5", 8.5"
EDGE_KEYS = 9_000_000_000
BAD_LINE = b"not|a|detection\n"
CHROMIUM = shutil.which("chromium")
BAD_IN = {"pt_src_6x2": "pt_src_6x2_aab.gz", "sixxf_link": "sixxf_link_aaa.gz"}


def run_cli(*argv: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue() + err.getvalue()


def _unit(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    r, d = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(d) * np.cos(r), np.cos(d) * np.sin(r), np.sin(d)], axis=-1)


def _radec(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v = v / np.linalg.norm(v, axis=-1, keepdims=True)
    return np.degrees(np.arctan2(v[..., 1], v[..., 0])) % 360.0, np.degrees(np.arcsin(v[..., 2]))


def _pix0(ra, dec) -> np.ndarray:
    return np.asarray(lonlat_to_healpix(Longitude(np.atleast_1d(ra) * u.deg),
                                        Latitude(np.atleast_1d(dec) * u.deg), 0))


def edge_positions(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` groups of ``len(EDGE_OFFSETS)`` positions straddling an order-0 HEALPix edge."""
    rng = np.random.default_rng(seed)
    ras, decs = [], []
    while len(ras) < n:
        p = int(rng.integers(12))
        q = int(rng.choice([x for x in np.asarray(neighbours(np.array([p]), 0))[0] if x >= 0 and x != p]))
        # random points well inside p and q: centres of random order-6 sub-pixels
        sub = lambda pix: int(pix) * 4**6 + int(rng.integers(4**6))  # noqa: E731
        from cdshealpix.nested import healpix_to_lonlat

        lon, lat = healpix_to_lonlat(np.array([sub(p), sub(q)]), 6)
        a, b = _unit(lon.deg, lat.deg)
        omega = float(np.arccos(np.clip(a @ b, -1, 1)))

        def at(t: float, a: np.ndarray = a, b: np.ndarray = b, omega: float = omega) -> np.ndarray:
            return (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)

        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = (lo + hi) / 2
            if _pix0(*_radec(at(mid)))[0] == p:
                lo = mid
            else:
                hi = mid
        ts = hi + np.radians(np.array(EDGE_OFFSETS) / 3600.0) / omega
        ra, dec = _radec(np.array([at(t) for t in ts]))
        ra, dec = np.round(ra, 6), np.round(dec, 6)
        if len(set(_pix0(ra, dec))) > 1 and abs(dec).max() < 89:
            ras.append(ra)
            decs.append(dec)
    return np.concatenate(ras), np.concatenate(decs)


def inject_edge_groups(root: Path) -> int:
    """Add ``pt_src_6x2_zzz.gz``: detection groups across order-0 edges; returns its row count."""
    schema = load_schema("pt_src_6x2")
    template = next(read_bulk(str(root / "irsa/pt_src_6x2/pt_src_6x2_aaa.gz"), schema)).table
    ra, dec = edge_positions(EDGE_GROUPS, seed=11)
    n = len(ra)
    t = template.take(np.arange(n) % template.num_rows)
    k = len(EDGE_OFFSETS)
    cols = {"ra": pa.array(ra), "dec": pa.array(dec),
            "cntr": pa.array(EDGE_KEYS + np.arange(n), pa.int64()),  # beyond the mock's keys
            "gcntr": pa.array(EDGE_KEYS + np.arange(n) // k, pa.int64()),
            "cat": pa.array(np.where(np.arange(n) % k == 1, "0", "1"))}
    for name, arr in cols.items():
        i = t.schema.get_field_index(name)
        t = t.set_column(i, t.schema.field(i), arr.cast(t.schema.field(i).type))
    with gzip.open(root / "irsa/pt_src_6x2/pt_src_6x2_zzz.gz", "wb") as f:
        f.write(format_table(t, schema))
    return n


def append_bad_line(path: Path) -> None:
    data = gzip.decompress(path.read_bytes()) + BAD_LINE
    path.write_bytes(gzip.compress(data))


@pytest.fixture(scope="module")
def mock_root(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("mock")
    manifest = generate(str(root), scale=0.02, seed=3, tables=TABLES, progress=False, reference=False,
                        rows_per_file=1000)
    rows = {t: manifest["tables"][t]["rows"] for t in TABLES}
    rows["pt_src_6x2"] += inject_edge_groups(root)
    for table, name in BAD_IN.items():
        append_bad_line(root / "irsa" / table / name)
    return root, rows


@pytest.fixture(scope="module")
def lake(mock_root, tmp_path_factory) -> Path:
    root, _ = mock_root
    out = tmp_path_factory.mktemp("lake") / "lake"
    code, text = run_cli("build", str(PIPELINES), "--input", str(root), "--output", str(out),
                         "--pixel-threshold", str(PIXEL_THRESHOLD), "--workers", "2",
                         "--memory-limit", "2GiB", "--quiet")
    assert code == 0, text
    files = len(list((root / "irsa" / "pt_src_6x2").glob("*.gz")))  # the mock's and the edge groups'
    assert files > 2 and f"[1/47] pt_src_6x2: collection from {files} file(s): " in text
    return out


@pytest.fixture(scope="module")
def manifest(lake) -> dict:
    return json.loads((lake / "manifest.json").read_text())


def read_catalog(lake: Path, name: str, sub: str | None = None) -> pa.Table:
    """Every row of a collection's main catalog (or of ``sub``, e.g. its margin)."""
    path = lake / name / (sub or name) / "dataset"
    return pds.dataset(str(path), format="parquet").to_table().replace_schema_metadata(None)


def collections(manifest: dict) -> list[str]:
    return sorted(n for n, e in manifest["tables"].items() if e["type"] in ("collection", "derived"))


# -- pipelines ---------------------------------------------------------------------------------

def test_pipelines_cover_the_extended_mission():
    pipelines = load_pipelines(PIPELINES)
    names = {t.name for p in pipelines for t in p.tables}
    mission = {t for t in list_tables() if load_schema(t).product != "all-sky"}
    assert names == mission
    derived = {d.name: d for p in pipelines for d in p.derived}
    assert set(derived) == {"pt_src_6x2_cat", "ext_src_6x2_cat", "deepcal_src_clean"}
    # their filters are IRSA's default constraints (cat=1, cc_flg = '0'), read from the schemas
    assert {(d.source, d.column, d.equals) for d in derived.values()} == {
        ("pt_src_6x2", "cat", "1"), ("ext_src_6x2", "cat", "1"), ("deepcal_src", "cc_flg", "0")}
    for p in pipelines:
        for t in p.tables:
            assert t.params.margin_arcsec == MARGIN
            assert all(c in t.load_schema().names for c in t.indexes)
    overridden = load_pipeline(PIPELINES / "6x.toml", {"pixel_threshold": 7})
    assert {t.params.pixel_threshold for t in overridden.tables} == {7}


@pytest.mark.parametrize("body, message", [
    ('[[table]]\nname = "pt_src_6x2"\nmargin = 5\n', "unknown key"),
    ('[[table]]\nname = "wsdb_link"\nindexes = ["gcntr"]\n', "no positions"),
    ('[[table]]\nname = "pt_src_6x2"\nindexes = ["nope"]\n', "not in schema"),
    ('[[table]]\nname = "no_such_table"\n', "no schema"),
    ('[[derived]]\nname = "x"\nsource = "pt_src_6x2"\n', "where"),
    ('[[derived]]\nname = "x"\nsource = "pt_src_c"\nwhere = "irsa_default"\n', "no IRSA default constraint"),
])
def test_bad_pipeline_files_are_refused(tmp_path, body, message):
    f = tmp_path / "bad.toml"
    f.write_text(body)
    with pytest.raises((ValueError, KeyError), match=message):
        load_pipelines(f)


# -- the lake ----------------------------------------------------------------------------------

def test_every_collection_is_valid_hats(lake, manifest):
    from hats.io.validation import is_valid_collection

    names = collections(manifest)
    assert set(names) == {"pt_src_6x2", "ext_src_6x2", "sixxf_info", "esixxf_info", "coadd_dat_6x2",
                          "ast_assoc", "pt_src_6x2_cat", "ext_src_6x2_cat"}
    for name in names:
        assert is_valid_collection(lake / name, strict=True), name
    assert manifest["tables"]["pt_src_6x2"]["partitions"] > 10


def _partition_of(h: np.ndarray, pixels) -> np.ndarray:
    out = np.full(len(h), -1)
    for i, p in enumerate(pixels):
        out[(h >> (2 * (29 - p.order))) == p.pixel] = i
    return out


def _near_edge(ra: np.ndarray, dec: np.ndarray, own: np.ndarray, pixels) -> np.ndarray:
    """Sources whose margin-radius disc reaches another partition."""
    depth = max(p.order for p in pixels)
    fine = {}
    for i, p in enumerate(pixels):
        shift = 2 * (depth - p.order)
        for f in range(p.pixel << shift, (p.pixel + 1) << shift):
            fine[f] = i
    near = np.zeros(len(ra), bool)
    for k in range(len(ra)):
        cells, _, _ = cone_search(Longitude(ra[k] * u.deg), Latitude(dec[k] * u.deg), MARGIN * u.arcsec,
                                  depth)
        near[k] = any(fine.get(int(c), own[k]) != own[k] for c in np.asarray(cells))
    return near


@pytest.mark.parametrize("left, right", [("pt_src_6x2", "pt_src_6x2"), ("pt_src_6x2", "pt_src_6x2_cat")])
def test_crossmatch_at_partition_edges_equals_brute_force(lake, left, right):

    cols = ["cntr", "ra", "dec", "_healpix_29"]
    lt, rt = read_catalog(lake, left).select(cols), read_catalog(lake, right).select(cols)
    lpix = hats.read_hats(lake / left).get_healpix_pixels()
    rpix = hats.read_hats(lake / right).get_healpix_pixels()
    lra, ldec = lt["ra"].to_numpy(), lt["dec"].to_numpy()
    lpart = _partition_of(lt["_healpix_29"].to_numpy(), lpix)
    near = _near_edge(lra, ldec, lpart, lpix)
    i, j, _, _ = search_around_sky(SkyCoord(lra * u.deg, ldec * u.deg),
                                   SkyCoord(rt["ra"].to_numpy() * u.deg, rt["dec"].to_numpy() * u.deg),
                                   MARGIN * u.arcsec)
    lc, rc = lt["cntr"].to_numpy(), rt["cntr"].to_numpy()
    rpart = _partition_of(rt["_healpix_29"].to_numpy(), rpix)
    crossing = {(lc[a], rc[b]) for a, b in zip(i, j, strict=True)
                if lpix[lpart[a]] != rpix[rpart[b]]}
    expected = {(lc[a], rc[b]) for a, b in zip(i, j, strict=True) if near[a]}
    assert near.sum() >= 2 * EDGE_GROUPS and len(crossing) >= EDGE_GROUPS
    assert crossing <= expected

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lcat = lsdb.open_catalog(lake / left, columns=["cntr", "ra", "dec"])
        rcat = lsdb.open_catalog(lake / right, columns=["cntr", "ra", "dec"])
        assert rcat.margin is not None
        found = lcat.crossmatch(rcat, radius_arcsec=MARGIN, n_neighbors=64, suffixes=("_l", "_r"),
                                suffix_method="all_columns").compute()
    near_ids = set(lc[near])
    got = {(a, b) for a, b in zip(found["cntr_l"], found["cntr_r"], strict=True) if a in near_ids}
    assert got == expected


def _pick_values(values: np.ndarray, rng: np.random.Generator) -> list:
    uniq, counts = np.unique(values, return_counts=True)
    picks = list(rng.choice(uniq, size=min(3, len(uniq)), replace=False))
    if (counts > 1).any():
        picks.append(uniq[np.argmax(counts)])  # a value several rows share
    return [v.item() if hasattr(v, "item") else v for v in dict.fromkeys(picks)]


def test_id_search_through_every_index(lake, manifest):

    rng = np.random.default_rng(5)
    searched = 0
    for name in collections(manifest):
        entry = manifest["tables"][name]
        table = read_catalog(lake, name)
        cat = lsdb.open_catalog(lake / name)
        assert set(cat.hc_collection.all_indexes) == set(entry["indexes"])
        for col, idx in entry["indexes"].items():
            assert idx["rows"] == table.num_rows - table[col].null_count
            values = _pick_values(table[col].drop_null().to_numpy(zero_copy_only=False), rng)
            with contextlib.redirect_stdout(io.StringIO()):
                found = cat.id_search({col: values}).compute()
            want = table.filter(pc.is_in(table[col], pa.array(values, table[col].type)))
            assert len(found) == want.num_rows and want.num_rows >= len(values), (name, col)
            assert sorted(found.index) == sorted(want["_healpix_29"].to_pylist())
            assert sorted(found[col]) == sorted(want[col].to_pylist())
            searched += 1
    assert searched == 11  # cntr+gcntr, ext_key+gcntr, gcntr x2, coadd_key, object+cntr, cntr, ext_key


def test_index_split_over_several_files_keeps_disjoint_sorted_ranges(lake, tmp_path, local_client):

    copy = tmp_path / "pt_src_6x2"
    shutil.copytree(lake / "pt_src_6x2", copy)
    for old in copy.glob("*_index"):
        shutil.rmtree(old)
    args = IndexArguments(collection=str(copy), catalog="pt_src_6x2", columns=("cntr", "gcntr"),
                          scratch=str(tmp_path / "tmp"), rows_per_file=700, spill_batch_rows=16,
                          progress=False)
    catalog = hats.read_hats(copy / "pt_src_6x2")
    plan = ResumePlan(str(tmp_path / "tmp" / "plan"), {}, resume=False)
    built = build_indexes(args, list(catalog.get_healpix_pixels()), catalog.schema, plan, local_client)
    assert built["cntr"]["files"] >= 5
    for col in ("cntr", "gcntr"):
        files = sorted((copy / built[col]["path"] / "dataset" / "index").glob("*.parquet"))
        ranges = []
        for f in files:
            v = pq.read_table(f)[col].to_numpy()
            assert (np.diff(v) >= 0).all()
            ranges.append((v.min(), v.max()))
        assert all(a[1] < b[0] for a, b in zip(ranges, ranges[1:], strict=False)), col  # ties never split
    table = read_catalog(lake, "pt_src_6x2")
    for col in ("cntr", "gcntr"):  # the same rows as the lake's one-file index
        want = pq.read_table(lake / "pt_src_6x2" / built[col]["path"] / "dataset" / "index")
        got = pq.read_table(copy / built[col]["path"] / "dataset" / "index")
        assert got.replace_schema_metadata(None).equals(want.replace_schema_metadata(None))
    values = table["cntr"].to_pylist()[::97]
    with contextlib.redirect_stdout(io.StringIO()):
        found = lsdb.open_catalog(copy).id_search({"cntr": values}).compute()
    assert sorted(found["cntr"]) == sorted(values)


def _sorted_rows(t: pa.Table, key: str) -> pa.Table:
    return t.take(pc.sort_indices(t, [(key, "ascending"), ("_healpix_29", "ascending")]))


@pytest.mark.parametrize("wdb, cat, key", [("pt_src_6x2", "pt_src_6x2_cat", "cntr"),
                                           ("ext_src_6x2", "ext_src_6x2_cat", "ext_key")])
def test_6x_catalogs_are_the_cat_1_rows(lake, manifest, wdb, cat, key):

    source = read_catalog(lake, wdb)
    expected = source.filter(pc.equal(source["cat"], "1"))
    derived = read_catalog(lake, cat)
    assert 0 < derived.num_rows < source.num_rows
    assert _sorted_rows(derived, key).equals(_sorted_rows(expected, key))
    assert manifest["tables"][cat]["rows"] == derived.num_rows
    assert manifest["tables"][cat]["derived_from"] == {"table": wdb,
                                                       "where": {"column": "cat", "equals": "1"}}
    # same partitioning (minus empty partitions); each partition and margin is the filtered source's
    src_pixels = set(hats.read_hats(lake / wdb).get_healpix_pixels())
    col = hats.read_hats(lake / cat)
    assert set(col.get_healpix_pixels()) <= src_pixels
    margin_rows = manifest["tables"][cat]["margin_rows"]
    assert col.default_margin == f"{cat}_10arcsec"  # even when empty
    assert margin_rows > 0 or wdb == "ext_src_6x2"  # the sparse extended sources may have none
    for sub_src, sub_cat in ((wdb, cat), (f"{wdb}_10arcsec", f"{cat}_10arcsec")):
        for f in sorted((lake / cat / sub_cat / "dataset").glob("Norder=*/Dir=*/Npix=*.parquet")):
            rel = f.relative_to(lake / cat / sub_cat)
            src = pq.read_table(lake / wdb / sub_src / rel)
            assert pq.read_table(f).replace_schema_metadata(None).equals(
                src.filter(pc.equal(src["cat"], "1")).replace_schema_metadata(None))
    meta = pq.read_schema(lake / cat / cat / "dataset" / "_common_metadata").metadata
    assert meta[b"table"] == cat.encode() and meta[b"derived_from"] == wdb.encode()


def test_parquet_tables_and_quarantine(lake, mock_root, manifest):
    _, rows = mock_root
    for name in ("sixxf_link", "esixxf_link", "pscan_dat_6x2"):
        entry = manifest["tables"][name]
        assert entry["type"] == "parquet"
        table = pq.read_table(lake / name / "dataset")
        assert table.num_rows == rows[name] == entry["rows"]
        assert table.schema.names == load_schema(name).names
        assert table.schema.metadata[b"table"] == name.encode()
        assert len(list((lake / name / "dataset").glob("part-*.parquet"))) == entry["partitions"]
        props = dict(x.split("=", 1) for x in (lake / name / "table.properties").read_text().splitlines())
        assert props["table"] == props["schema"] == name and int(props["total_rows"]) == rows[name]
    for name, fname in BAD_IN.items():
        q = pa.concat_tables([pq.read_table(p) for p in (lake / name / "quarantine").glob("*.parquet")])
        assert q.num_rows == 1 and q["file"][0].as_py().endswith(fname)
        assert q["text"][0].as_py() == BAD_LINE.decode().rstrip("\n")
        assert manifest["tables"][name]["rows_quarantined"] == 1


def test_manifest_lists_everything_with_counts_and_provenance(lake, mock_root, manifest):
    root, rows = mock_root
    tables = manifest["tables"]
    curves = {"sixxf_lightcurves", "esixxf_lightcurves"}
    assert set(tables) == set(TABLES) | {"pt_src_6x2_cat", "ext_src_6x2_cat"} | curves
    mission = {t for t in list_tables() if load_schema(t).product != "all-sky"}
    every_curve = {light_curve_collection(t) for t in mission if load_schema(t).has_light_curves}
    assert len(every_curve) == 8 and curves <= every_curve
    assert set(manifest["skipped"]) == (mission | every_curve) - set(TABLES) - curves | {"deepcal_src_clean"}
    assert tables["sixxf_lightcurves"]["rows"] == tables["sixxf_info"]["rows"]
    assert tables["sixxf_lightcurves"]["detections"] == tables["sixxf_link"]["rows"]
    assert set(manifest["pipelines"]) == {"6x", "associations", "calibration", "deepcal", "scans", "survey"}
    assert {"tmass-lake", "hats", "lsdb", "pyarrow", "dask"} <= set(manifest["tools"])
    for name in TABLES:
        e = tables[name]
        assert e["rows"] == rows[name], name
        assert e["lines_read"] == e["rows"] + e["rows_quarantined"]
        assert e["rows_quarantined"] == (1 if name in BAD_IN else 0)
        assert e["schema"]["name"] == name and e["schema"]["layout_status"] == load_schema(name).layout_status
        assert [c["name"] for c in e["schema"]["columns"]] == load_schema(name).names
        assert e["parameters"]["pixel_threshold"] == PIXEL_THRESHOLD
        assert e["parameters"]["margin_arcsec"] == MARGIN
        files = sorted((root / "irsa" / name).glob("*.gz"))
        assert [f["path"] for f in e["inputs"]] == [str(f) for f in files]
        for f, rec in zip(files, e["inputs"], strict=True):
            assert rec["bytes"] == f.stat().st_size
            assert rec["sha256"] == hashlib.sha256(f.read_bytes()).hexdigest()
        assert e["type"] == ("collection" if load_schema(name).positional else "parquet")
        assert e["built_with"]["hats"] == manifest["tools"]["hats"]
    assert set(manifest["last_run"]["built"]) == set(tables) and manifest["last_run"]["workers"] == 2
    t = manifest["totals"]
    assert t["rows"] == sum(rows.values()) and t["rows_quarantined"] == 2 and t["tables"] == len(tables)


def test_report_has_text_json_and_pngs(lake, manifest):
    report = json.loads((lake / "report" / "report.json").read_text())
    text = (lake / "report" / "report.txt").read_text()
    assert {r["table"] for r in report["tables"]} == set(manifest["tables"])
    for r in report["tables"]:
        e = manifest["tables"][r["table"]]
        assert (r["lines_read"], r["rows_written"], r["rows_quarantined"]) == (
            e["lines_read"], e["rows"], e["rows_quarantined"])
        assert r["table"] in text
    for name in collections(manifest):
        row = next(r for r in report["tables"] if r["table"] == name)
        assert sum(row["orders"].values()) == manifest["tables"][name]["partitions"]
        for kind in ("coverage", "orders"):
            png = lake / "report" / f"{name}_{kind}.png"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    assert (lake / "report" / "rows.png").stat().st_size > 1000


class _Page(HTMLParser):
    """The href/src targets and the text of one page."""

    def __init__(self) -> None:
        super().__init__()
        self.targets: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.targets += [v for k, v in attrs if k in ("href", "src") and v and not v.startswith("#")]

    def handle_data(self, data):
        self.text.append(data)


def _chromium(url: str, *args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", *args, url], capture_output=True, timeout=120, check=False)


def test_lake_card_renders_in_chromium(lake, manifest, tmp_path):
    """Every page of the card: its links and images resolve, Chromium renders it, the index's
    screenshot is not blank; each table's page lists its columns with their units and UCDs."""
    assert CHROMIUM, "the lake card's test needs Chromium (Debian package chromium)"
    report = lake / "report"
    pages = [report / "index.html", *sorted((report / "tables").glob("*.html"))]
    assert {p.stem for p in pages[1:]} == set(manifest["tables"])
    for page in pages:
        parsed = _Page()
        parsed.feed(page.read_text())
        for target in parsed.targets:
            assert "://" not in target and not target.startswith("//"), (page, target)  # nothing from the net
            assert (page.parent / target).resolve().is_file(), (page, target)
            if target.endswith(".png"):
                with Image.open(page.parent / target) as im:
                    im.verify()
        text = "".join(parsed.text)
        if page.stem in manifest["tables"]:
            entry = manifest["tables"][page.stem]
            if entry["type"] == "lightcurves":  # the merged sources' columns, statistics, detections
                assert "n_epochs" in text and "src.var.amplitude;em.IR.K" in text and "detections" in text
            else:
                for c in load_schema(entry["schema"]["name"]).columns[:8]:
                    assert c.name in text and (c.ucd or "") in text and (c.unit or "") in text, (page, c.name)
            if entry["type"] != "parquet":
                assert f"{page.stem}_orders.png" in " ".join(parsed.targets)
                assert f"lsdb.open_catalog('{lake / page.stem}')" in text
        else:
            assert all(f"tables/{n}.html" in parsed.targets for n in manifest["tables"])
    light = [n for n, e in manifest["tables"].items() if e["type"] == "lightcurves"]
    assert light and all((report / f"{n}_lightcurve.png").exists() for n in light)
    assert (report / "pt_src_6x2_fields.png").exists()  # the 6x regions are small: zoomed

    def render(page: Path) -> str:
        done = _chromium(page.as_uri(), "--dump-dom")
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.decode()

    with ThreadPoolExecutor(2) as pool:
        for page, dom in zip(pages, pool.map(render, pages), strict=True):
            assert "<h1>" in dom and "</table>" in dom, page
    shot = tmp_path / "index.png"
    done = _chromium((report / "index.html").as_uri(), f"--screenshot={shot}", "--window-size=1200,900")
    assert done.returncode == 0 and shot.exists(), done.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), float)
    assert pixels.shape == (900, 1200) and pixels.std() > 20  # text, tables and a header, not one colour
    assert 0.05 < (pixels < 128).mean() < 0.6


def test_info_and_verify(lake, manifest, tmp_path):
    code, text = run_cli("info", str(lake))
    assert code == 0
    for name, e in manifest["tables"].items():
        assert name in text and f"{e['rows']:,}" in text
    code, text = run_cli("info", str(lake), "--json")
    assert code == 0 and json.loads(text)["tables"].keys() == manifest["tables"].keys()
    code, text = run_cli("verify", str(lake))
    assert code == 0, text
    assert f"{len(manifest['tables'])}/{len(manifest['tables'])} tables verified" in text

    broken = tmp_path / "broken"
    shutil.copytree(lake, broken)
    next((broken / "sixxf_info" / "sixxf_info_gcntr_index" / "dataset" / "index").glob("*.parquet")).unlink()
    (broken / "pscan_dat_6x2" / "dataset" / "part-00000.parquet").write_bytes(b"garbage")
    code, text = run_cli("verify", str(broken))
    assert code == 1
    assert "sixxf_info         FAILED" in text and "pscan_dat_6x2      FAILED" in text
    assert "pt_src_6x2         ok" in text
    code, text = run_cli("info", str(tmp_path))
    assert code == 2 and "manifest.json" in text


def test_building_into_an_existing_lake_adds_what_is_missing(lake, mock_root, manifest, tmp_path):
    root, _ = mock_root
    copy = tmp_path / "lake"
    shutil.copytree(lake, copy)
    argv = ["build", "6x", "--input", str(root), "--output", str(copy),
            "--pixel-threshold", str(PIXEL_THRESHOLD), "--workers", "2", "--memory-limit", "2GiB", "--quiet"]
    code, text = run_cli(*argv)  # everything up to date: nothing to do, not an error
    assert code == 0, text
    assert "pt_src_6x2: up to date, skipped" in text and "pt_src_6x2_cat: up to date, skipped" in text

    shutil.rmtree(copy / "esixxf_info")
    (copy / "_lake" / "tables" / "esixxf_info.json").unlink()
    (copy / "report" / "esixxf_info_orders.png").unlink()
    code, text = run_cli(*argv)
    assert code == 0, text
    assert "esixxf_info: collection from" in text
    assert "pt_src_6x2: up to date, skipped" in text
    again = json.loads((copy / "manifest.json").read_text())
    assert again["tables"].keys() == manifest["tables"].keys()  # the other families' tables are kept
    assert again["tables"]["esixxf_info"]["rows"] == manifest["tables"]["esixxf_info"]["rows"]
    assert again["tables"]["pt_src_6x2"] == manifest["tables"]["pt_src_6x2"]
    assert (copy / "report" / "esixxf_info_orders.png").exists()
    code, text = run_cli("verify", str(copy))
    assert code == 0, text

    changed = sorted((root / "irsa" / "sixxf_link").glob("*.gz"))[0]
    saved = changed.read_bytes()
    try:
        changed.write_bytes(saved + gzip.compress(b""))  # other bytes, same rows
        code, text = run_cli(*argv)
        assert code == 2 and f"input {changed} changed" in text and "--rebuild sixxf_link" in text
        code, text = run_cli(*argv, "--rebuild", "sixxf_link")
        assert code == 0, text
        assert "sixxf_link: rebuilding" in text and "pt_src_6x2: up to date, skipped" in text
        assert "sixxf_lightcurves: rebuilding (sixxf_link changed)" in text  # made from it: follows
    finally:
        changed.write_bytes(saved)
    code, text = run_cli(*argv, "--pixel-threshold", str(PIXEL_THRESHOLD + 1))
    assert code == 2 and "parameter pixel_threshold" in text and "--rebuild pt_src_6x2" in text


def test_one_family_into_a_new_lake_and_errors(mock_root, tmp_path):
    root, rows = mock_root
    with pytest.raises(UserError, match="in no pipeline"):
        LakeArguments(pipelines=tuple(load_pipelines(PIPELINES / "6x.toml")), input_roots=(str(root),),
                      output=str(tmp_path), tables=("wsdb_info",))
    code, text = run_cli("build", "associations", "--input", str(root), "--output",
                         str(tmp_path / "assoc"), "--workers", "1", "--quiet")
    assert code == 0, text
    m = json.loads((tmp_path / "assoc" / "manifest.json").read_text())
    assert set(m["tables"]) == {"ast_assoc"} and m["tables"]["ast_assoc"]["rows"] == rows["ast_assoc"]
    assert set(m["skipped"]) == {"com_assoc", "pla_assoc"}
    assert m["tables"]["ast_assoc"]["parameters"]["pixel_threshold"] == 1_000_000
