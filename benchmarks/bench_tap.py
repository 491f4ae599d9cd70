"""TAP harvest benchmark: tmass-lake's chunked harvest vs one plain pyvo query of the same rows, in one run.

    python benchmarks/bench_tap.py [--scale 0.4] [--table pt_src_c] [--chunk-rows 12000] [--workers 2]
                                   [--concurrency 4] [--sync-rows 100000]

Loads a mock table into GAVO DaCHS on loopback (the test suite's helper, ``tests/tap_server.py``;
needs the Debian package gavodachs2-server and a running PostgreSQL), then times on the same
machine (1) one async pyvo query of every row (``SELECT`` of the schema's columns, BINARY2
VOTable, parsed to an astropy table: what a user does by hand), (2) tmass-lake's harvest of the
same rows: chunks on the key, one Dask task per chunk, at most ``--concurrency`` queries in
flight, parsed into spill runs, and (3) the whole build from the service (harvest, partitioning,
HATS files). Prints rows/s.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pyvo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from tap_server import (  # noqa: E402
    INPUTS,
    RESOURCE,
    DachsServer,
    dachs_missing_reason,
    served_table,
    write_resource,
)

from tmass_lake.cluster import dask_client  # noqa: E402
from tmass_lake.convert import build_table, resolve_parameters, table_arguments  # noqa: E402
from tmass_lake.mock import generate  # noqa: E402
from tmass_lake.readers.tap import identifier  # noqa: E402
from tmass_lake.schema import load_schema  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", default="pt_src_c")
    p.add_argument("--scale", type=float, default=0.4, help="mock scale (0.4: ~126k pt_src_c rows)")
    p.add_argument("--chunk-rows", type=int, default=12_000)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--sync-rows", type=int, default=100_000, help="larger chunks run as async jobs")
    p.add_argument("--workers", type=int, default=2)
    ns = p.parse_args()
    if reason := dachs_missing_reason():
        sys.exit(f"bench_tap: {reason}")
    work = Path(tempfile.mkdtemp(prefix="bench_tap_"))
    schema = load_schema(ns.table)
    server = DachsServer(work, hard_maxrec=100_000_000)
    server.lock()
    try:
        generate(str(work / "mock"), scale=ns.scale, seed=3, tables=[ns.table], reference=False,
                 progress=False)
        table = served_table(schema, sorted((work / "mock" / "irsa" / ns.table).glob("*.gz")))
        server.import_resource(write_resource([table]), [table])
        server.start()
        results = run(server, schema, table.qualified, ns, work)
    finally:
        server.stop()
        server.dachs("drop", "q", cwd=INPUTS / RESOURCE)
        shutil.rmtree(INPUTS / RESOURCE, ignore_errors=True)
        server.close()
        shutil.rmtree(work, ignore_errors=True)
    rows = results[0][1]
    print(f"\n{ns.table}: {rows:,} rows x {len(schema.columns)} columns from DaCHS on loopback, "
          f"{ns.workers} worker(s), chunks of {ns.chunk_rows:,} rows, {ns.concurrency} in flight\n")
    print(f"| {'what':<48} | {'rows':>9} | {'seconds':>8} | {'rows/s':>8} | {'vs pyvo':>7} |")
    print(f"|{'-' * 50}|{'-' * 11}|{'-' * 10}|{'-' * 10}|{'-' * 9}|")
    base = results[0][1] / results[0][2]
    for what, n, seconds in results:
        rate = n / seconds
        print(f"| {what:<48} | {n:>9,} | {seconds:>8.1f} | {rate:>8,.0f} | {rate / base:>6.2f}x |")


def run(server: DachsServer, schema, qualified: str, ns: argparse.Namespace, work: Path) -> list:
    service = pyvo.dal.TAPService(server.url)
    started = time.perf_counter()
    columns = ", ".join(identifier(c) for c in schema.names)  # the columns the harvest reads
    job = service.run_async(f"SELECT {columns} FROM {qualified}", maxrec=10**9,
                            RESPONSEFORMAT="application/x-votable+xml;serialization=BINARY2")
    rows = len(job.to_table())
    plain = time.perf_counter() - started
    params = resolve_parameters({"tap_chunk_rows": ns.chunk_rows, "tap_concurrency": ns.concurrency,
                                 "tap_sync_rows": ns.sync_rows})
    with dask_client(workers=ns.workers, memory_limit="4GiB") as client:
        args = table_arguments(schema, ["tap+" + server.url], str(work / "lake"), params=params,
                               progress=False)
        started = time.perf_counter()
        report = build_table(args, client)
        build = time.perf_counter() - started
    stage = report["stage_seconds"].get("map") or report["stage_seconds"]["convert"]
    mode = "sync" if ns.chunk_rows <= ns.sync_rows else "async"
    assert report["rows_written"] == rows, (report["rows_written"], rows)
    return [("one plain pyvo query (async, BINARY2)", rows, plain),
            (f"harvest: {report['tap']['chunks']} {mode} chunk queries into spill runs", rows, stage),
            ("whole build from the service (harvest + HATS)", rows, build)]


if __name__ == "__main__":
    main()
