"""The Dask cluster a command computes on (chosen by the data's size unless the flags say), and
hats' compiled kernels kept on disk between commands."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import hats.pixel_tree.moc_filter
import hats.pixel_tree.pixel_alignment
from dask.distributed import Client

from tmass_lake.cli.options import check_dashboard
from tmass_lake.cluster import cache_compiled_kernels, choose_cluster, chosen_client, dashboard_url


@contextmanager
def cluster(ns: argparse.Namespace, size: int | None = None) -> Iterator[Client]:
    """The Dask client the flags ask for, or the one the data's ``size`` (bytes) calls for."""
    check_dashboard(ns)
    choice = choose_cluster(ns.scheduler, ns.workers, size)
    started = time.perf_counter()
    if not ns.quiet and choice.kind != "threads":
        print(f"starting {choice.describe()} ...", file=sys.stderr, flush=True)
    with chosen_client(choice, getattr(ns, "memory_limit", "4GiB"), ns.dashboard) as client:
        if not ns.quiet and choice.kind != "threads":
            print(f"cluster ready ({time.perf_counter() - started:.1f} s)", file=sys.stderr, flush=True)
        elif ns.verbose:
            print(f"running on {choice.describe()}", file=sys.stderr)
        if ns.dashboard:
            print(f"Dask dashboard: {dashboard_url(client, ns.dashboard)}", file=sys.stderr, flush=True)
        yield client


def cache_alignment_kernels() -> None:
    """hats' numba kernels (tree alignment, MOC filters) compiled at most once, cached on disk."""
    cache_compiled_kernels(hats.pixel_tree.pixel_alignment, hats.pixel_tree.moc_filter)

