"""Where bytes live: fsspec filesystems for inputs, lakes and spill, with atomic writes and retries."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem
from fsspec.spec import AbstractBufferedFile

log = logging.getLogger(__name__)
T = TypeVar("T")

TRANSIENT = (ConnectionError, TimeoutError)
# Errors object-store clients raise for a failed connection or an overloaded service, by class
# name (the clients are optional imports): botocore's ConnectionError covers EndpointConnectionError
# and ConnectTimeoutError, HTTPClientError covers ReadTimeoutError and ConnectionClosedError.
TRANSIENT_NAMES = frozenset({"ConnectionError", "HTTPClientError", "ClientConnectionError",
                             "ClientPayloadError", "ServerDisconnectedError", "IncompleteRead"})
# s3fs turns SlowDown / 503 / OperationAborted into OSError(EBUSY), InternalError / 500 into
# OSError(EREMOTEIO); a reset or timed-out socket surfaces as ECONNRESET / ETIMEDOUT.
TRANSIENT_ERRNOS = frozenset({errno.EBUSY, getattr(errno, "EREMOTEIO", 121), errno.ECONNRESET,
                              errno.ETIMEDOUT, errno.EAGAIN})
TRANSIENT_HTTP_STATUS = frozenset({408, 429, 500, 502, 503, 504})


class StorageError(OSError):
    """A read or write that failed for good (after retries); the message names the URL."""


def is_transient(e: BaseException) -> bool:
    """Whether an error is worth retrying: lost connections, timeouts, throttling, 5xx.

    Missing files or buckets and refused permissions are permanent and are not retried.
    """
    if isinstance(e, FileNotFoundError | PermissionError | IsADirectoryError | NotADirectoryError):
        return False
    if isinstance(e, TRANSIENT):
        return True
    if any(c.__name__ in TRANSIENT_NAMES for c in type(e).__mro__):
        return True
    if isinstance(e, OSError) and e.errno in TRANSIENT_ERRNOS:
        return True
    status = getattr(e, "status", None) or getattr(e, "code", None)
    return isinstance(status, int) and status in TRANSIENT_HTTP_STATUS


def filesystem(url: str, storage_options: dict | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem of a URL and the path within it."""
    return url_to_fs(url, **(storage_options or {}))


def join(url: str, *parts: str) -> str:
    """Join URL parts with '/' (object-store safe)."""
    return "/".join([url.rstrip("/"), *(p.strip("/") for p in parts)])


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def url_of(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """The URL of a filesystem path, for messages (``s3://bucket/key``; local paths as they are)."""
    return path if is_local(fs) else fs.unstrip_protocol(path)


def ensure_dir(fs: fsspec.AbstractFileSystem, path: str) -> None:
    """Create a local directory. Object stores have no directories, and s3fs' ``makedirs``
    would create a missing *bucket*: a mistyped URL must fail instead."""
    if is_local(fs):
        fs.makedirs(path, exist_ok=True)


def retrying(fn: Callable[[], T], *, what: str, attempts: int = 5, base_delay: float = 0.2) -> T:
    """Run ``fn``, retrying transient object-store errors with exponential backoff.

    A permanent storage error (no such bucket or key, access denied), or a transient one that
    outlasts the attempts, is raised as :class:`StorageError` naming ``what``.
    """
    for attempt in range(attempts):
        try:
            return fn()
        except StorageError:
            raise
        except Exception as e:
            transient = is_transient(e)
            if transient and attempt < attempts - 1:
                delay = base_delay * 2**attempt
                log.warning("%s: transient error %r, retrying in %.1fs", what, e, delay)
                time.sleep(delay)
                continue
            if transient or isinstance(e, OSError):
                tries = f" (after {attempts} attempts)" if transient else ""
                raise StorageError(f"{what}: {type(e).__name__}: {e}{tries}") from e
            raise
    raise AssertionError("unreachable")


TMP_MARK = ".tmp-"


def remove_stale_temporaries(fs: fsspec.AbstractFileSystem, path: str) -> None:
    """Delete temporaries of ``path`` left by a writer killed before its rename.

    They sit next to the final file, where hats' metadata scan (any file under ``dataset/``)
    would pick them up; a resumed build rewrites the file and clears them first.
    """
    for stale in fs.glob(f"{path}{TMP_MARK}*"):
        fs.rm(stale)


@contextlib.contextmanager
def open_atomic(fs: fsspec.AbstractFileSystem, path: str) -> Iterator[io.BufferedIOBase]:
    """Open for writing so that readers see the whole file or nothing.

    Local files are written under a temporary name and renamed; object stores make an upload
    visible only when it completes. But closing an fsspec upload completes it, so when the
    writer fails the upload is discarded (aborted), never closed: no truncated object appears.
    """
    if is_local(fs):
        fs.makedirs(fs._parent(path), exist_ok=True)
        remove_stale_temporaries(fs, path)
        tmp = f"{path}{TMP_MARK}{uuid.uuid4().hex}"
        try:
            with fs.open(tmp, "wb") as f:
                yield f
            fs.mv(tmp, path)
        finally:
            if fs.exists(tmp):
                fs.rm(tmp)
    else:
        f = fs.open(path, "wb")
        try:
            yield f
        except BaseException:
            if isinstance(f, AbstractBufferedFile):
                with contextlib.suppress(Exception):
                    f.discard()
                f.closed = True  # and no commit when it is garbage-collected
            raise
        f.close()


def write_parquet(table: pa.Table, fs: fsspec.AbstractFileSystem, path: str, **kwargs) -> int:
    """Write one Parquet file atomically (with retries); returns its size in bytes."""
    kwargs.setdefault("compression", "zstd")

    def put() -> int:
        with open_atomic(fs, path) as f:
            pq.write_table(table, f, **kwargs)
        return int(fs.size(path))

    return retrying(put, what=f"writing {url_of(fs, path)}")


def write_text(fs: fsspec.AbstractFileSystem, path: str, text: str) -> None:
    def put() -> None:
        with open_atomic(fs, path) as f:
            f.write(text.encode())

    retrying(put, what=f"writing {url_of(fs, path)}")


def expand_inputs(urls: list[str], storage_options: dict | None = None) -> list[str]:
    """Files named by URLs, globs or directories (a directory means every file under it), sorted.

    A glob or directory matching no file is an :class:`InputError` naming it.
    """
    from tmass_lake.readers.errors import InputError

    found: list[str] = []
    for url in urls:
        fs, path = filesystem(url, storage_options)
        protocol = url.split("://", 1)[0] + "://" if "://" in url else ""
        if any(ch in path for ch in "*?["):
            paths = sorted(p for p in fs.glob(path) if not fs.isdir(p))
            if not paths:
                raise InputError(url, "no file matches this pattern")
        elif fs.isdir(path):
            paths = sorted(p for p in fs.find(path) if not fs.isdir(p))
            if not paths:
                raise InputError(url, "directory holds no files")
        elif url.endswith("/"):
            raise InputError(url, "no such directory")
        else:
            paths = [path]  # a missing file is reported by the reader, with its name
        found.extend(protocol + p if protocol and not p.startswith(protocol) else p for p in paths)
    return found


def local_scratch(output: str) -> str:
    """A local spill/resume directory for a build writing to a remote ``output`` (one per output URL)."""
    digest = hashlib.sha1(output.encode()).hexdigest()[:12]
    name = output.rstrip("/").rsplit("/", 1)[-1]
    return str(Path.home() / ".cache" / "tmass-lake" / f"{name}-{digest}")
