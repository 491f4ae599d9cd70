"""Compression-level benchmark: zstd level vs write time, bytes and partition read time.

    python benchmarks/bench_compression.py [--rows 500000] [--levels 1 3 9 15] [--repeat 3]

Builds one partition-sized table of mock ``--table`` rows the way a build does (our bulk
parser, ``_healpix_29``, sorted), then for each zstd level writes it with the build's own
Parquet settings (``write_partition``: hats' per-column encodings, sorted, our footer) and times,
best of ``--repeat``: the write (wall and the thread's CPU time); a full read of the file from
local disk (decoding alone); a full read and a three-column read (``ra``, ``dec``, ``j_m``) from
an S3 object store (moto's server in its own process on loopback, read with s3fs + pyarrow).
``at 100 MB/s`` adds the transfer time of the file's bytes at 100 MB/s to the local read: what a
remote reader on a modest link waits.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import s3fs

from tmass_lake.convert.map import with_healpix
from tmass_lake.convert.writer import write_partition
from tmass_lake.mock import generate
from tmass_lake.readers import expand_inputs, read_bulk
from tmass_lake.schema import load_schema

BUCKET = "bench-compression"


def best(fn, repeat: int, clock=time.perf_counter) -> float:
    """The fastest of ``repeat`` calls of ``fn`` by ``clock`` (wall, or the thread's CPU time)."""
    times = []
    for _ in range(repeat):
        started = clock()
        fn()
        times.append(clock() - started)
    return min(times)


def partition(work: Path, table: str, rows: int, seed: int) -> pa.Table:
    """About ``rows`` mock rows parsed, indexed and sorted as a build's partition is."""
    schema = load_schema(table)
    generate(str(work / "mock"), scale=rows / 210_000 * 0.5 * 1.1, seed=seed, tables=[table],
             progress=False, reference=False)  # scale 0.5: ~210 k rows of pt_src_rej
    files = expand_inputs([str(work / "mock" / "irsa" / table)])
    blocks = [b.table for f in files for b in read_bulk(f, schema)]
    t = with_healpix(pa.concat_tables(blocks), schema.ra_column, schema.dec_column).slice(0, rows)
    return t.take(np.argsort(t.column(0).to_numpy(), kind="stable")).combine_chunks()


def moto(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1).close()
            return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("moto server did not start") from None
            time.sleep(0.1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=500_000)
    p.add_argument("--levels", type=int, nargs="+", default=[1, 3, 9, 15])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--table", default="pt_src_rej")
    p.add_argument("--seed", type=int, default=1)
    ns = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_compression_"))
    port = free_port()
    server = moto(port)
    try:
        t = partition(work, ns.table, ns.rows, ns.seed)
        fs = s3fs.S3FileSystem(endpoint_url=f"http://127.0.0.1:{port}", key="testing", secret="testing",
                               use_listings_cache=False)
        fs.mkdir(BUCKET)
        print(f"{t.num_rows:,} rows of {ns.table} ({t.nbytes / 2**20:,.0f} MiB in Arrow), "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average {os.getloadavg()}\n")
        print("| zstd level | write s | write CPU s | MiB | vs level 3 | local read s | S3 (moto) read s | "
              "S3 read 3 columns s | at 100 MB/s s | load 1-min |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        rows = {}
        for level in ns.levels:
            local = work / f"level{level}.parquet"
            write = best(lambda lv=level, f=local: write_partition(t, str(f), compression_level=lv),
                         ns.repeat)
            write_cpu = best(lambda lv=level, f=local: write_partition(t, str(f), compression_level=lv),
                             ns.repeat, time.thread_time)
            nbytes = local.stat().st_size
            remote = f"{BUCKET}/level{level}.parquet"
            fs.put_file(str(local), remote)
            read_local = best(lambda f=local: pq.read_table(f), ns.repeat)
            read_s3 = best(lambda r=remote: pq.read_table(r, filesystem=fs), ns.repeat)
            read_cols = best(lambda r=remote: pq.read_table(r, filesystem=fs, columns=["ra", "dec", "j_m"]),
                             ns.repeat)
            rows[level] = (write, write_cpu, nbytes, read_local, read_s3, read_cols, os.getloadavg()[0])
        base = rows.get(3, next(iter(rows.values())))[2]
        for level, (write, write_cpu, nbytes, read_local, read_s3, read_cols, load) in rows.items():
            print(f"| {level} | {write:.2f} | {write_cpu:.2f} | {nbytes / 2**20:,.1f} | "
                  f"{nbytes / base:.3f} | "
                  f"{read_local:.3f} | {read_s3:.3f} | {read_cols:.3f} | {read_local + nbytes / 1e8:.2f} | "
                  f"{load:.2f} |")
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
