"""Where bytes live: fsspec filesystems for inputs, lakes and spill, with atomic writes and retries."""

from __future__ import annotations

import contextlib
import io
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TypeVar

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem

log = logging.getLogger(__name__)
T = TypeVar("T")

TRANSIENT = (ConnectionError, TimeoutError)


def filesystem(url: str, storage_options: dict | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem of a URL and the path within it."""
    return url_to_fs(url, **(storage_options or {}))


def join(url: str, *parts: str) -> str:
    """Join URL parts with '/' (object-store safe)."""
    return "/".join([url.rstrip("/"), *(p.strip("/") for p in parts)])


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def retrying(fn: Callable[[], T], *, what: str, attempts: int = 5, base_delay: float = 0.2) -> T:
    """Run ``fn``, retrying transient object-store errors with exponential backoff."""
    for attempt in range(attempts):
        try:
            return fn()
        except TRANSIENT as e:  # permanent errors (FileNotFound, Permission) propagate at once
            if attempt == attempts - 1:
                raise
            delay = base_delay * 2**attempt
            log.warning("%s: transient error %r, retrying in %.1fs", what, e, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


@contextlib.contextmanager
def open_atomic(fs: fsspec.AbstractFileSystem, path: str) -> Iterator[io.BufferedIOBase]:
    """Open for writing so that readers see the whole file or nothing.

    Local files are written under a temporary name and renamed; object stores make a PUT
    visible only when the upload completes, which is atomic already.
    """
    if is_local(fs):
        fs.makedirs(fs._parent(path), exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        try:
            with fs.open(tmp, "wb") as f:
                yield f
            fs.mv(tmp, path)
        finally:
            if fs.exists(tmp):
                fs.rm(tmp)
    else:
        with fs.open(path, "wb") as f:
            yield f


def write_parquet(table: pa.Table, fs: fsspec.AbstractFileSystem, path: str, **kwargs) -> int:
    """Write one Parquet file atomically (with retries); returns its size in bytes."""
    kwargs.setdefault("compression", "zstd")

    def put() -> int:
        with open_atomic(fs, path) as f:
            pq.write_table(table, f, **kwargs)
        return int(fs.size(path))

    return retrying(put, what=f"writing {path}")


def write_text(fs: fsspec.AbstractFileSystem, path: str, text: str) -> None:
    def put() -> None:
        with open_atomic(fs, path) as f:
            f.write(text.encode())

    retrying(put, what=f"writing {path}")


def expand_inputs(urls: list[str], storage_options: dict | None = None) -> list[str]:
    """Files named by URLs, globs or directories (a directory means every file under it), sorted."""
    found: list[str] = []
    for url in urls:
        fs, path = filesystem(url, storage_options)
        protocol = url.split("://", 1)[0] + "://" if "://" in url else ""
        if any(ch in path for ch in "*?["):
            paths = sorted(fs.glob(path))
        elif fs.isdir(path):
            paths = sorted(p for p in fs.find(path) if not fs.isdir(p))
        else:
            paths = [path]  # a missing file is reported by the reader, with its name
        found.extend(protocol + p if protocol and not p.startswith(protocol) else p for p in paths)
    return found
