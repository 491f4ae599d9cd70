"""Running a list of independent tasks on the lake's Dask client, with a progress bar."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from dask.distributed import Client, as_completed
from hats.pixel_math import HealpixPixel
from tqdm.auto import tqdm

from tmass_lake.convert.resume import ResumePlan
from tmass_lake.storage import filesystem, forget_listings

log = logging.getLogger(__name__)
K = TypeVar("K")


def run_tasks(client: Client, fn: Callable[[Any], Any], items: Sequence, label: str,
              progress: bool = True, on_done: Callable[[Any], None] | None = None) -> list:
    """``[fn(item) for item in items]`` on the cluster, in item order.

    ``on_done`` sees each result as soon as it arrives (to record progress for resuming). Task
    errors are not retried: transient storage errors are retried inside the tasks, and a task
    lost with its worker is rescheduled by Dask; a bad input would fail the same way again.
    Each finished future is released, so a lost worker does not make Dask recompute it.
    """
    if not items:
        return []
    tag = uuid.uuid4().hex[:8]
    futures = [client.submit(fn, item, key=f"{label.replace(' ', '-')}-{i}-{tag}", pure=False)
               for i, item in enumerate(items)]
    index = {f.key: i for i, f in enumerate(futures)}
    results: list = [None] * len(items)
    # A bar only for a stage that lasts (delay), only on a terminal (disable=None: no bar lines in
    # logs), and gone when done (leave=False): what stays is the table's one summary line.
    with tqdm(total=len(items), desc=f"{label:<8}", disable=None if progress else True, unit="task",
              delay=2.0, leave=False) as bar:
        for fut in as_completed(futures):
            res = fut.result()
            fut.release()
            results[index[fut.key]] = res
            if on_done is not None:
                on_done(res)
            bar.update(1)
    return results


def still_written(records: dict[K, dict], files: Callable[[dict], list[str]],
                  storage_options: dict | None) -> dict[K, dict]:
    """The recorded steps whose ``files`` are all still there; each lost file is logged by name
    and its step dropped, so ``--resume`` does it again instead of failing at the row count."""
    kept = {}
    for key, rec in records.items():
        lost = []
        for url in files(rec):
            fs, path = filesystem(url, storage_options)
            forget_listings(fs, path)  # written by the workers after this process listed the output
            if not fs.exists(path):
                lost.append(url)
        if lost:
            log.warning("%s: recorded as written but gone; writing it again", ", ".join(lost))
        else:
            kept[key] = rec
    return kept


def run_pixel_tasks(client: Client, fn: Callable[[HealpixPixel], dict], pixels: Sequence[HealpixPixel],
                    plan: ResumePlan, stage: str, label: str, progress: bool = True,
                    parse: Callable[[dict], dict] | None = None,
                    files: Callable[[dict], list[str]] | None = None,
                    storage_options: dict | None = None) -> list[dict]:
    """``fn(pixel)`` for every pixel not yet recorded in the plan's ``stage``; the records (dicts
    with ``order`` and ``pixel``, checked by ``parse`` when resuming) in pixel order. Each is
    recorded as it arrives, for resuming; ``files``: the files a record says were written, a
    recorded pixel whose files are gone is done again (:func:`still_written`)."""
    done = {(r["order"], r["pixel"]): r for r in plan.all(stage, parse).values()}
    if files is not None:
        done = still_written(done, files, storage_options)

    def record(rec: dict) -> None:
        plan.put(stage, f"{rec['order']}_{rec['pixel']}", rec)
        done[(rec["order"], rec["pixel"])] = rec

    run_tasks(client, fn, [p for p in pixels if (p.order, p.pixel) not in done], label, progress, record)
    return [done[(p.order, p.pixel)] for p in pixels]
