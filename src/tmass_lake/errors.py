"""Errors a user can act on: each says in one line what is wrong and where (file, line, table).

The command line prints any :class:`UserError` as ``tmass-lake: error: <message>`` and exits 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A mistake in the input, the arguments or the environment, explained in its message."""


class InputError(UserError, ValueError):
    """An input that cannot be read at all (names the file and, where known, the line or column)."""

    def __init__(self, path: str, message: str, line: int | None = None):
        where = f"{path}, line {line}" if line is not None else path
        super().__init__(f"{where}: {message}")
        self.path = path
        self.message = message
        self.line = line

    def __reduce__(self):
        # Dask ships a worker's exception to the client by pickling it: rebuild from the parts.
        return type(self), (self.path, self.message, self.line)


class BuildError(UserError, RuntimeError):
    """A build that cannot start or complete as asked (output taken, inputs changed, rows lost)."""


class LockError(BuildError):
    """Another build holds the output."""


class UnknownTableError(UserError, LookupError):
    """A table name with no schema (or not in a lake)."""


class NotInLakeError(UnknownTableError, KeyError):
    """A name the lake does not have (a table, a reference catalogue)."""

    def __str__(self) -> str:  # a KeyError's str() would quote the message
        return str(self.args[0]) if self.args else ""


class NotALakeError(UserError, FileNotFoundError):
    """A lake URL with nothing there, or one that holds no lake (no manifest, no table, no build records)."""


class UnfinishedTableError(UserError, LookupError):
    """A table whose build did not finish (or that the manifest lists but the store lacks)."""


NOT_FINISHED = "build not finished — `--resume` or rebuild"
"""Why an unfinished table is not served (``info``, ``verify`` and the lake API say the same)."""


class ManifestError(UserError, ValueError):
    """A ``manifest.json`` that cannot be trusted (not a manifest, an entry leading outside the lake...)."""


class MissingDependencyError(UserError, ImportError):
    """An optional package a URL or flag needs is not installed (names the package to install)."""


class ReferenceUnavailableError(UserError, OSError):
    """A reference catalogue that cannot be read (the public copy offline, a path with nothing)."""


class EmptyResultError(UserError):
    """A query whose result has no rows, asked to be written where no rows cannot go (HATS)."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices`` to ``name``, else the choices listed."""
    options = sorted(str(c) for c in choices)
    close = difflib.get_close_matches(name, options, n=3, cutoff=0.6)
    if close:
        return f" (did you mean {' or '.join(repr(c) for c in close)}?)"
    if not options:
        return ""
    listed = ", ".join(options[:12]) + (", ..." if len(options) > 12 else "")
    return f" (has: {listed})"
