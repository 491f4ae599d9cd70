"""The Dask cluster a build or query runs on: a local one by default, or an existing scheduler."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

from dask.distributed import Client, LocalCluster


@contextlib.contextmanager
def dask_client(
    scheduler: str | None = None,
    workers: int | None = None,
    memory_limit: str | None = "4GiB",
) -> Iterator[Client]:
    """Connect to ``scheduler`` if given, else start a local cluster of single-threaded workers."""
    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    n = workers or os.cpu_count() or 1
    with LocalCluster(n_workers=n, threads_per_worker=1, memory_limit=memory_limit,
                      dashboard_address=None, processes=True,
                      silence_logs=logging.WARNING) as cluster, Client(cluster) as client:
        yield client
