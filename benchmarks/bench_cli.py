"""Wall time of small command-line jobs on the demo lake, as a user sees them.

    python benchmarks/bench_cli.py --workdir DIR          # DIR/lake and DIR/mock from `tmass-lake demo DIR`
    python benchmarks/bench_cli.py --workdir DIR --repeat 3 --json out.json
    python benchmarks/bench_cli.py --workdir DIR --baseline-src /tmp/base/src   # before/after, interleaved

Each command runs as a fresh ``python -m tmass_lake`` process (imports, cluster start and numba
compilation included, as from a shell); the figure is the best of ``--repeat`` runs. With
``--baseline-src`` (the ``src`` directory of another checkout, e.g. ``git archive`` of the base
commit) each run of the current code follows a run of that code, so both see the same load. The demo
lake is made first when ``DIR/lake`` is missing. Targets: ``--help`` <= 1 s, ``info`` <= 3 s,
``crossmatch`` and ``lightcurves`` <= 10 s, a build of one 10k-row file <= 10 s. The machine's load
average is printed with the figures (a loaded machine is slower).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {"--help": 1.0, "info": 3.0, "crossmatch": 10.0, "lightcurves": 10.0, "build 10k rows": 10.0}


def _cli() -> list[str]:
    return [sys.executable, "-m", "tmass_lake"]


def ten_k_file(mock: Path, out: Path, rows: int = 10_000) -> Path:
    """The first ``rows`` lines of the mock's pt_src_6x2 bulk file, gzipped."""
    src = next((mock / "irsa" / "pt_src_6x2").glob("*.gz"))
    out.mkdir(parents=True, exist_ok=True)
    dest = out / "pt_src_6x2_10k.gz"
    with gzip.open(src, "rt") as f:
        lines = [line for _, line in zip(range(rows), f, strict=False)]
    with gzip.open(dest, "wt") as f:
        f.writelines(lines)
    return dest


def commands(work: Path, scratch: Path) -> dict[str, list[str]]:
    lake, mock = work / "lake", work / "mock"
    return {
        "--help": ["--help"],
        "info": ["info", str(lake)],
        "crossmatch": ["crossmatch", "--lake", str(lake), "--table", "pt_src_6x2_cat",
                       "--with", str(mock / "reference" / "gaia_dr3"),
                       "--output", str(scratch / "x.parquet")],
        "lightcurves": ["lightcurves", "--lake", str(lake), "--product", "calibration",
                        "--output", str(scratch / "lc.parquet")],
        "build 10k rows": ["build", "--table", "pt_src_6x2", "--input",
                           str(ten_k_file(mock, scratch / "in")), "--output", str(scratch / "built")],
    }


def time_once(args: list[str], scratch: Path, src: str | None = None) -> tuple[float, int, str]:
    for leftover in ("x.parquet", "lc.parquet", "built"):  # outputs of the previous run
        p = scratch / leftover
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    t0 = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=src) if src else None
    proc = subprocess.run([*_cli(), *args], capture_output=True, text=True, env=env)
    return time.perf_counter() - t0, proc.returncode, (proc.stderr or proc.stdout).strip()[-300:]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True, help="the demo's output directory (made if missing)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per command, best kept (default 3)")
    ap.add_argument("--only", nargs="+", choices=list(TARGETS), help="time only these commands")
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--baseline-src", help="also time the code under this src/ directory, interleaved")
    args = ap.parse_args(argv)
    work = Path(args.workdir)
    if not (work / "lake").exists():
        subprocess.run([*_cli(), "demo", str(work), "-q"], check=True)
    scratch = Path(tempfile.mkdtemp(prefix="bench_cli_"))
    report: dict[str, dict] = {}
    try:
        for name, cmd in commands(work, scratch).items():
            if args.only and name not in args.only:
                continue
            runs, base, loads = [], [], []
            for _ in range(args.repeat):
                loads.append(os.getloadavg()[0])
                for src, into in ((args.baseline_src, base), (None, runs)):
                    if into is base and not src:
                        continue
                    seconds, rc, tail = time_once(cmd, scratch, src)
                    if rc != 0:
                        print(f"{name}{' (baseline)' if src else ''}: exit {rc}: {tail}", file=sys.stderr)
                        return 1
                    into.append(seconds)
            report[name] = {"best_s": round(min(runs), 2), "runs_s": [round(r, 2) for r in runs],
                            "target_s": TARGETS[name], "load_1min": round(sum(loads) / len(loads), 2)}
            if base:
                report[name] |= {"baseline_best_s": round(min(base), 2),
                                 "baseline_runs_s": [round(r, 2) for r in base]}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"{'command':<16} {'before s' if args.baseline_src else '':>8} {'best s':>7} {'target':>7}  "
          f"{'load':>5}  runs")
    for name, r in report.items():
        ok = "ok" if r["best_s"] <= r["target_s"] else "SLOW"
        before = f"{r['baseline_best_s']:>8.2f}" if "baseline_best_s" in r else f"{'':>8}"
        print(f"{name:<16} {before} {r['best_s']:>7.2f} {r['target_s']:>6.0f}s  {r['load_1min']:>5.2f}  "
              f"{' '.join(f'{x:.2f}' for x in r['runs_s'])}  {ok}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
