"""Whole-lake rehearsal: the mock Extended Mission built with the packaged pipelines, table by table.

    python benchmarks/bench_lake.py --scale 24 --workdir DIR [--workers 2]

Generates the mock Extended Mission (``tmass-lake mock``; scale 1 is ~2.1 M rows in all, so
``--scale 24`` is ~50 M) once into ``DIR/mock`` (reused when its manifest says the same scale and
seed), then runs ``tmass-lake build all`` into ``DIR/lake`` on a local cluster of ``--workers``
and reads the lake's manifest: per table its rows, seconds, rows/s and share of the whole, next to
IRSA's row count (the schemas' ``rows``, from ``irsa_gator_catalogs.csv``). From each table's own
rate it projects the real lake (IRSA's counts) on the same workers. Peak memory of the build's
client and of its worker processes is sampled. Writes ``DIR/bench_lake.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from tmass_lake.schema import load_schema


class TreeMemory:
    """Peak RSS of a process and, separately, of its descendants (the Dask workers)."""

    def __init__(self, pid: int, interval: float = 0.2):
        self.pid, self.interval = pid, interval
        self.client = self.workers = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                proc = psutil.Process(self.pid)
                self.client = max(self.client, proc.memory_info().rss)
                for child in proc.children(recursive=True):
                    with contextlib.suppress(psutil.NoSuchProcess):
                        self.workers = max(self.workers, child.memory_info().rss)
            except psutil.NoSuchProcess:
                return
            time.sleep(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run(cmd: list[str]) -> tuple[float, TreeMemory]:
    """Run a command, echoing its output; its wall time and peak memory."""
    print("$", " ".join(cmd), flush=True)
    started = time.perf_counter()
    proc = subprocess.Popen(cmd)
    mem = TreeMemory(proc.pid)
    code = proc.wait()
    mem.stop()
    if code:
        sys.exit(f"{cmd[0]} {cmd[1]} failed with exit code {code}")
    return time.perf_counter() - started, mem


def mock_is_ready(root: Path, scale: float, seed: int) -> bool:
    manifest = root / "manifest.json"
    if not manifest.exists():
        return False
    doc = json.loads(manifest.read_text())
    return doc.get("scale") == scale and doc.get("seed") == seed


def irsa_rows(name: str) -> int | None:
    try:
        return load_schema(name).rows
    except Exception:  # derived and light-curve tables have no IRSA counterpart
        return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=float, default=24.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--memory-limit", default="6GiB")
    p.add_argument("--workdir", required=True)
    args = p.parse_args()
    work = Path(args.workdir)
    mock, lake = work / "mock", work / "lake"
    exe = str(Path(sys.executable).with_name("tmass-lake"))

    mock_seconds = None
    if not mock_is_ready(mock, args.scale, args.seed):
        shutil.rmtree(mock, ignore_errors=True)
        mock_seconds, _ = run([exe, "mock", str(mock), "--scale", str(args.scale), "--seed", str(args.seed),
                               "--workers", str(args.workers)])
    shutil.rmtree(lake, ignore_errors=True)
    wall, mem = run([exe, "build", "all", "--input", str(mock), "--output", str(lake), "--workers",
                     str(args.workers), "--memory-limit", args.memory_limit, "--quiet"])
    manifest = json.loads((lake / "manifest.json").read_text())
    tables = manifest["tables"]
    input_rows = sum(t["lines_read"] for t in tables.values() if t["inputs"])
    total_seconds = sum(t["lake_seconds"] for t in tables.values())
    known = {n: irsa_rows(n) for n in tables}
    irsa_total = sum(r for n, r in known.items() if r and tables[n]["inputs"])
    rows_out = []
    print(f"\nwhole lake: {input_rows:,} input rows in {len(tables)} tables, {wall:.0f} s wall "
          f"({input_rows / wall / 1e3:.0f} k rows/s); mock generated in "
          f"{'(reused)' if mock_seconds is None else f'{mock_seconds:.0f} s'}")
    print(f"peak memory: client {mem.client / 2**30:.2f} GiB, largest worker {mem.workers / 2**30:.2f} GiB\n")
    print(f"{'table':<22}{'rows':>13}{'share':>8}{'IRSA rows':>15}{'IRSA share':>11}"
          f"{'seconds':>9}{'time share':>11}{'k rows/s':>10}{'IRSA proj. h':>13}")
    projected = 0.0
    for name, t in sorted(tables.items(), key=lambda kv: -kv[1]["lake_seconds"]):
        rows = t["lines_read"] if t["inputs"] else t["rows"]
        rate = rows / t["lake_seconds"] if t["lake_seconds"] else float("nan")
        irsa = known[name] if t["inputs"] else None
        hours = irsa / rate / 3600 if irsa and rate == rate and rate > 0 else None
        projected += hours or 0.0
        rows_out.append({"table": name, "type": t["type"], "rows": rows, "seconds": t["lake_seconds"],
                         "rows_per_s": rate, "irsa_rows": irsa, "projected_hours": hours,
                         "partitions": t["partitions"], "bytes": t["bytes"]})
        print(f"{name:<22}{rows:>13,}{rows / input_rows:>8.1%}"
              f"{(f'{irsa:,}' if irsa else '-'):>15}{(f'{irsa / irsa_total:.1%}' if irsa else '-'):>11}"
              f"{t['lake_seconds']:>9.1f}{t['lake_seconds'] / total_seconds:>11.1%}{rate / 1e3:>10.0f}"
              f"{(f'{hours:.2f}' if hours else '-'):>13}")
    print(f"\nIRSA's {irsa_total:,} rows at each table's measured rate on {args.workers} workers: "
          f"{projected:.1f} h (derived catalogs, indexes and light curves scale with their sources; "
          f"see docs/scaling.md)")
    out = {"date": time.strftime("%Y-%m-%d"), "scale": args.scale, "workers": args.workers,
           "input_rows": input_rows, "wall_seconds": wall, "mock_seconds": mock_seconds,
           "peak_client_bytes": mem.client, "peak_worker_bytes": mem.workers, "irsa_rows": irsa_total,
           "projected_hours": projected, "tables": rows_out}
    (work / "bench_lake.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
