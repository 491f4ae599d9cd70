"""The Dask cluster a build or query runs on: an existing scheduler, a local cluster of worker
processes, or, for small work, threads inside the command's own process.

Starting worker processes costs seconds (tens on a loaded machine) and each one pays its imports
again; work that fits in one process in a few seconds runs faster on threads. :func:`choose_cluster`
picks by the size of the data a command reads; ``--workers``/``--scheduler`` override it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

from dask.distributed import Client, LocalCluster, WorkerPlugin
from numba.core.registry import CPUDispatcher

SMALL_BYTES = 64 * 2**20
"""Data a command reads below this (inputs of a build, tables of a query) runs on threads: seconds of
work, where starting worker processes would cost more than it saves. Above it, processes: threads
share one interpreter, and parsing text inputs holds it."""
LOCAL_KINDS = ("processes", "threads")
"""``--scheduler`` values that mean a local cluster rather than an address."""

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class ClusterChoice:
    """Where a command's tasks run, and why.

    ``kind`` is ``"address"`` (an existing scheduler at ``address``), ``"processes"`` (a local
    cluster of ``workers`` single-threaded worker processes) or ``"threads"`` (one in-process
    worker with ``workers`` threads).
    """

    kind: str
    workers: int
    reason: str
    address: str | None = None

    def describe(self) -> str:
        if self.kind == "address":
            return f"the Dask scheduler at {self.address}"
        unit = "worker processes" if self.kind == "processes" else "threads in this process"
        return f"a local Dask cluster of {self.workers} {unit} ({self.reason})"


def choose_cluster(scheduler: str | None = None, workers: int | None = None,
                   data_bytes: int | None = None) -> ClusterChoice:
    """The cluster for a command: ``scheduler`` (an address, ``processes`` or ``threads``) and
    ``workers`` decide when given; otherwise threads for less than :data:`SMALL_BYTES` of data,
    else one worker process per core (``data_bytes=None``, size unknown, counts as large)."""
    cores = os.cpu_count() or 1
    if scheduler and scheduler not in LOCAL_KINDS:
        return ClusterChoice("address", 0, "--scheduler", scheduler)
    if scheduler:
        return ClusterChoice(scheduler, workers or cores, "--scheduler")
    if workers:
        return ClusterChoice("processes", workers, "--workers")
    if data_bytes is not None and data_bytes < SMALL_BYTES:
        return ClusterChoice("threads", cores, f"{data_bytes / 2**20:.0f} MiB of data")
    size = "size unknown" if data_bytes is None else f"{data_bytes / 2**20:.0f} MiB of data"
    return ClusterChoice("processes", cores, size)


@contextlib.contextmanager
def dask_client(
    scheduler: str | None = None,
    workers: int | None = None,
    memory_limit: str | None = "4GiB",
    *,
    processes: bool = True,
    dashboard: str | None = None,
) -> Iterator[Client]:
    """Connect to ``scheduler`` if given, else start a local cluster: ``workers`` single-threaded
    worker processes, or (``processes=False``) one worker in this process with ``workers``
    threads. ``dashboard`` (``HOST:PORT``, ``:0`` for any port) serves Dask's dashboard."""
    if scheduler:
        with Client(scheduler) as client:
            yield client
        return
    n = workers or os.cpu_count() or 1
    # A worker slow to exit at shutdown (a busy machine) is killed by its nanny with a warning the
    # user can do nothing about, after the command's own last line: silenced while shutting down.
    nanny = logging.getLogger("distributed.nanny")
    level = nanny.level
    # Without a dashboard the scheduler's bare HTTP routes go to a free loopback port, not 8787
    # (which another cluster may hold: a warning on every build).
    http = dashboard if dashboard is not None else "127.0.0.1:0"
    shape = ({"n_workers": n, "threads_per_worker": 1} if processes
             else {"n_workers": 1, "threads_per_worker": n})
    try:
        with LocalCluster(**shape, memory_limit=memory_limit, processes=processes,
                          dashboard_address=dashboard,
                          scheduler_kwargs={"dashboard_address": http},
                          silence_logs=logging.WARNING) as cluster, Client(cluster) as client:
            client.register_plugin(QuietTaskErrors())
            try:
                yield client
            finally:
                nanny.setLevel(logging.ERROR)
    finally:
        nanny.setLevel(level)


@contextlib.contextmanager
def chosen_client(choice: ClusterChoice, memory_limit: str | None = "4GiB",
                  dashboard: str | None = None) -> Iterator[Client]:
    """The client of a :class:`ClusterChoice`."""
    with dask_client(choice.address, choice.workers, memory_limit, processes=choice.kind != "threads",
                     dashboard=dashboard) as client:
        yield client


def cache_compiled_kernels(*modules: object) -> int:
    """Let numba keep the compiled code of these modules' jitted functions on disk.

    hats compiles its pixel-alignment kernels (``align_trees``: every crossmatch and join) on first
    use, seconds per process, and declares them without ``cache=True``; turning numba's cache on
    for them before their first call makes later processes load the compiled code instead (from
    ``__pycache__`` beside hats, or numba's user-wide cache, or ``NUMBA_CACHE_DIR``). Returns
    how many functions were switched on.
    """
    done = 0
    for module in modules:
        for obj in vars(module).values():
            if isinstance(obj, CPUDispatcher) and not obj.signatures:
                try:
                    obj.enable_caching()
                except RuntimeError as e:  # no writable cache location: compile as before
                    log.debug("numba cache off for %s: %s", obj.py_func.__qualname__, e)
                    continue
                done += 1
    return done


def dashboard_url(client: Client, address: str | None) -> str:
    """The dashboard's URL on the host it listens on (``client.dashboard_link`` names the machine's
    address, which a dashboard bound to ``127.0.0.1:PORT`` does not answer on)."""
    link = client.dashboard_link
    host = (address or "").rpartition(":")[0]
    port = client.scheduler_info().get("services", {}).get("dashboard")
    if not host or host in ("0.0.0.0", "*") or port is None:
        return link
    return f"http://{host}:{port}/status"
