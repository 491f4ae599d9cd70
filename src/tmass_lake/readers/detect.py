"""What an input looks like, from its first bytes: which reader takes it.

Parquet by its magic bytes; then, through gzip, bzip2 or xz (by theirs), the text: a VOTable
(XML with a ``VOTABLE`` element), an IPAC table (``\\keyword`` or ``|`` header lines), a table
with a header line (every field of line 1 a name, or most of them names of the table's columns),
or bulk text (IRSA's headerless ``|``-delimited rows).
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass

from tmass_lake.readers.blocks import STREAM_ERRORS, compression_of, open_input, open_raw
from tmass_lake.readers.csvtable import header_delimiter, split_header
from tmass_lake.schema import TableSchema

SNIFF_BYTES = 64 << 10
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")


@dataclass(frozen=True)
class Detected:
    """A reader's format name (``None``: no reader takes it) and what the file looks like, in words."""

    format: str | None
    description: str


def _shown(line: str, n: int = 60) -> str:
    return repr(line if len(line) <= n else line[:n] + "...")


def sniff(sample: bytes, compression: str | None = None, names: set[str] = frozenset()) -> Detected:
    """The format of a file whose (decompressed) first bytes are ``sample`` (``names``: the table's
    column names and aliases, lower-cased, to recognise a header line with other words in it)."""
    packed = f"{compression}-compressed " if compression else ""
    text = sample.removeprefix(b"\xef\xbb\xbf")
    if not text.strip():
        return Detected("bulk", f"an empty {packed}file")
    if b"\x00" in text[:4096]:
        return Detected(None, f"{packed}binary data, not text")
    head = text.lstrip()
    if head.startswith(b"<"):
        if b"<VOTABLE" in text or b":VOTABLE" in text:
            return Detected("votable", f"a {packed}VOTable (XML)")
        return Detected(None, f"{packed}XML that is not a VOTable")
    lines = [x for x in text.decode("utf-8", "replace").split("\n")[:-1] or [text.decode("utf-8", "replace")]
             if x.strip()]
    first = lines[0].rstrip("\r")
    if first.startswith("|") or (first.startswith("\\") and not re.match(r"\\N(\||$)", first)):
        return Detected("ipac", f"an {packed}IPAC table (line 1: {_shown(first)})")
    delimiter = header_delimiter(first)
    shown = {",": "','", "|": "'|'", "\t": "tab"}[delimiter]
    fields = split_header(first, delimiter)
    known = sum(f.lower() in names for f in fields)
    if len(fields) > 1 and (all(_NAME.fullmatch(f) for f in fields) or known > len(fields) / 2):
        return Detected("csv", f"a {packed}table with a header line ({len(fields)} {shown}-separated "
                               f"names: {_shown(first)})")
    return Detected("bulk", f"{packed}text without a header ({first.count('|') + 1} '|'-separated fields "
                            f"on line 1)")


def detect_format(path: str, storage_options: dict | None = None, schema: TableSchema | None = None,
                  ) -> Detected:
    """What the file at ``path`` looks like (reads its first bytes only; ``schema``: the table it
    should hold, whose column names help recognise a header line)."""
    with open_raw(path, storage_options) as raw:
        magic = raw.read(8)
    if magic.startswith(b"PAR1"):
        return Detected("parquet", "a Parquet file")
    sample = b""
    # A damaged stream reads as empty here: the reader reports where it breaks.
    with open_input(path, storage_options) as stream, contextlib.suppress(STREAM_ERRORS):
        sample = stream.read(SNIFF_BYTES)
    return sniff(sample, compression_of(magic), set(schema.lookup()) if schema else frozenset())
