"""``tmass-lake demo DIR``: mock Extended Mission → lake on a local Dask cluster → queries → summary.

The same steps a user takes by hand, in one command: generate the mock, build every pipeline
into one lake, crossmatch 6x detections with the mock Gaia DR3 (epoch-aware and plain), build
calibration light curves, plot one, and say where everything is.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from tmass_lake.cluster import dashboard_url, dask_client
from tmass_lake.convert import LakeArguments, build_lake, load_pipelines
from tmass_lake.convert.pipelines import ALL
from tmass_lake.errors import UserError
from tmass_lake.lake import open_lake, plot_light_curve
from tmass_lake.mock import generate
from tmass_lake.storage import OUTPUT_MARK, filesystem, mark_output


def run_demo(out: str, *, scale: float = 0.05, seed: int = 0, workers: int | None = None,
             memory_limit: str = "3GiB", progress: bool = True, dashboard: str | None = None) -> dict:
    """Run the whole demo under ``out``; returns the summary it prints.

    ``out`` must be missing, empty or a previous demo's output (whose entries are replaced);
    a directory holding anything the demo does not write is refused, untouched.
    ``progress=False`` prints only the summary; ``dashboard`` (``HOST:PORT``) serves Dask's
    dashboard on the demo's cluster and prints its URL.
    """
    say = print if progress else _silent
    root = Path(out).resolve()
    clear_previous_demo(root)
    mock, lake_dir = root / "mock", root / "lake"
    summary: dict = {}

    t0 = time.time()
    say(f"[1/4] mock Extended Mission (scale {scale}, seed {seed}) -> {mock}")
    manifest = generate(str(mock), scale=scale, seed=seed, workers=workers, progress=progress)
    summary["mock_rows"] = sum(t["rows"] for t in manifest["tables"].values())
    summary["mock_seconds"] = round(time.time() - t0, 1)

    t0 = time.time()
    say(f"[2/4] building every pipeline into {lake_dir}; starting a local Dask cluster of "
        f"{workers or os.cpu_count() or 1} worker processes ...")
    with dask_client(workers=workers, memory_limit=memory_limit, dashboard=dashboard) as client:
        say(f"      cluster ready ({time.time() - t0:.1f} s)")
        if dashboard is not None:
            print(f"Dask dashboard: {dashboard_url(client, dashboard)}", flush=True)
        t0 = time.time()
        args = LakeArguments(pipelines=tuple(load_pipelines(ALL)), input_roots=(str(mock),),
                             output=str(lake_dir), progress=progress, echo=say)
        lake_manifest = build_lake(args, client)
        summary["lake_tables"] = lake_manifest["totals"]["tables"]
        summary["lake_rows"] = lake_manifest["totals"]["rows"]
        summary["lake_seconds"] = round(time.time() - t0, 1)

        lake = open_lake(str(lake_dir))
        gaia = str(mock / "reference" / "gaia_dr3")
        t0 = time.time()
        say("[3/4] crossmatch pt_src_6x2 with the mock Gaia DR3 (1\", proper motion to each 2MASS epoch)")
        aware = lake.crossmatch("pt_src_6x2", gaia, radius_arcsec=1.0).compute(progress_bar=False)
        plain = lake.crossmatch("pt_src_6x2", gaia, radius_arcsec=1.0,
                                epoch_aware=False).compute(progress_bar=False)
        detections = len(lake.open("pt_src_6x2", columns=["cntr"]).compute(progress_bar=False))
        summary["crossmatch"] = {"detections": detections, "epoch_aware_matches": len(aware),
                                 "plain_matches": len(plain), "seconds": round(time.time() - t0, 1)}

        t0 = time.time()
        say("[4/4] calibration light curves: pt_src_c detections nested under cf_info merged sources")
        curves = lake.light_curves("calibration").compute(progress_bar=False)
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


DEMO_ENTRIES = ("mock", "lake", OUTPUT_MARK)  # and lightcurve_<gcntr>.png


def clear_previous_demo(root: Path) -> None:
    """Make ``root`` an empty directory marked as the demo's, removing only a previous demo's entries.

    Refused (``UserError``) when ``root`` is a file, or a non-empty directory the demo did not
    create, or one holding anything the demo does not write: nothing there is touched.
    """
    if root.exists() and not root.is_dir():
        raise UserError(f"{root} is a file, not a directory: the demo needs a directory of its own")
    entries = sorted(root.iterdir()) if root.exists() else []
    if entries:
        if not (root / OUTPUT_MARK).is_file():
            raise UserError(f"{root} is not empty and was not written by tmass-lake demo: nothing is "
                            "removed; give a new or empty directory")
        foreign = [p.name for p in entries if p.name not in DEMO_ENTRIES
                   and not (p.name.startswith("lightcurve_") and p.name.endswith(".png"))]
        if foreign:
            raise UserError(f"{root} holds {', '.join(foreign[:5])}"
                            f"{' ...' if len(foreign) > 5 else ''}, which the demo did not write: "
                            "nothing is removed; move it or give another directory")
        for p in entries:
            if p.name != OUTPUT_MARK:
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    fs, path = filesystem(str(root))
    mark_output(fs, path, "demo")


def _silent(*_: object, **__: object) -> None:
    """``print`` when the demo runs quietly."""


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
