"""Remembering progress, as JSON only: the one resume mechanism of every stage and of the lake.

:class:`Records` keeps one small JSON file per finished step (``<root>/<stage>/<key>.json``).
A :class:`ResumePlan` is the records of one build in its scratch space plus the fingerprint the
build started with (``arguments.json``): ``--resume`` skips every recorded step and refuses to
continue a build whose arguments changed. Nothing is ever unpickled: scratch may live on a
shared object-store prefix where others can write.
"""

from __future__ import annotations

import json
import re
from typing import Any

from tmass_lake.errors import BuildError
from tmass_lake.storage import StorageError, ensure_dir, filesystem, join, read_json, url_of, write_json

_KEY = re.compile(r"[A-Za-z0-9_.=-]+")


class Records:
    """JSON records under ``url``, by stage and key."""

    def __init__(self, url: str, storage_options: dict | None = None):
        self.url = url
        self.fs, self.root = filesystem(url, storage_options)

    def _path(self, stage: str, key: str) -> str:
        for part in (stage, key):
            if not _KEY.fullmatch(part):
                raise ValueError(f"not a record name: {part!r}")
        return join(self.root, stage, f"{key}.json")

    def get(self, stage: str, key: str) -> dict | None:
        path = self._path(stage, key)
        return self._read(path) if self.fs.exists(path) else None

    def put(self, stage: str, key: str, record: dict) -> None:
        ensure_dir(self.fs, join(self.root, stage))
        write_json(self.fs, self._path(stage, key), record)

    def all(self, stage: str) -> dict[str, dict]:
        """Every record of a stage, by key (sorted)."""
        files = sorted(self.fs.glob(join(self.root, stage, "*.json")))
        return {f.rsplit("/", 1)[-1][: -len(".json")]: self._read(f) for f in files}

    def _read(self, path: str) -> dict:
        record = read_json(self.fs, path)
        if not isinstance(record, dict):
            raise StorageError(f"{url_of(self.fs, path)}: not a progress record")
        return record


class ResumePlan(Records):
    """The progress of one build: its starting fingerprint and a record per finished step."""

    def __init__(self, url: str, fingerprint: dict[str, Any], *, resume: bool,
                 storage_options: dict | None = None):
        super().__init__(url, storage_options)
        path = join(self.root, "arguments.json")
        fingerprint = json.loads(json.dumps(fingerprint, default=str))
        if resume and self.fs.exists(path):
            before = self._read(path)
            keys = sorted(set(before) | set(fingerprint))
            changed = [k for k in keys if before.get(k) != fingerprint.get(k)]
            if changed:
                raise BuildError(
                    f"cannot resume the build in {url_of(self.fs, self.root)}: it was started with other "
                    f"{', '.join(changed)}; rerun with the same arguments, or without --resume")
        else:
            if self.fs.exists(self.root):
                self.fs.rm(self.root, recursive=True)
            ensure_dir(self.fs, self.root)
            write_json(self.fs, path, fingerprint)
