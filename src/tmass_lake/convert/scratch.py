"""A build's own scratch space, and the only removals a build makes.

The scratch directory is claimed with a marker file naming the output it serves; it is removed
only through :meth:`Scratch.remove`, which refuses a directory without that marker. Removals
inside an output (a stale index or derived catalog being rebuilt) go through
:func:`remove_inside`, which refuses any path not strictly below the output.
"""

from __future__ import annotations

import posixpath
from datetime import UTC, datetime

from tmass_lake.errors import BuildError
from tmass_lake.storage import (
    StorageError,
    ensure_dir,
    filesystem,
    join,
    read_json,
    retrying,
    url_of,
    write_json,
)

MARKER = ".tmass-lake-scratch"


class Scratch:
    """The scratch space of the build into ``owner`` (an output URL)."""

    def __init__(self, url: str, owner: str, storage_options: dict | None = None):
        self.url, self.owner = url, owner
        self.fs, self.root = filesystem(url, storage_options)

    @property
    def marker(self) -> str:
        return join(self.root, MARKER)

    def claim(self) -> Scratch:
        """Create (or re-enter) the space; refuse one that serves another output."""
        if self.fs.exists(self.marker):
            holder = self._holder()
            if holder != self.owner:
                raise BuildError(f"scratch space {url_of(self.fs, self.root)} belongs to the build of "
                                 f"{holder}, not {self.owner}: choose another --tmp-dir")
            return self
        if self.fs.exists(self.root) and self.fs.ls(self.root):
            raise BuildError(f"scratch space {url_of(self.fs, self.root)} already holds files that no "
                             "tmass-lake build made: choose another --tmp-dir")
        ensure_dir(self.fs, self.root)
        write_json(self.fs, self.marker, {"output": self.owner,
                                          "created": datetime.now(UTC).isoformat(timespec="seconds")})
        return self

    def _holder(self) -> str | None:
        try:
            return read_json(self.fs, self.marker).get("output")
        except (StorageError, AttributeError):
            return None

    def remove(self) -> None:
        """Delete the space, only if this build's marker is in it."""
        if not self.fs.exists(self.root):
            return
        if self._holder() != self.owner:
            raise BuildError(f"refusing to remove {url_of(self.fs, self.root)}: it is not the scratch "
                             f"space of the build of {self.owner}")
        retrying(lambda: self.fs.rm(self.root, recursive=True), what=f"removing {url_of(self.fs, self.root)}")

    def clear(self, *parts: str) -> None:
        """Empty a subdirectory of the space (a fresh start of one stage)."""
        path = join(self.root, *parts)
        if parts and self.fs.exists(path):
            retrying(lambda: self.fs.rm(path, recursive=True), what=f"removing {url_of(self.fs, path)}")


def remove_inside(url: str, inside: str, storage_options: dict | None = None) -> None:
    """Remove ``url`` (recursively) if it exists, refusing anything not strictly below ``inside``."""
    fs, path = filesystem(url, storage_options)
    _, base = filesystem(inside, storage_options)
    path_n, base_n = posixpath.normpath(path), posixpath.normpath(base).rstrip("/")
    if not base_n or not path_n.startswith(base_n + "/"):
        raise BuildError(f"refusing to remove {url}: it is not inside {inside}")
    if fs.exists(path):
        retrying(lambda: fs.rm(path, recursive=True), what=f"removing {url_of(fs, path)}")
