"""What goes wrong in an input file: fatal errors and quarantined lines, both naming file and line."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pyarrow as pa


class InputError(ValueError):
    """An input file that cannot be read at all (names the file and, where known, the line)."""

    def __init__(self, path: str, message: str, line: int | None = None):
        where = f"{path}, line {line}" if line is not None else path
        super().__init__(f"{where}: {message}")
        self.path = path
        self.message = message
        self.line = line

    def __reduce__(self):
        # Dask ships a worker's exception to the client by pickling it: rebuild from the parts.
        return type(self), (self.path, self.message, self.line)


@dataclass(frozen=True)
class BadLine:
    """A data line kept aside in the quarantine, with why."""

    file: str
    line: int
    reason: str
    text: str


QUARANTINE_SCHEMA = pa.schema(
    [("file", pa.string()), ("line", pa.int64()), ("reason", pa.string()), ("text", pa.string())]
)


def quarantine_table(bad: list[BadLine]) -> pa.Table:
    """The quarantined lines as an Arrow table (the layout of the build's quarantine files)."""
    return pa.Table.from_pylist([asdict(b) for b in bad], schema=QUARANTINE_SCHEMA)
