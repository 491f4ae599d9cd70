"""Parse benchmark: our bulk block parser against the bare readers, on one block of mock text.

    python benchmarks/bench_parse.py [--mib 16 32 64] [--repeat 5] [--table pt_src_rej]

Makes a mock bulk file of ``--table`` (or reads ``--text``, uncompressed bulk lines), then for
each block size times (CPU seconds), best of ``--repeat``, one thread: ``parse_block`` as it is
(pyarrow in Arrow blocks of ``ARROW_BLOCK_BYTES``) and as it was (one Arrow block per text block); pyarrow's
``read_csv`` alone at several Arrow block sizes with the same parse and convert options; and
polars' ``read_csv`` (one thread) when polars is installed (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("POLARS_MAX_THREADS", "1")  # before polars is imported: one thread, like a task

import pyarrow as pa
import pyarrow.csv as pacsv

from tmass_lake.mock import generate
from tmass_lake.readers import bulk, expand_inputs
from tmass_lake.readers.blocks import open_input
from tmass_lake.schema import load_schema

try:
    import polars as pl
except ImportError:  # optional: the bench extra
    pl = None


def best(fn, repeat: int) -> float:
    """The fewest CPU seconds (this process, every thread) of ``repeat`` calls: fair under load."""
    times = []
    for _ in range(repeat):
        started = time.process_time()
        fn()
        times.append(time.process_time() - started)
    return min(times)


def pyarrow_read(block: bytes, types: pa.Schema, block_size: int) -> pa.Table:
    """pyarrow's reader alone, with the bulk reader's parse and convert options."""
    return pacsv.read_csv(
        pa.py_buffer(block),
        read_options=pacsv.ReadOptions(column_names=types.names, use_threads=False, block_size=block_size),
        parse_options=pacsv.ParseOptions(delimiter="|", quote_char=False, escape_char=False,
                                         ignore_empty_lines=False),
        convert_options=pacsv.ConvertOptions(column_types={f.name: f.type for f in types},
                                             null_values=["\\N"], strings_can_be_null=True,
                                             quoted_strings_can_be_null=False))


def polars_read(block: bytes, types: pa.Schema) -> object:
    """polars' reader on the same text: ``|``, ``\\N`` null, no quotes, the schema's types."""
    return pl.read_csv(block, separator="|", has_header=False,
                       schema=pl.from_arrow(types.empty_table()).schema, null_values="\\N", quote_char=None)


def mock_text(table: str, mib: int, seed: int) -> bytes:
    """About ``mib`` MiB of mock bulk text of ``table`` (a scratch mock, removed after)."""
    work = Path(tempfile.mkdtemp(prefix="bench_parse_"))
    try:
        generate(str(work), scale=0.8 * mib / 64, seed=seed, tables=[table], progress=False, reference=False)
        parts = []
        for f in expand_inputs([str(work / "irsa" / table)]):
            with open_input(f) as stream:
                parts.append(stream.read())
        return b"".join(parts)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mib", type=int, nargs="+", default=[16, 32, 64], help="text block sizes (MiB)")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--table", default="pt_src_rej")
    p.add_argument("--text", help="uncompressed bulk text to cut the blocks from (default: a mock)")
    p.add_argument("--seed", type=int, default=1)
    ns = p.parse_args()
    schema = load_schema(ns.table)
    types = schema.arrow_schema()
    text = Path(ns.text).read_bytes() if ns.text else mock_text(ns.table, max(ns.mib), ns.seed)
    print(f"load average before: {os.getloadavg()}; pyarrow {pa.__version__}, "
          f"polars {pl.__version__ if pl else 'not installed'}; {len(text) / 2**20:.1f} MiB of text")
    print("\n| block MiB | rows | parse_block (1 MiB Arrow blocks) s |"
          " parse_block as before (one Arrow block) s | pyarrow 1 GiB s | pyarrow 16 MiB s |"
          " pyarrow 4 MiB s | pyarrow 1 MiB s | pyarrow 256 KiB s |"
          " polars s | ours / best bare |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for mib in ns.mib:
        block = text[: text.rfind(b"\n", 0, mib << 20) + 1]
        rows = block.count(b"\n")
        ours = best(lambda b=block: bulk.parse_block("bench", b, 1, schema), ns.repeat)
        saved = bulk.ARROW_BLOCK_BYTES
        bulk.ARROW_BLOCK_BYTES = len(block) + 1
        try:
            before = best(lambda b=block: bulk.parse_block("bench", b, 1, schema), ns.repeat)
        finally:
            bulk.ARROW_BLOCK_BYTES = saved
        bare = {bs: best(lambda b=block, bs=bs: pyarrow_read(b, types, bs), ns.repeat)
                for bs in (1 << 30, 16 << 20, 4 << 20, 1 << 20, 256 << 10)}
        polars = best(lambda b=block: polars_read(b, types), ns.repeat) if pl else None
        floor = min([*bare.values(), *([polars] if polars else [])])
        print(f"| {mib} | {rows:,} | {ours:.3f} | {before:.3f} | "
              + " | ".join(f"{v:.3f}" for v in bare.values())
              + f" | {f'{polars:.3f}' if polars else '-'} | {ours / floor:.2f}x |", flush=True)
    print(f"\nload average after: {os.getloadavg()}; "
          f"{subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores")


if __name__ == "__main__":
    main()
