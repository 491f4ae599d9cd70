"""Where bytes live: fsspec filesystems for inputs, lakes and scratch, with atomic writes and retries.

The ground floor: it imports nothing of ours.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import os
import posixpath
import time
import uuid
from collections.abc import Callable, Iterator
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


def forget_listings(fs: fsspec.AbstractFileSystem, path: str) -> None:
    """Drop the directory listings ``fs`` cached for ``path``, its parents and everything below it.

    An object-store filesystem remembers listings, and a listing taken before other processes
    (the workers) wrote under ``path`` would hide their files: call this before listing them.
    """
    path = fs._strip_protocol(path).rstrip("/")
    for key in list(getattr(fs, "dircache", {})):
        if key == path or key.startswith(path + "/") or path.startswith(key.rstrip("/") + "/"):
            fs.dircache.pop(key, None)


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
            return int(f.tell())  # the bytes written: no second request to ask the store

    return retrying(put, what=f"writing {url_of(fs, path)}")


def write_bytes(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write ``data`` to one file atomically (with retries)."""
    def put() -> None:
        with open_atomic(fs, path) as f:
            f.write(data)

    retrying(put, what=f"writing {url_of(fs, path)}")


def write_text(fs: fsspec.AbstractFileSystem, path: str, text: str) -> None:
    write_bytes(fs, path, text.encode())


def read_bytes(fs: fsspec.AbstractFileSystem, path: str) -> bytes:
    """A whole (small) file, with retries."""
    return retrying(lambda: fs.cat_file(path), what=f"reading {url_of(fs, path)}")


def read_json(fs: fsspec.AbstractFileSystem, path: str) -> object:
    """A JSON file (never pickle: scratch and lakes may sit where others can write)."""
    data = read_bytes(fs, path)
    try:
        return json.loads(data)
    except ValueError as e:
        raise StorageError(f"{url_of(fs, path)}: not valid JSON ({e})") from e


def write_json(fs: fsspec.AbstractFileSystem, path: str, obj: object) -> None:
    write_text(fs, path, json.dumps(obj, indent=1, default=str))


def create_exclusive(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> bool:
    """Write ``path`` only if it does not exist yet, atomically; ``False`` if it already exists.

    Local files: written aside and hard-linked into place (``link`` fails on an existing name).
    Other filesystems: fsspec's ``pipe_file(mode="create")``, a conditional write on S3
    (``If-None-Match: *``) and check-then-write elsewhere (two racing writers could both pass).
    """
    if is_local(fs):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}{TMP_MARK}{uuid.uuid4().hex}"
        with open(tmp, "wb") as f:
            f.write(data)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
    try:  # fsspec's exclusive write: S3 (s3fs) makes it a conditional PUT, others check first
        retrying(lambda: fs.pipe_file(path, data, mode="create"), what=f"creating {url_of(fs, path)}")
    except StorageError as e:
        if isinstance(e.__cause__, FileExistsError):
            return False
        raise
    return True


def identity(fs: fsspec.AbstractFileSystem, path: str) -> dict:
    """What tells a changed file without reading it: size, and mtime (local) or ETag (object store)."""
    info = retrying(lambda: fs.info(path), what=f"inspecting {url_of(fs, path)}")
    out = {"size": int(info.get("size") or 0)}
    for key in ("ETag", "etag", "mtime", "LastModified", "last_modified", "updated"):
        if info.get(key) is not None:
            value = info[key]
            out["version"] = value if isinstance(value, int | float | str) else str(value)
            break
    return out


OUTPUT_MARK = ".tmass-lake-output"  # what a command leaves in a directory it created as its output


class OutputExistsError(StorageError):
    """An output that exists and may not be replaced (no ``--overwrite``, or not ours to remove)."""


def owned_by_tmass_lake(fs: fsspec.AbstractFileSystem, path: str) -> bool:
    """Whether the directory ``path`` was created by a tmass-lake command (it holds the mark)."""
    return bool(retrying(lambda: fs.exists(join(path, OUTPUT_MARK)),
                         what=f"inspecting {url_of(fs, path)}"))


def mark_output(fs: fsspec.AbstractFileSystem, path: str, command: str) -> None:
    """Leave the mark of ``command`` in the output directory ``path`` (created here if local)."""
    ensure_dir(fs, path)
    write_json(fs, join(path, OUTPUT_MARK), {"written_by": f"tmass-lake {command}"})


def claim_output(fs: fsspec.AbstractFileSystem, path: str, *, overwrite: bool, command: str,
                 directory: bool, owned: Callable[[], bool] | None = None, check_only: bool = False) -> None:
    """Make ``path`` free for a new output of ``command``, or refuse with one clear line.

    A missing path (or an empty directory) is free. Anything else is refused unless
    ``overwrite``; with it a file is left to be replaced atomically by the writer, and a
    directory is removed whole only when a tmass-lake command created it (its mark, or
    ``owned()``): what the command did not create is never removed. A directory output is
    marked before anything else is written into it, so a killed run can be replaced too.
    ``check_only`` refuses as above but removes and marks nothing (call it before a long
    computation, and again without it just before writing).
    """
    url = url_of(fs, path)
    forget_listings(fs, path)
    is_dir = retrying(lambda: fs.isdir(path), what=f"inspecting {url}")
    exists = is_dir or retrying(lambda: fs.exists(path), what=f"inspecting {url}")
    if is_dir and not retrying(lambda: fs.ls(path, detail=False), what=f"listing {url}"):
        exists = False
    if exists:
        if not overwrite:
            raise OutputExistsError(f"{url} already exists; pass --overwrite to replace it "
                                    "(the whole output is replaced)")
        if is_dir != directory:
            have, want = ("a directory", "a file") if is_dir else ("a file", "a directory")
            raise OutputExistsError(f"{url} is {have}, and {command} writes {want} there: "
                                    "not replaced; remove it yourself or pick another output")
        if is_dir:
            if not (owned_by_tmass_lake(fs, path) or (owned is not None and owned())):
                raise OutputExistsError(f"{url} was not written by tmass-lake (no {OUTPUT_MARK}): "
                                        "not removed even with --overwrite; remove it yourself "
                                        "or pick another output")
            if check_only:
                return
            retrying(lambda: fs.rm(path, recursive=True), what=f"removing {url}")
            forget_listings(fs, path)
    if directory and not check_only:
        mark_output(fs, path, command)


def inside(root: str, path: object) -> str | None:
    """``root/path`` when ``path`` is a relative path that stays inside ``root`` (lexically), else None.

    Absolute paths, URLs, backslashes and ``..`` leading out of ``root`` give None: a path read
    from a file (a manifest's entry) never leads outside the root it describes.
    """
    if not isinstance(path, str) or not path or "://" in path or "\\" in path or path.startswith("/"):
        return None
    norm = posixpath.normpath(path)
    if norm in (".", "..") or norm.startswith("../"):
        return None
    return join(root, norm)
