"""Build benchmark: tmass-lake vs hats-import vs a floor of the best primitives, in one run.

    python benchmarks/bench_build.py --rows 2000000 20000000 [--workers 2] [--hats-import-max 20000000]

Generates mock IRSA bulk files of one table once (for the largest size; smaller sizes take the
first files), then for each size, on the same local Dask cluster (one thread per worker), times:

- the floor: per file, one task that does the minimum with the best primitives, none of ours:
  ISA-L decompression, pyarrow's CSV reader at its best settings (1 MiB Arrow blocks, one
  thread: the task's share of the cluster), hats' ``compute_spatial_index``, a numpy argsort,
  one Parquet write with hats' layout at our zstd level. With polars installed (the ``bench``
  extra) the same task with polars' reader in place of pyarrow's runs beside it
  ("floor (polars)"); the floor is the faster of the two;
- ours, step by step: the same one-task-per-file shape with our functions (``open_input``,
  ``parse_block`` on ``block_bytes`` blocks, ``with_healpix``, our sort, ``write_partition``),
  so the gap to the floor is named stage by stage (CPU s summed over tasks);
- ``tmass-lake build`` (catalog and its margin);
- hats-import's catalog pipeline on the same files (its ``CsvReader`` set for ``|``, ``\\N``
  and the schema's names and types; up to ``--hats-import-max`` rows), at our zstd level and
  at its own default (``--peer-levels``), with its output bytes.

Output bytes compared are the catalog's data files (``Npix=*.parquet``; ours' margin apart).
Peak worker and client memory are sampled from the processes; load averages are printed with
every table. Prints one table per size and one across sizes, with the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import bench_parse
import cloudpickle
import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
from bench_parse import pl, polars_read, pyarrow_read
from dask.distributed import Client, LocalCluster, wait
from hats.io.file_io.file_io import get_parquet_write_table_kwargs
from hats.pixel_math.spatial_index import SPATIAL_INDEX_COLUMN, compute_spatial_index
from hats_import.catalog.arguments import ImportArguments
from hats_import.catalog.file_readers import CsvReader
from hats_import.pipeline import pipeline_with_client
from isal import igzip

from tmass_lake.convert import BuildParameters, build_table, resolve_parameters, table_arguments
from tmass_lake.convert.map import with_healpix
from tmass_lake.convert.writer import write_partition
from tmass_lake.mock import generate
from tmass_lake.readers import expand_inputs
from tmass_lake.readers.blocks import iter_line_blocks, open_input
from tmass_lake.readers.bulk import parse_block
from tmass_lake.schema import load_schema

cloudpickle.register_pickle_by_value(bench_parse)  # the workers need not find benchmarks/ on their path
LEVEL = BuildParameters().compression_level
"""Our default zstd level: the floor writes at it, and hats-import by default too."""


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


def data_bytes(catalog: Path, pattern: str = "Npix=*.parquet") -> tuple[int, int, int]:
    """Bytes and count of a catalog's data files (``Npix=*.parquet``), and the bytes of their
    column chunks alone (the data without the footers' metadata)."""
    files = list(catalog.rglob(pattern))
    chunks = 0
    for p in files:
        md = pq.read_metadata(p)
        chunks += sum(md.row_group(g).column(c).total_compressed_size
                      for g in range(md.num_row_groups) for c in range(md.num_columns))
    return sum(p.stat().st_size for p in files), len(files), chunks


def run_ours(client: Client, table: str, files: list[str], out: Path, threshold: int) -> dict:
    args = table_arguments(load_schema(table), files, str(out / "ours"), tmp_dir=str(out / "ours_tmp"),
                           params=resolve_parameters({"pixel_threshold": threshold}), progress=False)
    report = build_table(args, client)
    written = [p for p in (out / "ours").rglob("*") if p.is_file()]
    nbytes, nfiles, chunks = data_bytes(out / "ours" / table)
    return {"rows": report["rows_written"], "stages": report["stage_seconds"], "spill": report["spill"],
            "partitions": report["partitions"],
            "max_partition_rows": max_partition_rows(out / "ours" / table),
            "data_bytes": nbytes, "data_files": nfiles, "column_bytes": chunks,
            "output_bytes": sum(p.stat().st_size for p in written), "output_files": len(written),
            "level": args.params.compression_level}


def max_partition_rows(catalog: Path) -> int:
    return max(pq.read_metadata(p).num_rows for p in catalog.rglob("Npix=*.parquet"))


def run_hats_import(client: Client, table: str, files: list[str], out: Path, threshold: int,
                    compression_level: int | None = None) -> dict:
    """hats-import's pipeline; ``compression_level`` ``None``: its own default."""
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
    nbytes, nfiles, chunks = data_bytes(out / "hats_import" / table)
    level = get_parquet_write_table_kwargs(pa.schema([]), write_table_kwargs=args.write_table_kwargs)
    return {"data_bytes": nbytes, "data_files": nfiles, "column_bytes": chunks,
            "level": level["compression_level"]}


def _steps(times: list[float], names: tuple[str, ...]) -> dict:
    return {n: b - a for n, a, b in zip(names, times, times[1:], strict=False)}


def _now() -> float:
    """The worker process's CPU seconds (every thread: polars parses in its own pool): steps
    compare fairly on a machine other jobs load."""
    return time.process_time()


STEPS = ("decompress", "parse", "index", "sort", "write")


def _floor_one(table: str, path: str, out: str, level: int, parser: str) -> dict:
    """The best primitives, once each, none of ours: seconds per step."""
    types = pa.schema([pa.field(c.name, c.arrow_type) for c in load_schema(table).columns])
    t = [_now()]
    with open(path, "rb") as f:
        text = igzip.decompress(f.read())
    t.append(_now())
    table_ = polars_read(text, types).to_arrow() if parser == "polars" else pyarrow_read(text, types, 1 << 20)
    del text
    t.append(_now())
    h = compute_spatial_index(table_.column("ra").to_numpy(), table_.column("dec").to_numpy())
    table_ = table_.add_column(0, SPATIAL_INDEX_COLUMN, pa.array(h))
    t.append(_now())
    table_ = table_.take(pa.array(np.argsort(h, kind="stable")))
    t.append(_now())
    order = pq.SortingColumn.from_ordering(table_.schema, [(SPATIAL_INDEX_COLUMN, "ascending")])
    kwargs = get_parquet_write_table_kwargs(table_.schema, write_table_kwargs={
        "compression_level": level, "sorting_columns": order})
    pq.write_table(table_, f"{out}/{Path(path).name}.parquet", **kwargs)
    t.append(_now())
    return {"rows": table_.num_rows, **_steps(t, STEPS)}


def _ours_one(table: str, path: str, out: str, level: int) -> dict:
    """Our own functions for the same steps, one task per file: seconds per step."""
    schema = load_schema(table)
    t = [_now()]
    with open_input(path) as stream:
        blocks = list(iter_line_blocks(path, stream, BuildParameters().block_bytes))
    t.append(_now())
    tables, line = [], 1
    for block in blocks:
        parsed = parse_block(path, block, line, schema)
        line += parsed.n_lines
        tables.append(parsed.table)
    del blocks
    table_ = pa.concat_tables(tables)
    t.append(_now())
    table_ = with_healpix(table_, schema.ra_column, schema.dec_column)
    t.append(_now())
    table_ = table_.take(np.argsort(table_.column(0).to_numpy(), kind="stable"))  # as map and reduce sort
    t.append(_now())
    write_partition(table_, f"{out}/{Path(path).name}.parquet", compression_level=level)
    t.append(_now())
    return {"rows": table_.num_rows, **_steps(t, STEPS)}


def _run_tasks(client: Client, fn, files: list[str], out: Path, *extra) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    futures = [client.submit(fn, *extra[:1], f, str(out), *extra[1:], pure=False) for f in files]
    wait(futures)
    parts = [f.result() for f in futures]
    nbytes, nfiles, chunks = data_bytes(out, "*.parquet")
    return {"rows": sum(p["rows"] for p in parts), "data_bytes": nbytes, "data_files": nfiles,
            "column_bytes": chunks,
            "steps_cpu_s": {k: round(sum(p[k] for p in parts), 2) for k in STEPS}}


def run_floor(client: Client, table: str, files: list[str], out: Path, threshold: int,
              parser: str = "pyarrow") -> dict:
    return _run_tasks(client, _floor_one, files, out / "floor", table, LEVEL, parser)


def run_ours_steps(client: Client, table: str, files: list[str], out: Path, threshold: int) -> dict:
    return _run_tasks(client, _ours_one, files, out / "ours_steps", table, LEVEL)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes have used so far."""
    return sum(sum(psutil.Process(pid).cpu_times()[:2]) for pid in pids)


def measure(client: Client, fn, *args) -> tuple[float, int, int, dict]:
    """Wall time, peak worker RSS, peak client RSS and what ``fn`` returned, with the load averages
    and the CPU seconds the workers and this client spent (the fair measure on a loaded machine)."""
    client.run(lambda: __import__("gc").collect())
    workers = list(client.run(lambda: psutil.Process().pid).values())
    pids = [*workers, psutil.Process().pid]
    load, cpu = os.getloadavg()[0], cpu_seconds(pids)
    with PeakMemory(workers) as mem, PeakMemory([psutil.Process().pid]) as own:
        started = time.time()
        extra = fn(client, *args)
        wall = time.time() - started
    return wall, mem.peak, own.peak, {**extra, "load": (load, os.getloadavg()[0]),
                                      "cpu_s": cpu_seconds(pids) - cpu}


def peer_name(level: int | None) -> str:
    return f"hats-import (zstd {level}, ours)" if level == LEVEL else (
        "hats-import (its default)" if level is None else f"hats-import (zstd {level})")


def run_size(client: Client, table: str, files: list[str], work: Path, threshold: int,
             with_peer: bool, peer_levels: list[int | None]) -> dict:
    runs = [("floor", run_floor, ())]
    if pl is not None:
        runs.append(("floor (polars)", run_floor, ("polars",)))
    runs += [("ours, step by step", run_ours_steps, ()), ("tmass-lake", run_ours, ())]
    if with_peer:
        runs += [(peer_name(level), run_hats_import, (level,)) for level in peer_levels]
    results = {}
    for i, (name, fn, extra) in enumerate(runs):
        out = work / f"run_{i}"
        results[name] = measure(client, fn, table, files, out, threshold, *extra)
        print(f"  {name}: {results[name][0]:.1f} s (load {results[name][3]['load'][0]:.2f} before, "
              f"{results[name][3]['load'][1]:.2f} after)", flush=True)
        shutil.rmtree(out, ignore_errors=True)  # disk: the next run needs the space
    return results


def floor_of(results: dict) -> tuple[str, tuple]:
    """The faster floor (pyarrow's reader or polars'), by CPU seconds (wall is the load's, here)."""
    name = min((n for n in results if n.startswith("floor")), key=lambda n: results[n][3]["cpu_s"])
    return name, results[name]


def print_size(table: str, n_files: int, workers: int, results: dict) -> None:
    ours = results["tmass-lake"]
    rows = ours[3]["rows"]
    print(f"\n{table}: {rows:,} rows in {n_files} gzip'd files, {workers} workers (one thread each), "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n")
    print("| pipeline | zstd level | wall s | CPU s | rows/s | data MiB (files) | column chunks MiB | "
          "peak worker MiB | peak client MiB | wall vs tmass-lake | CPU vs tmass-lake | "
          "load 1-min before/after |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for name, (wall, peak, client_peak, extra) in results.items():
        level = extra.get("level", LEVEL)
        print(f"| {name} | {level} | {wall:.1f} | {extra['cpu_s']:.1f} | {rows / wall:,.0f} | "
              f"{extra['data_bytes'] / 2**20:,.1f} | "
              f"{extra['column_bytes'] / 2**20:,.1f} | {peak / 2**20:,.0f} | {client_peak / 2**20:,.0f} | "
              f"{wall / ours[0]:.2f}x | {extra['cpu_s'] / ours[3]['cpu_s']:.2f}x | "
              f"{extra['load'][0]:.2f} / {extra['load'][1]:.2f} |")
    floor_name, floor = floor_of(results)
    extra = ours[3]
    print(f"\ntmass-lake / floor ({floor_name}): {ours[0] / floor[0]:.2f}x wall, "
          f"{ours[3]['cpu_s'] / floor[3]['cpu_s']:.2f}x CPU; stages {extra['stages']}; "
          f"spill {extra['spill']['runs']} runs, {extra['spill']['bytes'] / 2**30:.2f} GiB, "
          f"{extra['spill']['reads']} run reads in reduce; {extra['partitions']} partitions "
          f"(largest {extra['max_partition_rows']:,} rows); output {extra['output_bytes'] / 2**30:.2f} GiB "
          f"in {extra['output_files']} files (margin and metadata included)")
    stepped = [n for n in results if "steps_cpu_s" in results[n][3]]
    print("\nstep by step (CPU s of the worker process, summed over the one-task-per-file runs)\n")
    print("| step | " + " | ".join(stepped) + " | ours / floor |")
    print("|---|" + "---:|" * (len(stepped) + 1))
    for step in STEPS:
        cpu = {n: results[n][3]["steps_cpu_s"][step] for n in stepped}
        ratio = cpu["ours, step by step"] / max(cpu[floor_name], 1e-9)
        print(f"| {step} | " + " | ".join(f"{cpu[n]:.2f}" for n in stepped) + f" | {ratio:.2f}x |")
    same = results.get(peer_name(LEVEL))
    if same:
        print(f"\nspeed-up over hats-import at the same zstd level ({LEVEL}): {same[0] / ours[0]:.2f}x wall, "
              f"{same[3]['cpu_s'] / extra['cpu_s']:.2f}x CPU; "
              f"data bytes ours / hats-import: {extra['data_bytes'] / same[3]['data_bytes']:.3f} "
              f"(column chunks alone: {extra['column_bytes'] / same[3]['column_bytes']:.3f}; the rest is "
              "footer metadata: ours carries the VOParquet and column descriptions)")
    default = results.get(peer_name(None))
    if default:
        print(f"speed-up over hats-import at its default level ({default[3]['level']}): "
              f"{default[0] / ours[0]:.2f}x wall, {default[3]['cpu_s'] / extra['cpu_s']:.2f}x CPU; "
              "data bytes ours / hats-import: "
              f"{extra['data_bytes'] / default[3]['data_bytes']:.3f}")


def print_scaling(table: str, by_size: dict[int, dict]) -> None:
    sizes = sorted(by_size)
    first = sizes[0]
    print(f"\n{table} across sizes (wall s / CPU s; per-row CPU relative to the {first:,}-row run)\n")
    print("| rows | ours s | floor s | ours/floor | ours data MiB | us CPU per row | per row vs first | "
          f"hats-import zstd {LEVEL} s | its MiB | speed-up | hats-import default s | its MiB | speed-up | "
          "peak worker MiB | load 1-min |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    base_row = by_size[first]["tmass-lake"][3]["cpu_s"] / by_size[first]["tmass-lake"][3]["rows"]
    for n in sizes:
        r = by_size[n]
        ours = r["tmass-lake"]
        _, floor = floor_of(r)
        per_row = ours[3]["cpu_s"] / ours[3]["rows"]
        cells = []
        for level in (LEVEL, None):
            peer = r.get(peer_name(level))
            cells += ([f"{peer[0]:.1f} / {peer[3]['cpu_s']:.1f}", f"{peer[3]['data_bytes'] / 2**20:,.1f}",
                       f"{peer[0] / ours[0]:.2f}x / {peer[3]['cpu_s'] / ours[3]['cpu_s']:.2f}x"]
                      if peer else ["-", "-", "-"])
        loads = [v[3]["load"][0] for v in r.values()]
        print(f"| {ours[3]['rows']:,} | {ours[0]:.1f} / {ours[3]['cpu_s']:.1f} | "
              f"{floor[0]:.1f} / {floor[3]['cpu_s']:.1f} | "
              f"{ours[0] / floor[0]:.2f}x / {ours[3]['cpu_s'] / floor[3]['cpu_s']:.2f}x | "
              f"{ours[3]['data_bytes'] / 2**20:,.1f} | {per_row * 1e6:.2f} | {per_row / base_row:.2f}x | "
              + " | ".join(cells) + f" | {ours[1] / 2**20:,.0f} | {min(loads):.1f}-{max(loads):.1f} |")


def peer_level(text: str) -> int | None:
    """A ``--peer-levels`` entry: a zstd level, or ``default`` (hats-import's own)."""
    return None if text == "default" else int(text)


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
    p.add_argument("--peer-levels", type=peer_level, nargs="+", default=[LEVEL, None],
                   help=f"zstd levels hats-import runs at, 'default' for its own (default: {LEVEL} default)")
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
                                      n <= ns.hats_import_max, ns.peer_levels)
                print_size(ns.table, take, ns.workers, by_size[n])
        print_scaling(ns.table, by_size)
    finally:
        if not ns.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
