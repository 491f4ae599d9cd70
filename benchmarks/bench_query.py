"""Query benchmark: epoch-aware vs plain lsdb crossmatch, and light-curve throughput.

Builds (once, reused from ``--workdir``) a mock Extended Mission lake with the 6x and
calibration point tables, then on a local Dask cluster:

* crossmatches ``pt_src_6x2`` and ``pt_src_c`` with the mock Gaia DR3, epoch-aware
  (:class:`tmass_lake.lake.EpochCrossmatch`) and plain (lsdb's k-d tree), same radius, same
  catalogues; best of ``--repeat`` wall times after a warm-up (the first lsdb alignment JIT-compiles);
* builds the calibration light curves (nested detections + statistics) and compares detections/s
  with a plain pandas baseline: read the detections, ``groupby("gcntr")`` for per-band weighted
  means, chi-square and rms (no nesting, no motion fit, one process).

Usage: ``python benchmarks/bench_query.py [--scale 1.0] [--workers 2] [--workdir DIR]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from tmass_lake.cli.query import write_output
from tmass_lake.cluster import dask_client
from tmass_lake.convert import LakeArguments, build_lake, load_pipelines
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
    """The mock's 6x and calibration families into its lake."""
    pipelines = tuple(load_pipelines("6x") + load_pipelines("calibration"))
    with dask_client(workers=workers, memory_limit="2GiB") as client:
        build_lake(LakeArguments(pipelines=pipelines, input_roots=(str(env.mock),), output=str(env.lake),
                                 progress=False, report_plots=False), client)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scale", type=float, default=1.0, help="mock scale (1.0 ~ 1M WDB rows)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--radius", type=float, default=1.5)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--workdir", help="mock + lake directory, reused when present (default: a temp dir)")
    ns = p.parse_args()
    warnings.filterwarnings("ignore")
    work = Path(ns.workdir or tempfile.mkdtemp(prefix="tmass-lake-bench-"))
    t0 = time.perf_counter()
    env = mock_lake(work / f"scale{ns.scale:g}_seed{ns.seed}", lambda env: build(env, ns.workers),
                    scale=ns.scale, seed=ns.seed, workers=ns.workers)
    print(f"mock lake ready in {time.perf_counter() - t0:.1f} s: {env.lake}")
    lake = open_lake(str(env.lake))
    gaia = open_reference(str(env.reference("gaia_dr3")))
    rows = []
    with dask_client(workers=ns.workers, memory_limit="2GiB"):
        for table in ("pt_src_6x2", "pt_src_c"):
            def run(aware: bool, table: str = table) -> pd.DataFrame:
                x = lake.crossmatch(table, gaia, radius_arcsec=ns.radius, epoch_aware=aware,
                                    columns=["cntr", "jdate"], max_pm_mas_yr=300.0)
                return x.compute(progress_bar=False)

            run(True), run(False)  # warm-up: numba JIT of the pixel alignment, worker imports
            t_aware, aware = best_of(lambda run=run: run(True), ns.repeat)
            t_plain, plain = best_of(lambda run=run: run(False), ns.repeat)
            sa, sp = score_crossmatch(env, table, aware), score_crossmatch(env, table, plain)
            n = lake[table].hc_structure.catalog_info.total_rows
            rows.append((f"crossmatch {table} x gaia_dr3 ({n:,} rows)", t_plain, t_aware,
                         f"{t_aware / t_plain:.2f}x",
                         f"recall {sp.recall:.4f} -> {sa.recall:.4f}; >200 mas/yr {sp.fast_recall:.3f} -> "
                         f"{sa.fast_recall:.3f}"))
        lake.light_curves("calibration").compute(progress_bar=False)  # warm-up
        t_lc, lc = best_of(lambda: lake.light_curves("calibration").compute(progress_bar=False), ns.repeat)
        out = work / "bench_lightcurves"
        t_wr, _ = best_of(lambda: write_output(lake.light_curves("calibration"), str(out), "parquet", {},
                                               "lc"), ns.repeat)
    n_det = int(np.asarray(lc["detections"].array.list_lengths).sum())
    t_pd, (_, n_pd) = best_of(lambda: pandas_baseline(env.lake), ns.repeat)
    name = f"light curves calibration ({n_det:,} det, {len(lc):,} sources)"
    rows.append((f"{name}, to Parquet", t_pd, t_wr, f"{n_det / t_wr:,.0f} vs {n_pd / t_pd:,.0f} det/s",
                 "lake: nested + stats + motion fit, exactly the links; pandas: flat groupby stats"))
    rows.append((f"{name}, .compute()", t_pd, t_lc, f"{n_det / t_lc:,.0f} vs {n_pd / t_pd:,.0f} det/s",
                 "same, gathered into the client process"))
    print()
    print(f"{'benchmark':<66} {'baseline s':>10} {'lake API s':>10}  {'ratio / throughput':<28} notes")
    print("-" * 150)
    for name, base, ours, ratio, note in rows:
        print(f"{name:<66} {base:>10.2f} {ours:>10.2f}  {ratio:<28} {note}")
    print(f"\n(best of {ns.repeat}; {ns.workers} local workers; "
          "baseline = plain lsdb crossmatch / pandas groupby)")


if __name__ == "__main__":
    main()
