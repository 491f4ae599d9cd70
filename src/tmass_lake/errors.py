"""Errors a user can act on: each says in one line what is wrong and where (file, line, table).

The command line prints any :class:`UserError` as ``tmass-lake: error: <message>`` and exits 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


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
