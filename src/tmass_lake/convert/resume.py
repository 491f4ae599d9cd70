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
from collections.abc import Callable
from typing import Any, TypeVar

from tmass_lake.errors import BuildError
from tmass_lake.storage import StorageError, ensure_dir, filesystem, join, read_json, url_of, write_json

_KEY = re.compile(r"[A-Za-z0-9_.=-]+")
T = TypeVar("T")
K = TypeVar("K")


MAX_ORDER = 29  # HEALPix orders a HATS pixel can have


def record_of(**kinds: type) -> Callable[[dict], dict]:
    """A check that a record holds ``kinds``' keys with values of those types (``bool`` is no ``int``)
    and in range: every integer of a record (a count, an index, an order, a pixel) is >= 0, an
    ``order`` at most 29 and a ``pixel`` one of its order's."""
    def check(record: dict) -> dict:
        for key, kind in kinds.items():
            value = record.get(key)
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise ValueError(f"{key!r} is {_short(value)}, not {kind.__name__}")
            if kind is int and value < 0:
                raise ValueError(f"{key!r} is {value}, not a count or index (>= 0)")
        order, pixel = record.get("order"), record.get("pixel")
        if kinds.get("order") is int and order > MAX_ORDER:
            raise ValueError(f"'order' is {order}, not a HEALPix order (0 to {MAX_ORDER})")
        if kinds.get("order") is int and kinds.get("pixel") is int and pixel >= 12 * 4**order:
            raise ValueError(f"'pixel' is {pixel}, not a pixel of order {order}")
        return record

    return check


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "..."


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

    def all(self, stage: str, parse: Callable[[dict], T] | None = None,
            key: Callable[[str], K] = str) -> dict[K, T]:
        """Every record of a stage, by key (sorted), each through ``parse`` (and its key through ``key``).

        A record that does not parse (a file someone else wrote or damaged) is a
        :class:`~tmass_lake.errors.BuildError` naming it: the plan cannot be trusted to resume from.
        """
        out = {}
        for f in sorted(self.fs.glob(join(self.root, stage, "*.json"))):
            record = self._read(f)
            try:
                out[key(f.rsplit("/", 1)[-1][: -len(".json")])] = parse(record) if parse else record
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                raise BuildError(f"{url_of(self.fs, f)} is not a progress record tmass-lake wrote "
                                 f"({type(e).__name__}: {e}): it cannot be resumed from") from e
        return out

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
