"""What every reader shares: opening an input (any fsspec URL; gzip, bzip2 or xz compressed, told
by magic bytes), cutting it into blocks of whole lines, finding lines that are not UTF-8, and the
typed block plus its quarantined lines that each block becomes.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import lzma
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import fsspec
import fsspec.compression
import pyarrow as pa
from isal import igzip, isal_zlib

from tmass_lake.errors import InputError
from tmass_lake.storage import StorageError, retrying

if TYPE_CHECKING:
    from tmass_lake.readers.matching import FileLayout

DEFAULT_BLOCK_BYTES = 32 << 20
COMPRESSIONS = {b"\x1f\x8b": "gzip", b"BZh": "bz2", b"\xfd7zXZ\x00": "xz"}
"""Magic bytes of the compressed inputs read (by fsspec's codecs; gzip by ISA-L's)."""
_DECOMPRESSORS: dict[str, Callable[[], object]] = {
    "gzip": lambda: zlib.decompressobj(wbits=31), "bz2": bz2.BZ2Decompressor, "xz": lzma.LZMADecompressor}
STREAM_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error, isal_zlib.error, lzma.LZMAError, OSError)


@dataclass(frozen=True)
class BadLine:
    """A data line kept aside in the quarantine, with why."""

    file: str
    line: int
    reason: str
    text: str
    lines: int = 1
    """Lines this entry stands for: a run of empty lines is one entry, counted, never held."""


QUARANTINE_SCHEMA = pa.schema(
    [("file", pa.string()), ("line", pa.int64()), ("reason", pa.string()), ("text", pa.string()),
     ("lines", pa.int64())]
)


def quarantined_lines(bad: list[BadLine]) -> int:
    """How many input lines quarantine entries stand for."""
    return sum(b.lines for b in bad)


def quarantine_table(bad: list[BadLine]) -> pa.Table:
    """The quarantined lines as an Arrow table (the layout of the build's quarantine files)."""
    return pa.Table.from_pylist([asdict(b) for b in bad], schema=QUARANTINE_SCHEMA)


@dataclass
class ParsedBlock:
    """One block of an input (a file or a TAP chunk): its typed good rows and its quarantined lines.

    ``layout`` (inputs with a header: IPAC, VOTable, headed CSV, Parquet, TAP) says how the
    input's columns matched the table schema; ``None`` for bulk files, read by position.
    """

    path: str
    first_line: int
    n_lines: int
    table: pa.Table
    bad: list[BadLine] = field(default_factory=list)
    layout: FileLayout | None = None
    queries: list[dict] = field(default_factory=list)
    """Service inputs (TAP): the queries this block's rows came from."""


class FileDigest:
    """Size and SHA-256 of a file's bytes as they stream past (no second read for provenance)."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self.bytes = 0

    def update(self, data: bytes) -> None:
        self._sha.update(data)
        self.bytes += len(data)

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()


class _Digesting(io.RawIOBase):
    """A read-only stream feeding every byte read from ``raw`` to a :class:`FileDigest`."""

    def __init__(self, raw: io.IOBase, digest: FileDigest):
        self.raw, self.digest = raw, digest

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # noqa: ANN001 - buffer protocol
        data = self.raw.read(len(b))
        self.digest.update(data)
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self.raw.close()
        super().close()


def compression_of(head: bytes) -> str | None:
    """The compression whose magic bytes start ``head`` (``gzip``, ``bz2``, ``xz``), else ``None``."""
    return next((name for magic, name in COMPRESSIONS.items() if head.startswith(magic)), None)


def open_raw(path: str, storage_options: dict | None = None) -> io.BufferedIOBase:
    """The file's bytes as stored, through fsspec; a missing or unreadable file is an InputError."""
    try:  # transient object-store errors are retried; what remains is the file's fault
        raw = retrying(lambda: fsspec.open(path, "rb", **(storage_options or {})).open(),
                       what=f"opening {path}")
    except StorageError as e:
        cause = e.__cause__
        remote = f" ({cause})" if "://" in path else ""
        if isinstance(cause, FileNotFoundError):
            raise InputError(path, f"no such file{remote}") from cause
        if isinstance(cause, PermissionError):
            raise InputError(path, f"cannot be read: {cause}") from cause
        if isinstance(cause, IsADirectoryError):
            raise InputError(path, "is a directory, not a file") from cause
        raise InputError(path, f"cannot be opened: {cause!r}") from cause
    return raw


def open_input(path: str, storage_options: dict | None = None,
               digest: FileDigest | None = None) -> io.BufferedIOBase:
    """Open a file through fsspec for binary reading, decompressed (gzip, bzip2, xz: by magic bytes).

    With ``digest``, every byte of the file (compressed, as stored) is hashed while it is read.
    """
    raw = open_raw(path, storage_options)
    head = raw.read(8)
    raw.seek(0)
    compression = compression_of(head)
    if digest is not None:
        raw = io.BufferedReader(_Digesting(raw, digest), buffer_size=1 << 20)
    if compression == "gzip":  # ISA-L's gzip decoder: the same stream, ~2.3x faster than zlib's
        return igzip.IGzipFile(fileobj=raw, mode="rb")
    if compression:
        return fsspec.compression.compr[compression](raw, mode="rb")
    return raw


def complete_lines(path: str, storage_options: dict | None = None) -> tuple[str, int]:
    """The compression of a damaged file and how many whole lines decompress before the damage.

    Streams the file again through the codec's incremental decompressor, which hands out every
    byte it can (a buffered reader loses the last partial buffer): called only once reading failed.
    """
    lines = 0
    with open_raw(path, storage_options) as raw:
        compression = compression_of(raw.read(8)) or "uncompressed"
        raw.seek(0)
        make = _DECOMPRESSORS.get(compression)
        codec = make() if make else None
        try:
            while chunk := raw.read(1 << 20):
                while chunk:
                    if codec is None:
                        lines += chunk.count(b"\n")
                        break
                    lines += codec.decompress(chunk).count(b"\n")
                    chunk = b""
                    if codec.eof:  # the next member of a multi-member file starts here
                        chunk, codec = codec.unused_data, make()
        except (*STREAM_ERRORS, ValueError):
            pass
    return compression, lines


DEFAULT_MAX_LINE_BYTES = 16 << 20
"""Longest line read (``--max-line-bytes``): a longer one is quarantined by its first bytes and length."""
LONG_LINE_HEAD = 256
"""Bytes of an over-long line kept in the quarantine."""
PLACEHOLDER = b" \n"
"""What stands for an over-long line in its block: a blank line (not empty: runs of empty lines are
counted as one quarantine entry)."""


@dataclass(frozen=True)
class LongLine:
    """A line longer than the limit, never held whole: its first bytes and its length."""

    head: bytes
    length: int
    limit: int

    def bad_line(self, path: str, line: int) -> BadLine:
        why = (f"line of {self.length:,} bytes, longer than the {self.limit:,}-byte limit "
               f"(--max-line-bytes); its first {len(self.head)} bytes kept")
        return BadLine(path, line, why, line_text(self.head))


def iter_line_blocks(path: str, stream: io.BufferedIOBase, block_bytes: int,
                     storage_options: dict | None = None, *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
                     long_lines: dict[int, LongLine] | None = None) -> Iterator[bytes]:
    """Chunks of whole lines (each ending in ``\\n``) of about ``block_bytes``.

    Memory stays bounded whatever the input: a line longer than ``max_line_bytes`` is never
    held; it becomes a blank line in its block (line numbers unchanged) and its first bytes
    and length go to ``long_lines`` under its line number (1-based), for the reader to
    quarantine (:func:`quarantine_long_lines`). A damaged compressed stream is an
    :class:`InputError` naming the last whole line it holds.
    """
    read_size = max(1, min(block_bytes, max_line_bytes))  # so only a block's first line can be too long
    found = long_lines if long_lines is not None else {}
    rest = b""
    lines = 0  # lines yielded so far
    skipping: list | None = None  # [head, length] of the too-long line being read past
    while True:
        try:
            chunk = stream.read(read_size)
        except STREAM_ERRORS as e:
            compression, whole = complete_lines(path, storage_options)
            raise InputError(path, f"corrupt or truncated {compression} stream after line {whole} "
                                   f"(the last whole line it holds): {e}") from e
        if not chunk:
            break
        if skipping is not None:
            end = chunk.find(b"\n")
            if end < 0:
                skipping[1] += len(chunk)
                continue
            found[lines + 1] = LongLine(skipping[0], skipping[1] + end, max_line_bytes)
            skipping, rest, chunk = None, PLACEHOLDER, chunk[end + 1:]
        data = rest + chunk
        first = data.find(b"\n")
        if first < 0:
            rest = data
            if len(rest) > max_line_bytes:
                skipping, rest = [rest[:LONG_LINE_HEAD], len(rest)], b""
            continue
        if first > max_line_bytes:
            found[lines + 1] = LongLine(data[:LONG_LINE_HEAD], first, max_line_bytes)
            data = PLACEHOLDER + data[first + 1:]  # the long line's place kept, as a blank line
        cut = data.rfind(b"\n") + 1
        rest = data[cut:]
        block = data[:cut]
        lines += block.count(b"\n")
        yield block
        if len(rest) > max_line_bytes:
            skipping, rest = [rest[:LONG_LINE_HEAD], len(rest)], b""
    if skipping is not None:
        found[lines + 1] = LongLine(skipping[0], skipping[1], max_line_bytes)
        yield PLACEHOLDER
    elif rest:
        yield rest + b"\n"


MIN_BLANK_RUN = 64
"""Consecutive empty lines from which they are one quarantine entry (a run), counted, not held."""
_LEADING_RUN = re.compile(rb"[\r\n]{%d,}" % MIN_BLANK_RUN)  # empty lines (CRLF too) opening a block
_INNER_RUN = re.compile(rb"\n([\r\n]{%d,})" % MIN_BLANK_RUN)  # ... after a line's end


def _runs(block: bytes) -> Iterator[tuple[int, int]]:
    """Start and end of each stretch of ``\\r``/``\\n`` that may hold a run of empty lines."""
    if b"\n\n" not in block and b"\n\r\n" not in block and block[:1] not in (b"\n", b"\r"):
        return  # the common case: no two line ends in a row, one C-speed scan
    lead = _LEADING_RUN.match(block)
    if lead:
        yield lead.start(), lead.end()
    for m in _INNER_RUN.finditer(block, lead.end() if lead else 0):
        yield m.start(1), m.end(1)


def split_blank_runs(block: bytes, first_line: int) -> Iterator[tuple[int, bytes | int]]:
    """``block`` (whole lines from line ``first_line``) as pieces, each with its first line: text
    (whole lines, bytes) or a run of at least :data:`MIN_BLANK_RUN` empty lines (their count)."""
    at, line = 0, first_line
    for start, stop in _runs(block):
        end = block.rfind(b"\n", start, stop) + 1  # a trailing \r starts the next line
        run = block.count(b"\n", start, end)
        if run < MIN_BLANK_RUN:
            continue
        if start > at:
            text = block[at:start]
            yield line, text
            line += text.count(b"\n")
        yield line, run
        line += run
        at = end
    if at == 0:
        yield line, block
    elif at < len(block):
        yield line, block[at:]


def blank_run(path: str, first_line: int, count: int, table: pa.Table) -> ParsedBlock:
    """A run of ``count`` empty lines as a block: no rows, one quarantine entry counting them."""
    last = first_line + count - 1
    return ParsedBlock(path, first_line, count, table,
                       [BadLine(path, first_line, f"{count:,} blank lines ({first_line:,} to {last:,})", "",
                                lines=count)])


def read_at_most(path: str, stream: io.BufferedIOBase, max_bytes: int,
                 storage_options: dict | None = None) -> bytes | None:
    """The whole (decompressed) stream, or ``None`` as soon as it holds more than ``max_bytes``."""
    buf = io.BytesIO()
    while True:
        try:
            chunk = stream.read(min(16 << 20, max_bytes + 1 - buf.tell()) or 1)
        except STREAM_ERRORS as e:
            compression, whole = complete_lines(path, storage_options)
            raise InputError(path, f"corrupt or truncated {compression} stream after line {whole} "
                                   f"(the last whole line it holds): {e}") from e
        if not chunk:
            return buf.getvalue()
        buf.write(chunk)
        if buf.tell() > max_bytes:
            return None


def quarantine_long_lines(block: ParsedBlock, long_lines: dict[int, LongLine]) -> ParsedBlock:
    """``block`` with its over-long lines (blank in the text it was parsed from) quarantined as such:
    their first bytes and length, and a short reason, in place of the blank line's entry."""
    if not long_lines:
        return block
    end = block.first_line + block.n_lines
    mine = {n: long_lines.pop(n) for n in [n for n in long_lines if block.first_line <= n < end]}
    if mine:
        block.bad = [mine.pop(b.line).bad_line(b.file, b.line) if b.line in mine else b for b in block.bad]
        block.bad += [x.bad_line(block.path, n) for n, x in mine.items()]  # a reader that skipped the line
        block.bad.sort(key=lambda b: b.line)
    return block


def invalid_utf8_lines(block: bytes) -> dict[int, str]:
    """Lines of ``block`` (0-based) that are not valid UTF-8, with where the first bad byte sits."""
    try:
        block.decode("utf-8")
        return {}
    except UnicodeDecodeError:
        pass
    bad: dict[int, str] = {}
    for i, line in enumerate(block.split(b"\n")):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as e:
            bad[i] = (f"not valid UTF-8: byte 0x{line[e.start]:02x} at character "
                      f"{len(line[:e.start].decode('utf-8', 'replace')) + 1}")
    return bad


def blank_lines(block: bytes, lines: dict[int, str] | set[int]) -> bytes:
    """``block`` with the given lines (0-based) emptied, every line kept in place."""
    parts = block.split(b"\n")
    for i in lines:
        parts[i] = b""
    return b"\n".join(parts)


def line_text(line: bytes) -> str:
    """A quarantined line as text: bytes that are not UTF-8 shown as ``\\xNN``."""
    return line.decode("utf-8", "backslashreplace")


