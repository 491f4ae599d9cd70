"""The Dask cluster a build or query runs on: a local one by default, or an existing scheduler."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

from dask.distributed import Client, LocalCluster, WorkerPlugin


class _DropComputeFailed(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Compute Failed")


class QuietTaskErrors(WorkerPlugin):
    """Local workers do not log failed tasks: the client raises the task's error, which says it all
    (a bad input file would otherwise print one worker traceback per retry)."""

    name = "tmass-lake-quiet-task-errors"

    def setup(self, worker) -> None:
        logger = logging.getLogger("distributed.worker")
        if not any(isinstance(f, _DropComputeFailed) for f in logger.filters):
            logger.addFilter(_DropComputeFailed())


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
    # A worker slow to exit at shutdown (a busy machine) is killed by its nanny with a warning the
    # user can do nothing about, after the command's own last line: silenced while shutting down.
    nanny = logging.getLogger("distributed.nanny")
    level = nanny.level
    try:
        # No dashboard; the scheduler's bare HTTP routes go to a free loopback port, not 8787 (which
        # another cluster may hold: a warning on every build).
        with LocalCluster(n_workers=n, threads_per_worker=1, memory_limit=memory_limit,
                          dashboard_address=None, processes=True,
                          scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                          silence_logs=logging.WARNING) as cluster, Client(cluster) as client:
            client.register_plugin(QuietTaskErrors())
            try:
                yield client
            finally:
                nanny.setLevel(logging.ERROR)
    finally:
        nanny.setLevel(level)
