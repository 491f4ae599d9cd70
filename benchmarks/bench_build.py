"""Build benchmark: tmass-lake vs hats-import vs the bare single-pass floor, in one run.

    python benchmarks/bench_build.py --rows 2000000 20000000 [--workers 2] [--hats-import-max 20000000]

Generates mock IRSA bulk files of one table once (for the largest size; smaller sizes take the
first files), then for each size, on the same local Dask cluster, times (1) ``tmass-lake
build``, (2) hats-import's catalog pipeline on the same files (its ``CsvReader`` set for ``|``,
``\\N`` and the schema's names and types; up to ``--hats-import-max`` rows), and (3) the floor:
per file, one task that decompresses, parses, indexes, sorts and writes Parquet once, with the
same Parquet settings as ours, timing each of those steps. Peak worker and client memory are
sampled from the processes. Prints one table per size and one across sizes, with the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
from dask.distributed import Client, LocalCluster, wait
from hats_import.catalog.arguments import ImportArguments
from hats_import.catalog.file_readers import CsvReader
from hats_import.pipeline import pipeline_with_client

from tmass_lake.convert import build_table, resolve_parameters, table_arguments
from tmass_lake.convert.map import with_healpix
from tmass_lake.convert.writer import parquet_kwargs
from tmass_lake.mock import generate
from tmass_lake.readers import expand_inputs
from tmass_lake.readers.blocks import open_input
from tmass_lake.readers.bulk import parse_block
from tmass_lake.schema import load_schema


class PeakMemory:
    """Sample the RSS of processes until stopped; keep the peak."""

    def __init__(self, pids: list[int], interval: float = 0.1):
        self.pids = pids
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, args=(interval,), daemon=True)

    def _poll(self, interval: float) -> None:
        while not self._stop.is_set():
            for pid in self.pids:
                with contextlib.suppress(psutil.NoSuchProcess):
                    self.peak = max(self.peak, psutil.Process(pid).memory_info().rss)
            time.sleep(interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def make_input(root: Path, table: str, rows: int, seed: int) -> list[str]:
    """Mock bulk files of ``table`` with about ``rows`` rows (scale calibrated on a small run)."""
    probe = generate(str(root / "probe"), scale=0.02, seed=seed, tables=[table], progress=False,
                     reference=False)
    per_scale = probe["tables"][table]["rows"] / 0.02
    shutil.rmtree(root / "probe")
    started = time.time()
    manifest = generate(str(root / "mock"), scale=1.05 * rows / per_scale, seed=seed, tables=[table],
                        reference=False)
    n = manifest["tables"][table]["rows"]
    print(f"mock: {n:,} rows of {table} in {time.time() - started:.1f} s "
          f"({n / (time.time() - started):,.0f} rows/s)", flush=True)
    return expand_inputs([str(root / "mock" / "irsa" / table)])


def file_rows(files: list[str]) -> list[int]:
    """Lines per file (one pass over the gzip'd text, for choosing the files of each size)."""
    out = []
    for f in files:
        with open_input(f) as stream:
            chunks = iter(lambda s=stream: s.read(64 << 20), b"")
            out.append(sum(chunk.count(b"\n") for chunk in chunks))
    return out


def run_ours(client: Client, table: str, files: list[str], out: Path, threshold: int) -> dict:
    args = table_arguments(load_schema(table), files, str(out / "ours"), tmp_dir=str(out / "ours_tmp"),
                           params=resolve_parameters({"pixel_threshold": threshold}), progress=False)
    report = build_table(args, client)
    written = [p for p in (out / "ours").rglob("*") if p.is_file()]
    return {"rows": report["rows_written"], "stages": report["stage_seconds"], "spill": report["spill"],
            "partitions": report["partitions"],
            "max_partition_rows": max_partition_rows(out / "ours" / table),
            "output_bytes": sum(p.stat().st_size for p in written), "output_files": len(written)}


def max_partition_rows(catalog: Path) -> int:
    return max(pq.read_metadata(p).num_rows for p in catalog.rglob("Npix=*.parquet"))


def run_hats_import(client: Client, table: str, files: list[str], out: Path, threshold: int,
                    compression_level: int | None = None) -> dict:
    schema = load_schema(table)
    pandas_types = {"float32": "Float32", "float64": "Float64", "int16": "Int16", "int32": "Int32",
                    "int64": "Int64", "string": "string", "date32": "string"}
    dtypes = {c.name: pandas_types[c.arrow] for c in schema.columns}
    reader = CsvReader(sep="|", header=None, column_names=schema.names, na_values=["\\N"],
                       keep_default_na=False, compression="gzip", type_map=dtypes, chunksize=250_000)
    args = ImportArguments(
        output_artifact_name=table, input_file_list=files, file_reader=reader,
        ra_column="ra", dec_column="dec", output_path=str(out / "hats_import"),
        tmp_dir=str(out / "hats_import_tmp"), pixel_threshold=threshold,
        write_table_kwargs={"compression_level": compression_level} if compression_level else None,
        progress_bar=False, resume=False,
    )
    pipeline_with_client(args, client)
    return {}


def _floor_one(table: str, path: str, out: str) -> dict:
    """Decompress + parse + index + sort + write once, nothing else; seconds per step."""
    schema = load_schema(table)
    t0 = time.perf_counter()
    with open_input(path) as stream:
        text = stream.read()
    t1 = time.perf_counter()
    blocks, start = [], 0
    while start < len(text):  # the bulk reader's own block parser, on 16 MiB of whole lines at a time
        stop = text.rfind(b"\n", start, start + (16 << 20)) + 1 or len(text)
        blocks.append(parse_block(path, text[start:stop], 1, schema).table)
        start = stop
    t = pa.concat_tables(blocks)
    t2 = time.perf_counter()
    t = with_healpix(t, schema.ra_column, schema.dec_column)
    t3 = time.perf_counter()
    t = t.take(pa.array(np.argsort(t.column(0).to_numpy(), kind="stable")))
    t4 = time.perf_counter()
    pq.write_table(t, f"{out}/{Path(path).name}.parquet", **parquet_kwargs(t.schema, 3))
    t5 = time.perf_counter()
    return {"rows": t.num_rows, "decompress": t1 - t0, "parse": t2 - t1, "index": t3 - t2, "sort": t4 - t3,
            "write": t5 - t4}


def run_floor(client: Client, table: str, files: list[str], out: Path, threshold: int) -> dict:
    (out / "floor").mkdir(parents=True, exist_ok=True)
    futures = [client.submit(_floor_one, table, f, str(out / "floor"), pure=False) for f in files]
    wait(futures)
    parts = [f.result() for f in futures]
    steps = {k: round(sum(p[k] for p in parts), 1) for k in ("decompress", "parse", "index", "sort", "write")}
    return {"rows": sum(p["rows"] for p in parts), "steps_cpu_s": steps}


def measure(client: Client, fn, *args) -> tuple[float, int, int, dict]:
    """Wall time, peak worker RSS, peak client RSS and what ``fn`` returned."""
    client.run(lambda: __import__("gc").collect())
    workers = list(client.run(lambda: psutil.Process().pid).values())
    with PeakMemory(workers) as mem, PeakMemory([psutil.Process().pid]) as own:
        started = time.time()
        extra = fn(client, *args)
        wall = time.time() - started
    return wall, mem.peak, own.peak, extra


def run_size(client: Client, table: str, files: list[str], work: Path, threshold: int,
             with_peer: bool, peer_level: int | None) -> dict:
    runs = [("floor", run_floor, ()), ("tmass-lake", run_ours, ())]
    if with_peer:
        runs.append(("hats-import", run_hats_import, (peer_level,)))
    results = {}
    for name, fn, extra in runs:
        out = work / f"run_{name}"
        results[name] = measure(client, fn, table, files, out, threshold, *extra)
        print(f"  {name}: {results[name][0]:.1f} s", flush=True)
        shutil.rmtree(out, ignore_errors=True)  # disk: the next run needs the space
    return results


def print_size(table: str, n_files: int, workers: int, results: dict) -> None:
    ours = results["tmass-lake"]
    rows = ours[3]["rows"]
    print(f"\n{table}: {rows:,} rows in {n_files} gzip'd files, {workers} workers\n")
    print("| pipeline | wall s | rows/s | peak worker MiB | peak client MiB | vs tmass-lake |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, (wall, peak, client_peak, _) in results.items():
        print(f"| {name} | {wall:.1f} | {rows / wall:,.0f} | {peak / 2**20:,.0f} | "
              f"{client_peak / 2**20:,.0f} | {wall / ours[0]:.2f}x |")
    extra = ours[3]
    print(f"\ntmass-lake / floor: {ours[0] / results['floor'][0]:.2f}x; stages {extra['stages']}; "
          f"spill {extra['spill']['runs']} runs, {extra['spill']['bytes'] / 2**30:.2f} GiB, "
          f"{extra['spill']['reads']} run reads in reduce; {extra['partitions']} partitions "
          f"(largest {extra['max_partition_rows']:,} rows); output {extra['output_bytes'] / 2**30:.2f} GiB "
          f"in {extra['output_files']} files")
    print(f"floor steps (CPU s, summed over tasks): {results['floor'][3]['steps_cpu_s']}")
    if "hats-import" in results:
        print(f"speed-up over hats-import: {results['hats-import'][0] / ours[0]:.2f}x")


def print_scaling(table: str, by_size: dict[int, dict]) -> None:
    sizes = sorted(by_size)
    small, first = sizes[0], sizes[0]
    print(f"\n{table} across sizes (ratios to the {first:,}-row run where noted)\n")
    print("| rows | ours s | floor s | ours/floor | us per row | per row vs first | peak worker MiB |"
          " vs first | peak client MiB | hats-import s | speed-up |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    base_row = by_size[first]["tmass-lake"][0] / by_size[first]["tmass-lake"][3]["rows"]
    base_mem = by_size[small]["tmass-lake"][1]
    for n in sizes:
        r = by_size[n]
        ours, floor = r["tmass-lake"], r["floor"]
        per_row = ours[0] / ours[3]["rows"]
        peer = r.get("hats-import")
        print(f"| {ours[3]['rows']:,} | {ours[0]:.1f} | {floor[0]:.1f} | {ours[0] / floor[0]:.2f}x | "
              f"{per_row * 1e6:.2f} | {per_row / base_row:.2f}x | {ours[1] / 2**20:,.0f} | "
              f"{ours[1] / base_mem:.2f}x | {ours[2] / 2**20:,.0f} | "
              f"{f'{peer[0]:.1f}' if peer else '-'} | {f'{peer[0] / ours[0]:.2f}x' if peer else '-'} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=float, nargs="+", default=[2_000_000])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--table", default="pt_src_rej")
    p.add_argument("--threshold", type=int, default=500_000, help="pixel threshold (rows)")
    p.add_argument("--memory-limit", default="6GiB")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workdir", help="keep the mock here and reuse it (default: a temporary directory)")
    p.add_argument("--hats-import-max", type=float, default=20e6, help="run hats-import up to this size")
    p.add_argument("--peer-compression-level", type=int, default=None,
                   help="zstd level for hats-import (default: its own, 15; ours and the floor use 3)")
    ns = p.parse_args()
    sizes = sorted(int(r) for r in ns.rows)
    work = Path(ns.workdir or tempfile.mkdtemp(prefix="bench_build_"))
    try:
        mock_files = work / "mock" / "files.json"
        if mock_files.exists():
            files, counts = json.loads(mock_files.read_text())
        else:
            files = make_input(work, ns.table, sizes[-1], ns.seed)
            counts = file_rows(files)
            mock_files.write_text(json.dumps([files, counts]))
        by_size = {}
        with LocalCluster(n_workers=ns.workers, threads_per_worker=1, memory_limit=ns.memory_limit,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            for n in sizes:
                take = int(np.searchsorted(np.cumsum(counts), n * 0.999)) + 1
                print(f"{n:,} rows: {take} files", flush=True)
                by_size[n] = run_size(client, ns.table, files[:take], work, ns.threshold,
                                      n <= ns.hats_import_max, ns.peer_compression_level)
                print_size(ns.table, take, ns.workers, by_size[n])
        if len(sizes) > 1:
            print_scaling(ns.table, by_size)
    finally:
        if not ns.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
