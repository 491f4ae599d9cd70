"""Parquet footer size per data file: the lake's against hats-import's on the same rows.

    python benchmarks/bench_footer.py --lake DIR [--tables pt_src_c ext_src_c cf_info] [--out FILE]

For each table, its catalog's data files (``DIR/<table>/<table>/dataset/**/Npix=*.parquet``) are
also imported with hats-import (its pandas Parquet reader, as from a CSV: the lake's own columns
minus hats' spatial index, the same pixel threshold as the lake's largest partition), and the
serialized footer of every data file is measured (``ParquetFile(...).metadata.serialized_size``
plus the 8-byte trailer). Reports per table the mean, median and largest footer of each, and the
ratio of the means; the issue's bound is ours <= hats-import's + 20 %. Prints JSON (and writes
``--out``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
from hats_import.catalog.arguments import ImportArguments
from hats_import.catalog.file_readers import ParquetPandasReader
from hats_import.pipeline import pipeline_with_client

from tmass_lake.cluster import dask_client
from tmass_lake.convert.writer import HEALPIX_COLUMN


def footers(catalog: Path) -> list[int]:
    return [pq.ParquetFile(p).metadata.serialized_size + 8 for p in sorted(catalog.rglob("Npix=*.parquet"))]


def summary(sizes: list[int]) -> dict:
    return {"files": len(sizes), "mean": round(statistics.mean(sizes)), "median": statistics.median(sizes),
            "max": max(sizes)}


def hats_import(client, table: str, catalog: Path, out: Path) -> Path:
    files = sorted(str(p) for p in catalog.rglob("Npix=*.parquet"))
    schema = pq.read_schema(files[0])
    columns = [n for n in schema.names if n not in (HEALPIX_COLUMN, "Norder", "Dir", "Npix")]
    threshold = max(pq.ParquetFile(f).metadata.num_rows for f in files)
    args = ImportArguments(
        output_artifact_name=table, input_file_list=files,
        file_reader=ParquetPandasReader(column_names=columns),
        ra_column="ra", dec_column="dec", output_path=str(out), tmp_dir=str(out / "tmp"),
        pixel_threshold=threshold, progress_bar=False, resume=False,
    )
    pipeline_with_client(args, client)
    return out / table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lake", required=True, type=Path)
    parser.add_argument("--tables", nargs="+", default=["pt_src_c", "ext_src_c", "cf_info"])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = {}
    with tempfile.TemporaryDirectory() as tmp, dask_client(workers=1, memory_limit="2GiB") as client:
        for table in args.tables:
            ours = args.lake / table / table
            theirs = hats_import(client, table, ours, Path(tmp) / table)
            mine, hats = summary(footers(ours)), summary(footers(theirs))
            result[table] = {"columns": len(pq.read_schema(next(ours.rglob("Npix=*.parquet")))),
                             "lake": mine, "hats_import": hats,
                             "ratio_of_means": round(mine["mean"] / hats["mean"], 3)}
            print(table, json.dumps(result[table]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
