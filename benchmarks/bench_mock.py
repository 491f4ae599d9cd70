"""Throughput of the mock generator.

    python benchmarks/bench_mock.py --scale 1 --workers 2          # point tables only
    python benchmarks/bench_mock.py --scale 1 --workers 2 --full   # every table + truth + HATS

Reports rows/s of the point working-database tables (generation, formatting, gzip, truth parts)
and, with ``--full``, of the whole run (all IRSA tables, truth, reference catalogues).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time

from tmass_lake.mock import generate
from tmass_lake.schema import list_tables, load_schema


def _run(out: str, **kw) -> tuple[dict, float]:
    t0 = time.perf_counter()
    manifest = generate(out, progress=False, overwrite=True, **kw)
    return manifest, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--full", action="store_true", help="also time a complete run")
    ap.add_argument("--out", help="output directory (default: a temporary one, removed)")
    args = ap.parse_args(argv)
    root = args.out or tempfile.mkdtemp(prefix="bench_mock_")
    point = [t for t in list_tables() if load_schema(t).kind == "point_detections"
             and load_schema(t).product != "all-sky"]
    report: dict[str, object] = {"scale": args.scale, "workers": args.workers}
    try:
        m, dt = _run(os.path.join(root, "point"), scale=args.scale, seed=args.seed,
                     workers=args.workers, tables=point, reference=False)
        rows = sum(m["tables"][t]["rows"] for t in point)
        report["point"] = {"rows": rows, "seconds": round(dt, 2), "rows_per_s": round(rows / dt),
                           "bytes_gz": sum(f["bytes"] for t in point
                                           for f in m["tables"][t]["files"])}
        if args.full:
            m, dt = _run(os.path.join(root, "full"), scale=args.scale, seed=args.seed,
                         workers=args.workers)
            report["full"] = {"rows": m["total_rows"], "seconds": round(dt, 2),
                              "rows_per_s": round(m["total_rows"] / dt),
                              "per_table": {t: e["rows"] for t, e in m["tables"].items()}}
    finally:
        if not args.out:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
