"""Query benchmark: epoch-aware vs plain lsdb crossmatch, and light curves built, stored and read.

Builds (once, reused from ``--workdir``) a mock Extended Mission lake with the 6x and
calibration point tables and their light-curve collections, then on a local Dask cluster, in
one run:

* crossmatches ``pt_src_6x2`` and ``pt_src_c`` with the mock Gaia DR3, epoch-aware
  (:class:`tmass_lake.lake.EpochCrossmatch`, with the fast-mover table gathered before the
  partition tasks) and plain (lsdb's k-d tree), same radius, same catalogues; best of
  ``--repeat`` wall times after a warm-up (the first lsdb alignment JIT-compiles);
* builds the calibration light-curve collection (``cf_lightcurves``: nested detections,
  statistics, margin, index, metadata) and reports detections/s;
* reads the calibration light curves three ways: from the stored collection, joined on the fly
  (``stored=False``), and a flat pandas baseline (read the detections, ``groupby("gcntr")`` for
  per-band weighted means, chi-square and rms: no nesting, no motion fit, one process).

Targets (issue 13): build >= 1 M detections/s on 2 workers; collection read >= 5x faster than
the on-the-fly join and faster than the pandas baseline; epoch-aware crossmatch <= 1.5x plain.

Usage: ``python benchmarks/bench_query.py [--scale 0.3] [--workers 2] [--workdir DIR]``. Without
``--workdir`` everything is written to a temporary directory that is removed at the end.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from tmass_lake.cluster import dask_client
from tmass_lake.convert import LakeArguments, build_lake, load_pipelines
from tmass_lake.convert.lightcurves import LightCurveArguments, build_light_curves
from tmass_lake.lake import open_lake, open_reference
from tmass_lake.mock.scoring import MockLake, mock_lake, score_crossmatch

BANDS = ("j", "h", "k")


def best_of(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def pandas_baseline(lake_dir: Path) -> tuple[float, int]:
    """Seconds and detections for a flat pandas groupby light-curve summary of pt_src_c."""
    cols = ["gcntr", "jdate"] + [f"{b}_{s}" for b in BANDS for s in ("m", "msigcom")]
    t0 = time.perf_counter()
    df = pd.read_parquet(lake_dir / "pt_src_c" / "pt_src_c" / "dataset", columns=cols)
    df = df.astype({c: "float64" for c in cols if c != "gcntr"})
    parts = {"n": df.groupby("gcntr")["jdate"].size()}
    for b in BANDS:
        m, s = df[f"{b}_m"], df[f"{b}_msigcom"]
        ok = m.notna() & s.notna() & (s > 0)
        d = pd.DataFrame({"gcntr": df["gcntr"][ok], "w": 1 / s[ok] ** 2, "m": m[ok]})
        d["wm"] = d["w"] * d["m"]
        d["wm2"] = d["wm"] * d["m"]
        agg = d.groupby("gcntr").agg(w=("w", "sum"), wm=("wm", "sum"), wm2=("wm2", "sum"), n=("m", "size"),
                                     rms=("m", "std"))
        mean = agg["wm"] / agg["w"]
        parts[f"{b}_mean"] = mean
        parts[f"{b}_chi2dof"] = (agg["wm2"] - agg["w"] * mean**2) / (agg["n"] - 1).clip(lower=1)
        parts[f"{b}_rms"] = agg["rms"]
    out = pd.DataFrame(parts)
    return time.perf_counter() - t0, int(out["n"].sum())


def build(env: MockLake, workers: int) -> None:
    """The mock's 6x and calibration families into its lake (light-curve collections included)."""
    pipelines = tuple(load_pipelines("6x") + load_pipelines("calibration"))
    with dask_client(workers=workers, memory_limit="2GiB") as client:
        build_lake(LakeArguments(pipelines=pipelines, input_roots=(str(env.mock),), output=str(env.lake),
                                 progress=False, report_plots=False), client)


def detections(df: pd.DataFrame) -> int:
    return int(np.asarray(df["detections"].array.list_lengths).sum())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scale", type=float, default=0.3, help="mock scale (1.0 ~ 1M WDB rows)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--radius", type=float, default=1.5)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--workdir", help="mock + lake directory, kept and reused (default: a temporary "
                                     "directory, removed at the end)")
    ns = p.parse_args()
    warnings.filterwarnings("ignore")
    work = Path(ns.workdir) if ns.workdir else Path(tempfile.mkdtemp(prefix="tmass-lake-bench-"))
    try:
        run(ns, work)
    finally:
        if not ns.workdir:
            shutil.rmtree(work, ignore_errors=True)


def run(ns: argparse.Namespace, work: Path) -> None:
    t0 = time.perf_counter()
    env = mock_lake(work / f"scale{ns.scale:g}_seed{ns.seed}", lambda env: build(env, ns.workers),
                    scale=ns.scale, seed=ns.seed, workers=ns.workers)
    print(f"mock lake ready in {time.perf_counter() - t0:.1f} s: {env.lake}")
    lake = open_lake(str(env.lake))
    gaia = open_reference(str(env.reference("gaia_dr3")))
    rows = []
    with dask_client(workers=ns.workers, memory_limit="2GiB") as client:
        for table in ("pt_src_6x2", "pt_src_c"):
            def match(aware: bool, fast: bool = True, table: str = table) -> pd.DataFrame:
                x = lake.crossmatch(table, gaia, radius_arcsec=ns.radius, epoch_aware=aware,
                                    columns=["cntr", "jdate"], fast_movers=fast, margin_policy="ignore")
                return x.compute(progress_bar=False)

            match(True), match(False)  # warm-up: numba JIT of the pixel alignment, worker imports
            t_aware, aware = best_of(lambda match=match: match(True), ns.repeat)
            t_plain, plain = best_of(lambda match=match: match(False), ns.repeat)
            t_edge, _ = best_of(lambda match=match: match(True, fast=False), ns.repeat)
            sa, sp = score_crossmatch(env, table, aware), score_crossmatch(env, table, plain)
            n = lake[table].hc_structure.catalog_info.total_rows
            rows.append((f"crossmatch {table} x gaia_dr3 ({n:,} rows)", f"{t_plain:.2f} s (lsdb)",
                         f"{t_aware:.2f} s", f"{t_aware / t_plain:.2f}x (<= 1.5x)",
                         f"recall {sp.recall:.4f} -> {sa.recall:.4f}; >200 mas/yr {sp.fast_recall:.3f} -> "
                         f"{sa.fast_recall:.3f}; without the fast-mover table {t_edge / t_plain:.2f}x"))

        out = work / "bench_build"

        def build_collection() -> dict:
            shutil.rmtree(out, ignore_errors=True)
            return build_light_curves(LightCurveArguments(
                info="cf_info", lake=str(env.lake), output=str(out / "cf_lightcurves"),
                scratch=str(out / "scratch"), name="cf_lightcurves", progress=False), client)

        build_collection()  # warm-up: worker imports
        t_build, report = best_of(build_collection, ns.repeat)
        shutil.rmtree(out, ignore_errors=True)
        n_det = report["detections"]
        stages = ", ".join(f"{k} {v:.2f} s" for k, v in report["stage_seconds"].items())
        rows.append((f"light-curve build, calibration ({n_det:,} det, {report['rows_written']:,} sources)",
                     "", f"{t_build:.2f} s", f"{n_det / t_build / 1e6:.2f} M det/s (>= 1)",
                     f"catalog, margin, gcntr index, metadata; last run: {stages}"))

        def stored() -> pd.DataFrame:
            return lake.light_curves("calibration", stored=True).compute(progress_bar=False)

        def joined() -> pd.DataFrame:
            return lake.light_curves("calibration", stored=False).compute(progress_bar=False)

        stored(), joined()  # warm-up
        t_stored, lc = best_of(stored, ns.repeat)
        t_join, _ = best_of(joined, ns.repeat)
    t_pd, (_, n_pd) = best_of(lambda: pandas_baseline(env.lake), ns.repeat)
    n_det = detections(lc)
    rows.append((f"light curves calibration, read ({n_det:,} det)", f"{t_join:.2f} s (join)",
                 f"{t_stored:.2f} s", f"{t_join / t_stored:.1f}x faster (>= 5x)",
                 f"{n_det / t_stored / 1e6:.2f} M det/s from cf_lightcurves vs {n_det / t_join / 1e6:.2f} "
                 "on the fly"))
    rows.append((f"light curves calibration, read vs pandas ({n_pd:,} det)", f"{t_pd:.2f} s (pandas)",
                 f"{t_stored:.2f} s", f"{t_pd / t_stored:.2f}x faster (> 1x)",
                 f"{n_pd / t_pd / 1e6:.2f} M det/s flat groupby (8 columns, means/chi2/rms only)"))
    print()
    print(f"{'benchmark':<62} {'baseline':>15} {'lake API':>9}  {'ratio / throughput':<26} notes")
    print("-" * 160)
    for name, base, ours, ratio, note in rows:
        print(f"{name:<62} {base:>15} {ours:>9}  {ratio:<26} {note}")
    print(f"\n(best of {ns.repeat}; {ns.workers} local workers; mock scale {ns.scale:g})")


if __name__ == "__main__":
    main()
