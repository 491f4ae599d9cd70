"""Which files a build reads: URLs, globs and directories expanded, kept inside their root.

A pipeline names its inputs as patterns relative to an input root (``irsa/{table}/*.gz``); a
pattern may not climb out of the root (no absolute path, no ``..``), and a file it matches
through a symbolic link must still lie inside the root, so a pipeline file can never make the
build read (and copy into its quarantine) files elsewhere.
"""

from __future__ import annotations

import os
import posixpath

from tmass_lake.errors import InputError
from tmass_lake.readers.tap import is_tap
from tmass_lake.storage import filesystem, is_local, join

_GLOB_CHARS = "*?["


def expand_inputs(urls: list[str], storage_options: dict | None = None) -> list[str]:
    """Files named by URLs, globs or directories (a directory means every file under it), sorted;
    a TAP service (``tap+https://...``) as it is.

    A glob or directory matching no file is an :class:`InputError` naming it. Returned URLs
    keep their protocol (``s3://...``), so workers on other hosts can open them.
    """
    found: list[str] = []
    for url in urls:
        if is_tap(url):  # a TAP service: the harvest plans its chunks
            found.append(url)
            continue
        fs, path = filesystem(url, storage_options)
        protocol = url.split("://", 1)[0] + "://" if "://" in url else ""
        if any(ch in path for ch in _GLOB_CHARS):
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


def check_pattern(pattern: str, where: str) -> None:
    """Refuse an input pattern that is absolute, a URL, or climbs out of its root with ``..``."""
    if "://" in pattern or pattern.startswith(("/", "\\", "~")):
        raise InputError(where, f"input pattern {pattern!r} must be relative to the input root")
    if ".." in pattern.replace("\\", "/").split("/"):
        raise InputError(where, f"input pattern {pattern!r} climbs out of the input root ('..')")


def inputs_under_root(root: str, pattern: str, storage_options: dict | None = None) -> list[str]:
    """The files ``pattern`` matches under ``root``, each checked to lie inside it.

    Nothing matching is an empty list (the table has no input under this root).
    """
    check_pattern(pattern, root)
    try:
        files = expand_inputs([join(root, pattern)], storage_options)
    except InputError:
        return []
    fs, base = filesystem(root, storage_options)
    if is_local(fs):
        real_root = os.path.realpath(base)
        for f in files:
            real = os.path.realpath(filesystem(f, storage_options)[1])
            if os.path.commonpath([real_root, real]) != real_root:
                raise InputError(f, f"lies outside the input root {root} (a link leads out of it)")
    else:
        prefix = posixpath.normpath(base).rstrip("/") + "/"
        for f in files:
            if not posixpath.normpath(filesystem(f, storage_options)[1]).startswith(prefix):
                raise InputError(f, f"lies outside the input root {root}")
    return files
