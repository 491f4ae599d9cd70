"""Orchestration of a mock run: plan, run chunks (optionally in parallel), write the
per-family scan/atlas tables, the deep calibration lists, association lists, truth, reference
HATS catalogues and the manifest."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed

import fsspec
import lsdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm.auto import tqdm
from upath import UPath

from tmass_lake.cluster import dask_client
from tmass_lake.mock import families as fam
from tmass_lake.mock import geometry as geo
from tmass_lake.mock import truth as tr
from tmass_lake.mock.bulkfmt import format_table
from tmass_lake.mock.columns import choose_strings, fixed_strings, make_table
from tmass_lake.mock.tables import ChunkResult, chunk_sources, run_chunk, write_bulk
from tmass_lake.schema import list_tables, load_schema
from tmass_lake.storage import claim_output, open_atomic, read_json, write_parquet, write_text

GENERATOR_VERSION = "1.0"
DEFAULT_ROWS_PER_FILE = 1_000_000
MARGIN_ARCSEC = 10.0
REFERENCE_IMPORT_ROWS = 3_000_000
"""Above this many rows a reference catalogue is built with hats-import instead of lsdb."""
DEEP_MAG_GAIN = 4.0  # combined calibration images are ~3.5-4.5 mag deeper (documented)
NOTES = [
    "Geometry documented: calibration field size (1 deg Dec x 8.5' RA), the first 18 regular "
    "calibration fields (calib plan v4.2), scan counts (regular ~600-3700, special 150-470), "
    "visits of 6 scans alternating direction with ~5\" RA steps; 6x SMC/Hydra centres, bounds, "
    "scan lengths and scans/tile, Lockman Hole RA/Dec range, Abell 553 (11 x 1 deg scans); survey "
    "6 deg x 8.5' tiles.",
    "Geometry inferred: 17 regular calibration fields (MOCK-CAL-19..35) placed on the documented "
    "pattern (2 h RA steps from 13 h at Dec -30/0/+30); 5 special LMC/SMC calibration fields "
    "(MOCK-LMC-*, MOCK-SMC-*); the LMC 6x region (well-known position, not from the reference); "
    "Hydra as a 54-tile block about its documented centre; tile grids, tile numbers (cal 90001+), "
    "scans per survey tile (1-3), ~23 Atlas images per 6 deg scan, nights 1997-06..2001-02.",
    "Scale (our choice): point working-database rows at scale 1 ~ 400k survey + 200k 6x + 380k "
    "calibration + 60k LMC/SMC calibration, plus ~1% extended detections; calibration scans per "
    "field = documented count x a fixed share (the same at every scale, >= 12), sources per field "
    "scaled (>= 1, so tiny scales exceed the calibration budgets).",
    "Proportions (IRSA's): per product, links per group and links per detection of the merged "
    "information, link and working-database tables follow IRSA's Gator row counts (see "
    "'proportions': irsa vs mock). How (our choice): a merged group is a source detected at least "
    "twice (IRSA merged sources detected multiple times); rows of sources seen once, spurious and "
    "moving-object rows are in no group (their gcntr is null); single-apparition sources (faint "
    "stars at SNR 3-6 in K, galaxies at K 13.6-14.2, each detected once) are added until the "
    "unlinked share is IRSA's 1 - links/detections; where IRSA's links exceed detections "
    "(calibration, survey extended) a source's second group takes a window of 30-70% of its "
    "epochs (never the first), so those rows are linked twice (overlapping 1.5\" circles), until "
    "the links reach IRSA's links/detections.",
    "Truth: positions at J2000.0 (JD 2451545.0) with linear proper motion; parallax is not "
    "applied to detection positions; photometric noise sigma = printed msigcom; astrometric "
    "noise drawn from the printed err_maj/err_min/err_ang ellipse; a row in several groups "
    "carries the lowest of their gcntr (its source's first group); the link table lists every "
    "(gcntr, cntr) pair once and the information table's napp and means count every link.",
    "Keys: cntr = chunk*10^7 + n (ext_key = chunk*10^6 + n), unique per table, increasing "
    "with observation time inside a file; pxcntr points at a random row of the same file; "
    "deepcal_src pts_key/ext_key are null (no All-Sky mock).",
]


def _blocks(n: int, size: int) -> Iterable[tuple[int, int]]:
    yield from enumerate(range(0, max(n, 1), size))


def _write_split(out: str, table: pa.Table, name: str, rows_per_file: int, level: int,
                 so: dict | None) -> list[dict]:
    s = fam.get_schema(name)
    files = []
    for i, start in _blocks(table.num_rows, rows_per_file):
        part = table.slice(start, rows_per_file)
        entry = write_bulk(out, name, i, format_table(part, s), part.num_rows, level, so)
        if entry is not None:
            files.append(entry)
    return files


def scan_tables(plan: fam.FamilyPlan, counts: np.ndarray | None) -> tuple[pa.Table, pa.Table]:
    """The scan-information and atlas-image tables of a family (every planned scan)."""
    sc, tl = plan.scans, plan.tiles
    rng = np.random.default_rng([plan.seed, plan.spec.code, 6])
    n = len(sc)
    ss = fam.get_schema(plan.tables["scan"])
    date = geo.jd_to_days1970(sc.jd_start)
    scan_t = make_table(ss, n, {
        "scan_key": sc.scan_key, "hemis": choose_strings(sc.hemis, ["n", "s"]), "date": date,
        "scan": sc.scan_no, "tile": tl.tile_no[sc.tile], "jdate_start": sc.jd_start,
        "jdate_end": sc.jd_start + sc.duration,
        "nsrc": (np.zeros(n, np.int64), np.ones(n, bool)) if counts is None else counts,
        "j_seeing": rng.uniform(0.9, 1.6, n), "k_zp": rng.normal(20.0, 0.05, n),
        "qual": rng.choice([10, 9, 8, 7, 5], n, p=[0.5, 0.25, 0.15, 0.07, 0.03]),
    }, rng)
    cs = fam.get_schema(plan.tables["coadd"])
    s = np.repeat(np.arange(n), sc.n_coadd)
    c = np.arange(len(s)) - np.repeat(sc.coadd_base, sc.n_coadd) + 1
    f = (c - 0.5) / sc.n_coadd[s]
    t = sc.tile[s]
    frac = np.where(sc.direction[s] > 0, f, 1.0 - f)
    dec = tl.dec_min[t] + frac * (tl.dec_max[t] - tl.dec_min[t])
    ra = (tl.ra[t] + sc.ra_off[s] / np.maximum(np.cos(np.radians(dec)), 1e-6)) % 360.0
    jd = sc.jd_start[s] + f * sc.duration[s]
    coadd_t = make_table(cs, len(s), {
        "coadd_key": sc.coadd_base[s] + c, "scan_key": s + 1, "coadd": c, "ra": ra, "dec": dec,
        "jdate": jd, "hemis": choose_strings(sc.hemis[s], ["n", "s"]),
        "date": geo.jd_to_days1970(jd), "scan": sc.scan_no[s],
        "j_back": rng.uniform(150.0, 450.0, len(s)), "k_seeing": rng.uniform(0.9, 1.6, len(s)),
    }, rng)
    return scan_t, coadd_t


def deep_tables(plan: fam.FamilyPlan) -> tuple[pa.Table, pa.Table]:
    """Combined calibration-scan source lists of the regular fields, and their truth map.

    Per field: every truth source of the field (measured on the deep combined image) plus
    fainter sources down to ~4 mag below the survey limit; ids run by increasing Dec.
    """
    schema = fam.get_schema(plan.tables["deep"])
    m10 = np.array(plan.spec.m10) + DEEP_MAG_GAIN
    tabs, maps = [], []
    for fi, fld in enumerate(plan.fields):
        items = [it for ch in plan.chunks for it in ch if it[0] == fi]
        src = chunk_sources(plan, items)
        rng = np.random.default_rng([plan.seed, plan.spec.code, 7, fi])
        lo, hi = plan.spec.k_range[1], plan.spec.k_range[1] + 3.2
        ratio = (10 ** (0.3 * hi) - 10 ** (0.3 * lo)) / (10 ** (0.3 * lo) - 10 ** (0.3 * 6.0))
        n_x = int(round(ratio * len(src)))
        xra, xdec = geo.uniform_in_box(rng, n_x, np.full(n_x, fld.ra),
                                       np.full(n_x, geo.TILE_WIDTH_DEG), np.full(n_x, fld.dec - .5),
                                       np.full(n_x, fld.dec + 0.5), 30.0 / 3600.0)
        xk = tr.power_law_mags(rng, n_x, lo, hi)
        xjk = np.clip(rng.normal(0.7, 0.25, n_x), -0.1, 2.5)
        xmag = np.stack([xk + xjk, xk + 0.3 * xjk, xk], axis=1)
        ra0, dec0 = tr.position_at(src, np.arange(len(src)), np.full(len(src), 2451300.0))
        ra = np.concatenate([ra0, xra])
        dec = np.concatenate([dec0, xdec])
        mag = np.concatenate([src.mag, xmag])
        tid = np.concatenate([src.truth_id, np.full(n_x, -1)])
        sig = np.round(tr.phot_sigma(mag, m10[None, :], floor=0.01), 3)
        det = mag < m10[None, :] + 1.0
        obs = mag + rng.standard_normal(mag.shape) * sig
        ra = (ra + rng.normal(0, 0.05, len(ra)) / 3600.0 / np.cos(np.radians(dec))) % 360.0
        dec = dec + rng.normal(0, 0.05, len(dec)) / 3600.0
        order = np.argsort(dec, kind="stable")
        n = len(order)
        snr = 1.0857 / sig
        q = np.where(snr >= 10, ord("A"), np.where(snr >= 7, ord("B"), ord("C")))
        q = np.where(det, q, ord("U")).astype(np.uint8)[order]
        name = np.frombuffer(fld.name.encode(), np.uint8)
        vals: dict[str, object] = {
            "field": fixed_strings(np.broadcast_to(name, (n, len(name)))),
            "id": np.arange(1, n + 1), "ra": ra[order], "dec": dec[order],
            "ph_qual": fixed_strings(q),
            "pts_key": (np.zeros(n, np.int64), np.ones(n, bool)),
            "ext_key": (np.zeros(n, np.int64), np.ones(n, bool)),
        }
        for i, b in enumerate("jhk"):
            nd = ~det[order, i]
            vals[f"{b}_m"] = (np.where(det[:, i], obs[:, i], m10[i] + 1.0)[order], None)
            vals[f"{b}_msig"] = (sig[order, i], nd)
        tabs.append(make_table(schema, n, vals, rng, mag[order]))
        maps.append(pa.table({"field": pa.array([fld.name] * n), "id": np.arange(1, n + 1),
                              "truth_id": tid[order]}))
    return pa.concat_tables(tabs), pa.concat_tables(maps)


def assoc_tables(results: list[ChunkResult]) -> dict[str, pa.Table]:
    """Association lists (asteroids, comets, planets/satellites), sorted by designation."""
    parts = [r.assoc for r in results if r.assoc is not None and r.assoc.num_rows]
    names = fam.association_tables()
    by_cls = {n: i for i, n in enumerate(["ast_assoc", "com_assoc", "pla_assoc"])}
    out: dict[str, pa.Table] = {}
    allrows = pa.concat_tables(parts) if parts else None
    for name in names:
        s = fam.get_schema(name)
        rng = np.random.default_rng([sum(name.encode()), 8])
        if allrows is None:
            out[name] = make_table(s, 0, {}, rng)
            continue
        t = allrows.filter(pc.equal(allrows.column("class"), by_cls.get(name, 0)))
        t = t.sort_by([("object", "ascending"), ("jdate", "ascending")])
        vals = {c: t.column(c) for c in t.column_names if c != "class"}
        out[name] = make_table(s, t.num_rows, vals, rng)
    return out


def _merge_parts(out: str, results: list[ChunkResult], kind: str, dest: str,
                 so: dict | None) -> int:
    """Concatenate per-chunk parquet parts into one file (streamed; one row group per part)."""
    fs, root = fsspec.core.url_to_fs(out, **(so or {}))
    paths = [f"{root.rstrip('/')}/{r.parts[kind]}" for r in results if kind in r.parts]
    rows = 0
    writer = None
    with open_atomic(fs, f"{root.rstrip('/')}/{dest}") as fh:
        for p in paths:
            with fs.open(p, "rb") as f:
                t = pq.read_table(f)
            if writer is None:
                writer = pq.ParquetWriter(fh, t.schema, compression="zstd")
            writer.write_table(t.cast(writer.schema))
            rows += t.num_rows
        if writer is not None:
            writer.close()
    return rows


def _read_parts(out: str, results: list[ChunkResult], kind: str, so: dict | None) -> pa.Table:
    fs, root = fsspec.core.url_to_fs(out, **(so or {}))
    tabs = []
    for r in results:
        if kind in r.parts:
            with fs.open(f"{root.rstrip('/')}/{r.parts[kind]}", "rb") as f:
                tabs.append(pq.read_table(f))
    return pa.concat_tables(tabs)


def write_reference(out: str, name: str, table: pa.Table, so: dict | None,
                    sort_key: str) -> dict:
    """Write one reference catalogue as a HATS collection (catalogue + 10" margin) with lsdb."""
    df = table.sort_by(sort_key).to_pandas()
    cat = lsdb.from_dataframe(df, ra_column="ra", dec_column="dec", catalog_name=name,
                              margin_threshold=MARGIN_ARCSEC, partition_rows=250_000,
                              lowest_order=0, highest_order=8)
    path = UPath(f"{out.rstrip('/')}/reference/{name}", **(so or {}))
    cat.write_catalog(path, catalog_name=name, overwrite=True, progress_bar=False)
    return {"path": f"reference/{name}", "rows": table.num_rows, "writer": "lsdb.from_dataframe"}


def import_reference(out: str, name: str, parts: list[str], so: dict | None, sort_key: str,
                     workers: int) -> dict:
    """Large reference catalogues: the hats-import pipeline over the per-chunk Parquet parts
    (bounded memory), written as the same collection layout as :func:`write_reference`."""
    try:  # an optional dependency (the 'mock' extra): imported only where it is needed
        from hats_import.collection.arguments import CollectionArguments
        from hats_import.pipeline import pipeline_with_client
    except ImportError as e:
        raise ImportError(f"reference catalogues of more than {REFERENCE_IMPORT_ROWS:,} rows are "
                          "written with hats-import: pip install 'tmass-lake[mock]'") from e
    root = UPath(f"{out.rstrip('/')}", **(so or {}))
    paths = [root / p for p in parts]
    with tempfile.TemporaryDirectory(prefix="tmass_mock_") as tmp:
        args = (CollectionArguments(output_artifact_name=name, output_path=root / "reference",
                                    resume=False, progress_bar=False, tmp_dir=tmp)
                .catalog(input_file_list=paths, file_reader="parquet", ra_column="ra",
                         dec_column="dec", pixel_threshold=250_000, highest_healpix_order=8,
                         sort_columns=sort_key)
                .add_margin(margin_threshold=MARGIN_ARCSEC, is_default=True))
        with dask_client(workers=workers) as client:
            pipeline_with_client(args, client)
    return {"path": f"reference/{name}", "writer": "hats_import"}


def _plans(seed: int, scale: float, rows_per_file: int, want: set[str],
           ) -> list[fam.FamilyPlan]:
    plans = []
    every = bool(want & set(fam.association_tables()))  # association lists draw on all families
    for spec in fam.FAMILIES:
        tabs = fam.family_tables(spec.product)
        if every or want & set(tabs.values()):
            plans.append(fam.plan_family(spec, seed, scale, rows_per_file))
    return plans


def generate(out: str, *, scale: float = 1.0, seed: int = 0, tables: list[str] | None = None,
             storage_options: dict | None = None, workers: int | None = None,
             progress: bool = True, rows_per_file: int = DEFAULT_ROWS_PER_FILE,
             compresslevel: int = 1, reference: bool = True, overwrite: bool = False) -> dict:
    """Write a deterministic mock 2MASS Extended Mission under ``out`` (local path or URL).

    Layout: ``irsa/<table>/<table>_aaa.gz ...`` (IRSA bulk text, ``|``/``\\N``, gzip with
    mtime 0), ``truth/*.parquet``, ``reference/{gaia_dr3,allwise}`` (HATS collections) and
    ``manifest.json``. The same ``seed``/``scale``/``rows_per_file`` give byte-identical bulk
    and truth files. ``tables`` restricts the IRSA tables written (all but fp_psc/fp_xsc by
    default). An existing non-empty ``out`` is refused unless ``overwrite``; with it a previous
    mock there is removed whole first (never mixed with the new one), anything else is refused.
    Returns the manifest.
    """
    if scale <= 0:
        raise ValueError("scale must be positive")
    schemas = {t: load_schema(t) for t in list_tables()}
    all_tables = [t for t, s in schemas.items() if s.product not in ("all-sky",)]
    want = set(tables) if tables else set(all_tables)
    unknown = want - set(list_tables())
    if unknown:
        raise KeyError(f"unknown tables: {sorted(unknown)}")
    so = storage_options or {}
    fs, root = fsspec.core.url_to_fs(out, **so)
    claim_output(fs, root, overwrite=overwrite, command="mock", directory=True,
                 owned=lambda: _is_mock(fs, root))
    plans = _plans(seed, scale, rows_per_file, want)
    tasks = []
    for p in plans:
        for ci in range(len(p.chunks)):
            tasks.append((p, ci))
    workers = workers or min(os.cpu_count() or 1, max(len(tasks), 1))
    results: list[ChunkResult] = []
    bar = _progress(len(tasks), progress)
    if workers <= 1 or len(tasks) <= 1:
        for g, (p, ci) in enumerate(tasks):
            results.append(run_chunk(p, ci, g, out, want, so, compresslevel))
            bar.update(1)
    else:
        with ProcessPoolExecutor(max_workers=workers, initializer=fam.preload_schemas,
                                 initargs=(schemas,)) as ex:
            futs = [ex.submit(run_chunk, p, ci, g, out, want, so, compresslevel)
                    for g, (p, ci) in enumerate(tasks)]
            for _ in as_completed(futs):
                bar.update(1)
            results = [f.result() for f in futs]
    bar.close()
    manifest_tables: dict[str, dict] = {}
    for r in results:
        for name, entry in r.files.items():
            files = manifest_tables.setdefault(name, {"files": []})["files"]
            if entry is not None:
                files.append(entry)
    families: dict[str, dict] = {}
    for p in plans:
        res = [r for r in results if r.family == p.spec.name]
        counts = np.sum([r.scan_counts for r in res], axis=0) if res else None
        scan_t, coadd_t = scan_tables(p, counts)
        for role, t in (("scan", scan_t), ("coadd", coadd_t)):
            name = p.tables.get(role)
            if name in want:
                manifest_tables[name] = {"files": _write_split(out, t, name, rows_per_file,
                                                               compresslevel, so)}
        deep = p.tables.get("deep")
        if deep and deep in want:
            dt, dmap = deep_tables(p)
            manifest_tables[deep] = {"files": _write_split(out, dt, deep, rows_per_file,
                                                           compresslevel, so)}
            write_parquet(dmap, fs, f"{root.rstrip('/')}/truth/deepcal_map.parquet")
        families[p.spec.name] = {
            "product": p.spec.product, "tables": p.tables, "chunks": len(p.chunks),
            "tiles": len(p.tiles), "scans": len(p.scans), "sources": int(p.n_src.sum()),
            "fields": [{"name": f.name, "ra": f.ra, "dec": f.dec, "tile": f.tile,
                        "documented": f.documented, "scans": int(np.diff(p.scans.tile_ptr)[i])}
                       for i, f in enumerate(p.fields)],
            "regions": [{"name": r.name, "ra_min": r.ra_min, "ra_max": r.ra_max,
                         "dec_min": r.dec_min, "dec_max": r.dec_max, "scan_len": r.scan_len,
                         "documented": r.documented} for r in p.regions],
        }
    proportions = {p.spec.name: {prefix: _proportion_entry(p, prefix, results) for prefix in ("pt", "ext")}
                   for p in plans}
    for name, t in assoc_tables(results).items():
        if name in want:
            manifest_tables[name] = {"files": _write_split(out, t, name, rows_per_file,
                                                           compresslevel, so)}
    for entry in manifest_tables.values():
        entry["rows"] = sum(f["rows"] for f in entry["files"])
    truth = {}
    for kind in ("sources", "detections", "moving", "gaia_map", "allwise_map"):
        truth[f"{kind}.parquet"] = _merge_parts(out, results, kind, f"truth/{kind}.parquet", so)
    refs = {}
    if reference and results:
        for name, kind, key in (("gaia_dr3", "gaia", "source_id"), ("allwise", "allwise", "cntr")):
            parts = [r.parts[kind] for r in results]
            rows = sum(r.parts_rows.get(kind, 0) for r in results)
            started = time.perf_counter()
            if progress:
                print(f"mock reference {name}: {rows:,} rows -> {out.rstrip('/')}/reference/{name} ...",
                      end="", flush=True)
            if rows > REFERENCE_IMPORT_ROWS:
                refs[name] = import_reference(out, name, parts, so, key, workers)
            else:
                refs[name] = write_reference(out, name, _read_parts(out, results, kind, so), so,
                                             key)
            refs[name]["rows"] = rows
            if progress:
                print(f" {time.perf_counter() - started:.1f} s", flush=True)
    if fs.exists(f"{root.rstrip('/')}/truth/_parts"):
        fs.rm(f"{root.rstrip('/')}/truth/_parts", recursive=True)
    manifest = {
        "generator": {"name": "tmass_lake.mock", "version": GENERATOR_VERSION},
        "seed": seed, "scale": scale, "rows_per_file": rows_per_file,
        "compresslevel": compresslevel,
        "tables": dict(sorted(manifest_tables.items())),
        "total_rows": sum(e["rows"] for e in manifest_tables.values()),
        "truth": truth, "reference": refs, "families": families, "proportions": proportions,
        "notes": NOTES,
    }
    write_text(fs, f"{root.rstrip('/')}/manifest.json", json.dumps(manifest, indent=1, sort_keys=True))
    return manifest


def _is_mock(fs: fsspec.AbstractFileSystem, root: str) -> bool:
    """A finished mock written before outputs were marked: its manifest names the generator."""
    path = f"{root.rstrip('/')}/manifest.json"
    try:
        manifest = read_json(fs, path) if fs.exists(path) else None
    except OSError:
        return False
    return isinstance(manifest, dict) and isinstance(manifest.get("generator"), dict) \
        and manifest["generator"].get("name") == "tmass_lake.mock"


def _proportion_entry(plan: fam.FamilyPlan, prefix: str, results: list[ChunkResult]) -> dict:
    """IRSA's groups : links : detections of a product beside what the run generated."""
    counts = [r.membership[prefix] for r in results if r.family == plan.spec.name]
    total = {k: sum(c[k] for c in counts) for k in counts[0]} if counts else {}
    mock = fam.Proportion(total.get("groups", 0), total.get("links", 0), total.get("detections", 0))
    return {"tables": {"groups": plan.tables[f"{prefix}_info"], "links": plan.tables[f"{prefix}_link"],
                       "detections": plan.tables[prefix]},
            "irsa": plan.proportions[prefix].as_dict(),
            "mock": mock.as_dict() | {k: total.get(k, 0) for k in
                                      ("unlinked", "multiply_linked", "extra_links")}}


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool):
    if not enabled:
        return _NoBar()
    # a bar only when generating takes a while, and only on a terminal (no bar lines in logs)
    return tqdm(total=total, desc="mock chunks", unit="chunk", delay=2.0, disable=None)
