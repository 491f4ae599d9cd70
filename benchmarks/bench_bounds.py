"""Hostile inputs under a 2 GiB worker: a 3 GiB line, 2 GiB of newlines, a 3 GiB VOTable.

    python benchmarks/bench_bounds.py --workdir DIR [--gib-line 3] [--gib-newlines 2] [--gib-votable 3]

Writes each input gzip'd into ``DIR`` (a few MB each on disk), then runs ``tmass-lake build
--table pt_src_6x2`` on it with one local worker at ``--memory-limit 2GiB`` and ``tmass-lake
inspect`` on it, sampling the peak RSS of the client and of the worker process. A long line must
be quarantined by its head and length, the newlines counted as runs, the VOTable refused: each
build ends with exit 0 (the bad lines in the quarantine) or 2 (one error line), never a killed
worker. Writes ``DIR/bench_bounds.json``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench_lake import TreeMemory

GIB = 1 << 30
CHUNK = 64 << 20
TABLE = "pt_src_6x2"


def write_gz(path: Path, head: bytes, fill: bytes, size: int, tail: bytes) -> None:
    """``head``, ``size`` bytes of ``fill`` repeated, ``tail``; gzip'd level 1, streamed."""
    block = fill * (CHUNK // len(fill))
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(head)
        left = size
        while left > 0:
            f.write(block[:left])
            left -= len(block)
        f.write(tail)


def good_line() -> bytes:
    """One valid pt_src_6x2 bulk line (from the test suite's synthetic table)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import bulk_lines  # noqa: PLC0415 - the tests' generator, only for this script

    from tmass_lake.schema import load_schema  # noqa: PLC0415

    return bulk_lines(load_schema(TABLE), 1, seed=1)[0]


def run(cmd: list[str]) -> tuple[float, TreeMemory, int, str]:
    """Run a command: its wall time, peak memory, exit status and last line of stderr."""
    print("$", " ".join(cmd), flush=True)
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    mem = TreeMemory(proc.pid, interval=0.05)
    _, err = proc.communicate()
    mem.stop()
    return time.perf_counter() - started, mem, proc.returncode, (err.strip().splitlines() or [""])[-1][:300]


def votable_head() -> bytes:
    return (b'<?xml version="1.0"?>\n<VOTABLE version="1.4" xmlns="http://www.ivoa.net/xml/VOTable/v1.3">'
            b'<RESOURCE><TABLE><FIELD name="cntr" datatype="long"/><DATA><TABLEDATA>\n')


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--gib-line", type=float, default=3.0)
    ap.add_argument("--gib-newlines", type=float, default=2.0)
    ap.add_argument("--gib-votable", type=float, default=3.0)
    ap.add_argument("--memory-limit", default="2GiB")
    ns = ap.parse_args(argv)
    work = Path(ns.workdir)
    work.mkdir(parents=True, exist_ok=True)
    exe = str(Path(sys.executable).with_name("tmass-lake"))
    line = good_line()
    cases = {
        "long_line": (line, b"X", int(ns.gib_line * GIB), b"\n" + line),
        "newlines": (line, b"\n", int(ns.gib_newlines * GIB), line),
        "votable": (votable_head(), b"<TR><TD>1</TD></TR>\n", int(ns.gib_votable * GIB),
                    b"</TABLEDATA></DATA></TABLE></RESOURCE></VOTABLE>\n"),
    }
    results = {}
    for name, (head, fill, size, tail) in cases.items():
        src = work / name / "irsa" / TABLE / f"{TABLE}_aaa.gz"
        src.parent.mkdir(parents=True, exist_ok=True)
        if not src.exists():
            t0 = time.time()
            write_gz(src, head, fill, size, tail)
            print(f"{name}: {size / GIB:.1f} GiB -> {src.stat().st_size / 2**20:.1f} MiB gzip'd "
                  f"({time.time() - t0:.0f} s)", flush=True)
        out = work / name / "out"
        build = [exe, "build", "--table", TABLE, "--input", str(src), "--output", str(out), "--workers", "1",
                 "--memory-limit", ns.memory_limit, "--quiet"]
        if out.exists():
            shutil.rmtree(out)  # this script's own output of an earlier run
        wall, mem, code, said = run(build)
        wall_i, mem_i, code_i, said_i = run([exe, "inspect", str(src), "--table", TABLE])
        report = out / "build_report.json"
        counts = ("lines_read", "rows_written", "rows_quarantined")
        results[name] = {
            "input_bytes": size, "build_exit": code, "build_stderr": said, "build_seconds": round(wall, 1),
            "build_peak_client_mib": round(mem.client / 2**20),
            "build_peak_worker_mib": round(mem.workers / 2**20),
            "inspect_exit": code_i, "inspect_stderr": said_i, "inspect_seconds": round(wall_i, 1),
            "inspect_peak_mib": round(mem_i.client / 2**20),
            "report": ({k: v for k, v in json.loads(report.read_text()).items() if k in counts}
                       if report.exists() else None),
        }
        print(json.dumps({name: results[name]}, indent=1), flush=True)
    (work / "bench_bounds.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
