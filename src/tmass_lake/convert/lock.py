"""One build per output at a time: a lock object beside the output, on any filesystem.

The lock (``OUTPUT/_build.lock``, JSON: host, pid, start time, a token) is created with an
exclusive write (:func:`~tmass_lake.storage.create_exclusive`: a conditional write on S3) and
refreshed by its holder every ``heartbeat`` seconds. Another build into the same output is
refused at once, naming the holder. A lock whose holder is gone (its process no longer runs on
this host, or it has not been refreshed for ``lease`` seconds) is taken over only by
``--resume``: continuing an interrupted build is the one case where it is expected.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from datetime import UTC, datetime

from tmass_lake.errors import LockError
from tmass_lake.storage import (
    StorageError,
    create_exclusive,
    filesystem,
    join,
    read_json,
    retrying,
    url_of,
    write_json,
)

log = logging.getLogger(__name__)
LOCK_FILE = "_build.lock"


class BuildLock:
    """``with BuildLock(output, ...):`` holds the output for one build."""

    def __init__(self, output: str, storage_options: dict | None = None, *, resume: bool = False,
                 lease: float = 180.0, heartbeat: float = 30.0):
        self.output, self.resume, self.lease, self.heartbeat = output, resume, lease, heartbeat
        self.fs, root = filesystem(output, storage_options)
        self.path = join(root, LOCK_FILE)
        self.token = uuid.uuid4().hex
        self.record = {"host": socket.gethostname(), "pid": os.getpid(),
                       "started": datetime.now(UTC).isoformat(timespec="seconds"), "token": self.token}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _payload(self) -> bytes:
        return json.dumps(self.record | {"refreshed": time.time()}).encode()

    def __enter__(self) -> BuildLock:
        if not create_exclusive(self.fs, self.path, self._payload()):
            holder = self._holder()
            where = f"{holder.get('pid')} on {holder.get('host')}, started {holder.get('started')}"
            if not self._stale(holder):
                raise LockError(f"{self.output} is being built by process {where} "
                                f"(lock {url_of(self.fs, self.path)}); wait for that build to finish")
            if not self.resume:
                raise LockError(f"{self.output} is locked by an interrupted build (process {where}, "
                                "no longer running): pass --resume to continue it")
            log.warning("taking over the lock of an interrupted build (process %s)", where)
            retrying(lambda: self.fs.rm(self.path), what=f"removing {url_of(self.fs, self.path)}")
            if not create_exclusive(self.fs, self.path, self._payload()):
                raise LockError(f"{self.output}: another build took the lock first ({self._holder()})")
        self._thread = threading.Thread(target=self._refresh, name="tmass-lake-lock", daemon=True)
        self._thread.start()
        return self

    def _holder(self) -> dict:
        try:
            holder = read_json(self.fs, self.path)
            return holder if isinstance(holder, dict) else {}
        except (StorageError, FileNotFoundError):
            return {}

    def _stale(self, holder: dict) -> bool:
        if not holder:
            return True  # unreadable or vanished: nobody can be refreshing it
        if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
            try:
                os.kill(holder["pid"], 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                return False
            return False
        return time.time() - float(holder.get("refreshed", 0)) > self.lease

    def _refresh(self) -> None:
        while not self._stop.wait(self.heartbeat):
            try:
                if self._holder().get("token") == self.token:
                    write_json(self.fs, self.path, json.loads(self._payload()))
            except StorageError as e:  # a missed heartbeat is not fatal; the next one may succeed
                log.warning("could not refresh the build lock %s: %s", self.path, e)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._holder().get("token") == self.token:
            retrying(lambda: self.fs.rm(self.path), what=f"removing {url_of(self.fs, self.path)}")
