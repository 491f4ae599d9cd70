"""``tmass-lake demo DIR``: mock Extended Mission → lake on a local Dask cluster → queries → summary.

The same steps a user takes by hand, in one command: generate the mock, build every pipeline
into one lake, crossmatch 6x detections with the mock Gaia DR3 (epoch-aware and plain), build
calibration light curves, plot one, and say where everything is.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np

from tmass_lake.cluster import dask_client
from tmass_lake.convert import LakeArguments, build_lake, load_pipelines
from tmass_lake.convert.pipelines import ALL
from tmass_lake.lake import open_lake, plot_light_curve
from tmass_lake.mock import generate


def run_demo(out: str, *, scale: float = 0.05, seed: int = 0, workers: int | None = None,
             memory_limit: str = "3GiB") -> dict:
    """Run the whole demo under ``out`` (cleared first); returns the summary it prints."""
    root = Path(out).resolve()
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    mock, lake_dir = root / "mock", root / "lake"
    summary: dict = {}

    t0 = time.time()
    print(f"[1/4] mock Extended Mission (scale {scale}, seed {seed}) -> {mock}")
    manifest = generate(str(mock), scale=scale, seed=seed, workers=workers)
    summary["mock_rows"] = sum(t["rows"] for t in manifest["tables"].values())
    summary["mock_seconds"] = round(time.time() - t0, 1)

    with dask_client(workers=workers, memory_limit=memory_limit) as client:
        t0 = time.time()
        print(f"[2/4] building every pipeline into {lake_dir} on a local Dask cluster "
              f"({len(client.scheduler_info()['workers'])} workers)")
        args = LakeArguments(pipelines=tuple(load_pipelines(ALL)), input_roots=(str(mock),),
                             output=str(lake_dir))
        lake_manifest = build_lake(args, client)
        summary["lake_tables"] = lake_manifest["totals"]["tables"]
        summary["lake_rows"] = lake_manifest["totals"]["rows"]
        summary["lake_seconds"] = round(time.time() - t0, 1)

        lake = open_lake(str(lake_dir))
        gaia = str(mock / "reference" / "gaia_dr3")
        t0 = time.time()
        print("[3/4] crossmatch pt_src_6x2 with the mock Gaia DR3 (1\", proper motion to each 2MASS epoch)")
        aware = lake.crossmatch("pt_src_6x2", gaia, radius_arcsec=1.0).compute()
        plain = lake.crossmatch("pt_src_6x2", gaia, radius_arcsec=1.0, epoch_aware=False).compute()
        detections = len(lake.open("pt_src_6x2", columns=["cntr"]).compute())
        summary["crossmatch"] = {"detections": detections, "epoch_aware_matches": len(aware),
                                 "plain_matches": len(plain), "seconds": round(time.time() - t0, 1)}

        t0 = time.time()
        print("[4/4] calibration light curves: pt_src_c detections nested under cf_info merged sources")
        curves = lake.light_curves("calibration").compute()
        epochs = curves["n_epochs"].to_numpy() if len(curves) else np.zeros(0)
        summary["lightcurves"] = {
            "sources": len(curves), "detections": int(np.sum(epochs)),
            "max_epochs": int(np.max(epochs)) if len(curves) else 0,
            "variable_candidates": int(curves["is_variable"].sum()),
            "moving_candidates": int(curves["is_moving"].sum()),
            "seconds": round(time.time() - t0, 1),
        }
        if len(curves):
            pick = curves.sort_values("var_log10_p").iloc[[0]]
            png = root / f"lightcurve_{int(pick['gcntr'].iloc[0])}.png"
            plot_light_curve(pick, path=str(png))
            summary["lightcurve_png"] = str(png)
    report_dir = lake_dir / "report"
    summary["report"] = str(report_dir / "report.txt")
    summary["card"] = str(report_dir / "index.html")
    headline = json.loads((report_dir / "report.json").read_text()).get("headline_plots", [])
    summary["plots"] = [str(report_dir / p) for p in headline]  # the plots that matter, rows.png first
    _print(summary, lake_dir)
    return summary


def _print(s: dict, lake_dir: Path) -> None:
    xm, lc = s["crossmatch"], s["lightcurves"]
    print("\n== tmass-lake demo summary ==")
    print(f"mock:        {s['mock_rows']:,} rows in IRSA bulk format ({s['mock_seconds']} s)")
    print(f"lake:        {s['lake_tables']} tables, {s['lake_rows']:,} rows -> {lake_dir} "
          f"({s['lake_seconds']} s)")
    print(f"crossmatch:  {xm['detections']:,} 6x detections; {xm['epoch_aware_matches']:,} Gaia matches "
          f"epoch-aware vs {xm['plain_matches']:,} plain at 1\" ({xm['seconds']} s)")
    print(f"lightcurves: {lc['sources']:,} calibration sources, {lc['detections']:,} detections "
          f"(up to {lc['max_epochs']:,} epochs each); {lc['variable_candidates']} variable and "
          f"{lc['moving_candidates']} moving candidates ({lc['seconds']} s)")
    if "lightcurve_png" in s:
        print(f"light curve: {s['lightcurve_png']}")
    print(f"lake card:   {Path(s['card']).as_uri()}  (open it in a browser: tables, columns, plots)")
    print(f"report:      {s['report']}")
    for p in s["plots"]:
        print(f"plot:        {p}")
