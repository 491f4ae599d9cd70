"""Build benchmark: tmass-lake vs hats-import vs the bare single-pass floor, in one run.

    python benchmarks/bench_build.py --rows 2000000 [--workers 2] [--table pt_src_rej]

Generates mock IRSA bulk files for one table, then on the same local Dask cluster times
(1) ``tmass-lake build``, (2) hats-import's catalog pipeline on the same files (its
``CsvReader`` configured for ``|``, ``\\N`` and the schema's column names and types), and
(3) the floor: per file, one task that reads, parses, indexes, sorts and writes Parquet once.
Peak worker memory is sampled from the worker processes. Prints a table with the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
from dask.distributed import Client, LocalCluster, wait

from tmass_lake.convert import build_table, resolve_parameters, table_arguments
from tmass_lake.convert.map import with_healpix
from tmass_lake.mock import generate
from tmass_lake.readers import expand_inputs, read_input
from tmass_lake.schema import load_schema


class PeakMemory:
    """Sample the RSS of every worker process (and children) until stopped; keep the peak."""

    def __init__(self, client: Client, interval: float = 0.1):
        self.pids = list(client.run(lambda: psutil.Process().pid).values())
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
    manifest = generate(str(root / "mock"), scale=rows / per_scale, seed=seed, tables=[table],
                        reference=False)
    n = manifest["tables"][table]["rows"]
    print(f"mock: {n:,} rows of {table} in {time.time() - started:.1f} s "
          f"({n / (time.time() - started):,.0f} rows/s)")
    return expand_inputs([str(root / "mock" / "irsa" / table)])


def run_ours(client: Client, table: str, files: list[str], out: Path, threshold: int) -> dict:
    args = table_arguments(load_schema(table), files, str(out / "ours"), tmp_dir=str(out / "ours_tmp"),
                           params=resolve_parameters({"pixel_threshold": threshold}), progress=False)
    report = build_table(args, client)
    return {"rows": report["rows_written"], "stages": report["stage_seconds"]}


def run_hats_import(client: Client, table: str, files: list[str], out: Path, threshold: int,
                    compression_level: int | None = None) -> dict:
    from hats_import.catalog.arguments import ImportArguments
    from hats_import.catalog.file_readers import CsvReader
    from hats_import.pipeline import pipeline_with_client

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


def _floor_one(table: str, path: str, out: str) -> int:
    """Read + parse + index + sort + write once, nothing else."""
    schema = load_schema(table)
    t = pa.concat_tables(b.table for b in read_input(path, schema, block_bytes=16 << 20))
    t = with_healpix(t, schema.ra_column, schema.dec_column).sort_by("_healpix_29")
    pq.write_table(t, f"{out}/{Path(path).name}.parquet", compression="zstd", compression_level=3)
    return t.num_rows


def run_floor(client: Client, table: str, files: list[str], out: Path, threshold: int) -> dict:
    (out / "floor").mkdir(parents=True, exist_ok=True)
    futures = [client.submit(_floor_one, table, f, str(out / "floor"), pure=False) for f in files]
    wait(futures)
    return {"rows": sum(f.result() for f in futures)}


def measure(client: Client, fn, *args) -> tuple[float, int, dict]:
    client.run(lambda: __import__("gc").collect())
    with PeakMemory(client) as mem:
        started = time.time()
        extra = fn(client, *args)
        wall = time.time() - started
    return wall, mem.peak, extra


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=2_000_000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--table", default="pt_src_rej")
    p.add_argument("--threshold", type=int, default=500_000, help="pixel threshold (rows)")
    p.add_argument("--memory-limit", default="6GiB")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--skip-hats-import", action="store_true")
    p.add_argument("--peer-compression-level", type=int, default=None,
                   help="zstd level for hats-import (default: its own, 15; ours and the floor use 3)")
    ns = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_build_"))
    try:
        files = make_input(work, ns.table, ns.rows, ns.seed)
        results = {}
        with LocalCluster(n_workers=ns.workers, threads_per_worker=1, memory_limit=ns.memory_limit,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            runs = [("tmass-lake", run_ours, ()), ("floor", run_floor, ())]
            if not ns.skip_hats_import:
                runs.append(("hats-import", run_hats_import, (ns.peer_compression_level,)))
            for name, fn, extra in runs:
                results[name] = measure(client, fn, ns.table, files, work, ns.threshold, *extra)
                print(f"{name}: {results[name][0]:.1f} s", flush=True)
        rows = results["tmass-lake"][2]["rows"]
        print(f"\n{ns.table}: {rows:,} rows in {len(files)} gzip'd files, {ns.workers} workers\n")
        print(f"| {'pipeline':<12} | {'wall s':>7} | {'rows/s':>10} | {'peak worker MiB':>15} |"
              f" {'vs tmass-lake':>13} |")
        print(f"|{'-' * 14}|{'-' * 9}|{'-' * 12}|{'-' * 17}|{'-' * 15}|")
        ours = results["tmass-lake"][0]
        for name, (wall, peak, _) in results.items():
            print(f"| {name:<12} | {wall:7.1f} | {rows / wall:10,.0f} | {peak / 2**20:15,.0f} |"
                  f" {wall / ours:12.2f}x |")
        if "hats-import" in results:
            print(f"\nspeed-up over hats-import: {results['hats-import'][0] / ours:.2f}x (target >= 5x)")
        print(f"tmass-lake / floor: {ours / results['floor'][0]:.2f}x (target <= 1.5x)")
        print(f"tmass-lake stages: {results['tmass-lake'][2]['stages']}")
    finally:
        if not ns.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work directory kept: {work}")


if __name__ == "__main__":
    main()
