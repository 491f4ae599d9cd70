"""Spill runs: sorted Arrow IPC files in the scratch space, written atomically, read back by range.

A run is written once (under a temporary name locally; as one upload on object stores), in
record batches of :data:`SPILL_BATCH_ROWS` rows, so a reader can fetch just the batches holding
the rows it wants. The map stage spills rows sorted by ``_healpix_29`` (with their fine-pixel
histogram, which doubles as the run's index); the index build spills ``(value, _healpix_29)``
rows sorted by value. Runs are named by full URL, protocol included, so any worker opens them.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from tmass_lake.storage import filesystem, is_local, open_atomic, retrying, url_of

SPILL_BATCH_ROWS = 65_536


def _encode(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype="<i8").tobytes()).decode()


def _decode(s: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(s), dtype="<i8").astype(np.int64)


@dataclass
class SpillRun:
    """One spill run: its URL, rows and in-memory bytes, and (map runs) its fine-pixel histogram."""

    url: str
    rows: int
    nbytes: int
    pixels: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    counts: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))

    def to_json(self) -> dict:
        return {"url": self.url, "rows": self.rows, "nbytes": self.nbytes,
                "pixels": _encode(self.pixels), "counts": _encode(self.counts)}

    @classmethod
    def from_json(cls, d: dict) -> SpillRun:
        return cls(str(d["url"]), int(d["rows"]), int(d["nbytes"]), _decode(d["pixels"]),
                   _decode(d["counts"]))


def write_run(table: pa.Table, url: str, storage_options: dict | None = None,
              batch_rows: int = SPILL_BATCH_ROWS) -> int:
    """Write ``table`` as a run of fixed-size batches, atomically; returns its in-memory bytes.

    Atomic because a task Dask reruns after losing a worker rewrites its runs while readers may
    be reading them: they must see the old file or the new one, never half of one.
    """
    fs, path = filesystem(url, storage_options)

    def put() -> None:
        with open_atomic(fs, path) as f, ipc.new_file(f, table.schema) as writer:
            for batch in table.combine_chunks().to_batches(max_chunksize=batch_rows):
                writer.write_batch(batch)

    retrying(put, what=f"spilling {url_of(fs, path)}")
    return table.nbytes


def _gather(url: str, batches: np.ndarray, storage_options: dict | None,
            finish: Callable[[pa.Table], pa.Table]) -> pa.Table:
    """``finish`` applied to the given batches of a run (read from its footer's offsets)."""
    fs, path = filesystem(url, storage_options)

    def read() -> pa.Table:
        # Plain reads, not a memory map: only the batches asked for are read, and the worker's
        # memory (which Dask watches) holds them alone, not every page of the run it touched.
        source = pa.OSFile(path, "rb") if is_local(fs) else fs.open(path, "rb")
        with source:
            reader = ipc.open_file(source)
            table = pa.Table.from_batches([reader.get_batch(int(b)) for b in batches], schema=reader.schema)
            return finish(table)

    return retrying(read, what=f"reading spill run {url_of(fs, path)}")


def read_batches(url: str, batches: np.ndarray, storage_options: dict | None = None) -> pa.Table:
    """The given record batches of a run (sorted batch numbers), as one table."""
    return _gather(url, batches, storage_options, lambda t: t.combine_chunks())


def read_rows(url: str, rows: np.ndarray, storage_options: dict | None = None,
              batch_rows: int = SPILL_BATCH_ROWS) -> pa.Table:
    """Rows ``rows`` (sorted row numbers) of a run: one read of the batches that hold them."""
    batches = np.unique(rows // batch_rows)
    # Row r sits at (rank of its batch) * batch_rows + r % batch_rows in the gathered batches
    # (all full-size but possibly the run's last one).
    local = np.searchsorted(batches, rows // batch_rows) * batch_rows + rows % batch_rows
    return _gather(url, batches, storage_options, lambda t: t.take(pa.array(local)))
