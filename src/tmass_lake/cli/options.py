"""Flags several subcommands share: storage options, the Dask cluster, build parameters."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager

from dask.distributed import Client

from tmass_lake.cluster import dask_client
from tmass_lake.convert.parameters import BuildParameters


def storage_options(pairs: list[str] | None) -> dict:
    """``--storage-option key=value`` pairs (JSON values allowed) into fsspec storage options."""
    out: dict = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"--storage-option {pair!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def add_storage_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage-option", action="append", metavar="KEY=VALUE",
                   help="fsspec option for every URL (repeatable; JSON values allowed); credentials "
                        "are better left to the environment (AWS_PROFILE, ...)")


def add_cluster(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scheduler", help="address of an existing dask.distributed scheduler "
                                       "(default: a local cluster)")
    p.add_argument("--workers", type=int, help="local cluster workers (default: cores)")
    p.add_argument("--memory-limit", default="4GiB", help="per local worker (default 4GiB)")


@contextmanager
def cluster(ns: argparse.Namespace) -> Iterator[Client]:
    """The Dask client the flags ask for."""
    with dask_client(ns.scheduler, ns.workers, ns.memory_limit) as client:
        yield client


_PARAMETER_FLAGS = {  # flag -> (BuildParameters field, type, help)
    "--format": ("input_format", str, "input format: bulk, ipac, votable, csv, parquet "
                                          "(default auto: each file as it looks)"),
    "--pixel-threshold": ("pixel_threshold", int, "rows per partition at most (default 1,000,000)"),
    "--byte-threshold": ("byte_threshold", int, "in-memory bytes per partition at most (default 512 MiB)"),
    "--lowest-order": ("lowest_order", int, "coarsest HEALPix order of a partition (default 0)"),
    "--highest-order": ("highest_order", int, "finest HEALPix order of a partition (default 10)"),
    "--margin-arcsec": ("margin_arcsec", float, "margin cache radius (default 10)"),
    "--run-bytes": ("run_bytes", int, "spill-run size (default: from the workers' memory limit)"),
    "--compression-level": ("compression_level", int, "zstd level of data files (default 3)"),
    "--where": ("where", str, "TAP input: ADQL condition the harvested rows meet"),
    "--tap-key": ("tap_key", str, "TAP input: integer column to split the harvest on (default: the key)"),
    "--tap-table": ("tap_table", str, "TAP input: the service's full table name, SCHEMA.NAME "
                                      "(default: found by name)"),
    "--tap-chunk-rows": ("tap_chunk_rows", int, "TAP input: rows per chunk query (default 1,000,000)"),
    "--tap-concurrency": ("tap_concurrency", int, "TAP input: queries in flight on the service (default 4)"),
    "--tap-sync-rows": ("tap_sync_rows", int, "TAP input: larger chunks run as async jobs (default 100,000)"),
    "--tap-retries": ("tap_retries", int, "TAP input: retries of a failing query (default 5)"),
    "--tap-backoff": ("tap_backoff", float, "TAP input: first wait between retries, s (default 1)"),
    "--tap-timeout": ("tap_timeout", float, "TAP input: seconds to wait for one answer (default 3600)"),
}


def add_build_parameters(p: argparse.ArgumentParser) -> None:
    """The build parameters as flags; a flag not given leaves the pipeline's or default value."""
    for flag, (dest, kind, help_) in _PARAMETER_FLAGS.items():
        p.add_argument(flag, dest=f"param_{dest}", type=kind, default=None, help=help_)
    p.add_argument("--allow-duplicate-content", dest="param_allow_duplicate_content", action="store_const",
                   const=True, default=None, help="build inputs even when two have the same bytes")
    p.add_argument("--strict-layout", dest="param_strict_layout", action="store_const", const=True,
                   default=None, help="inputs with a header must have exactly the schema's columns "
                                      "(default: their own layout, drift reported)")


def given_parameters(ns: argparse.Namespace) -> dict:
    """The build parameters the command line gave explicitly."""
    names = {f.name for f in BuildParameters.__dataclass_fields__.values()}
    return {k[len("param_"):]: v for k, v in vars(ns).items()
            if k.startswith("param_") and k[len("param_"):] in names and v is not None}
