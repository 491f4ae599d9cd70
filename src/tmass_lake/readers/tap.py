"""TAP services as a source: a table harvested in key-range chunks, each chunk's VOTable into typed blocks.

A TAP input is ``tap+http(s)://HOST/PATH`` (the service's base URL with ``tap+`` in front;
``?table=SCHEMA.NAME`` addresses a table unambiguously, any other query string is an error).
**The service owns the layout**: :func:`plan_chunks` matches the columns its ``TAP_SCHEMA``
lists to the schema by name or alias (``xdate`` is our ``date``), refuses a table without the
positions or the key (naming the column), and every chunk query selects the service's columns
by the service's names (documented ones are stored under the documented name and type, the
others as the answer describes them). It splits the table on its integer key (``cntr``,
``gcntr``) into key ranges of about ``chunk_rows`` rows, counting each range on the service
(``COUNT(*)``); a :class:`Chunk` is a plain string too (:meth:`Chunk.url`), so a build lists
chunks as it lists files. Every query run (planning, split counts, failed attempts) is logged
for the build report.
:func:`read_chunk` runs a chunk's query (sync for small chunks, async UWS for large ones, with
pyvo), BINARY2 VOTable when the service offers it, and yields :class:`ParsedBlock` objects:

- the rows received must be the rows counted: a result the service cut at its row limit
  (``QUERY_STATUS = OVERFLOW``) is split into smaller key ranges, each counted and queried; a
  short or long result is retried, then an :class:`~tmass_lake.errors.InputError` names the
  chunk and its query;
- connection errors, timeouts and 5xx answers are retried with exponential backoff;
- rows breaking the schema's constraints go to the quarantine with chunk and row number.

Nothing here knows about builds: the build passes a ``limiter`` (a context manager factory,
e.g. a Dask semaphore) bounding the queries in flight on one service.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlencode, urlsplit

import numpy as np
import pyarrow as pa
import pyvo
import requests
from astropy.io.votable import parse as parse_vot_xml
from astropy.io.votable.exceptions import VOWarning
from pyvo.dal.exceptions import DALQueryError, DALServiceError

from tmass_lake.errors import InputError, UserError
from tmass_lake.readers.blocks import FileDigest, ParsedBlock
from tmass_lake.readers.matching import FileLayout, InputColumn, match_columns
from tmass_lake.readers.tap_schema import service_arrow
from tmass_lake.readers.votable import parse_votable
from tmass_lake.schema import TableSchema

log = logging.getLogger(__name__)

SCHEME = "tap+"
VOTABLE = "application/x-votable+xml"
RETRY_STATUS = {408, 429, 500, 502, 503, 504}
# ADQL reserved words (SQL-92 and ADQL's own) that IRSA/2MASS column names use or could use: such a
# name must be a delimited identifier in a query ("date").
RESERVED = frozenset("""absolute action add all allocate alter and any are as asc assertion at authorization
avg begin between bit bit_length both by cascade cascaded case cast catalog char character character_length
char_length check close coalesce collate collation column commit connect connection constraint constraints
continue convert corresponding count create cross current current_date current_time current_timestamp
current_user cursor date day deallocate dec decimal declare default deferrable deferred delete desc describe
descriptor diagnostics disconnect distinct domain double drop else end end-exec escape except exception exec
execute exists external extract false fetch first float for foreign found from full get global go goto grant
group having hour identity immediate in indicator initially inner input insensitive insert int integer
intersect interval into is isolation join key language last leading left level like local lower match max min
minute module month names national natural nchar next no not null nullif numeric octet_length of offset on
only open option or order outer output overlaps pad partial position precision prepare preserve primary prior
privileges procedure public read real references relative restrict revoke right rollback rows schema scroll
second section select session session_user set size smallint some space sql sqlcode sqlerror sqlstate
substring sum system_user table temporary then time timestamp timezone_hour timezone_minute to top trailing
transaction translate translation trim true union unique unknown update upper usage user using value values
varchar varying view when whenever where with work write year zone abs acos area asin atan atan2 box ceiling
centroid circle contains coord1 coord2 coordsys cos cot degrees distance exp floor intersects log log10 mod pi
point polygon power radians region rand round sin sqrt tan truncate""".split())  # noqa: SIM905


class TapError(UserError):
    """A TAP service answered in a way the harvest cannot use (names the service, chunk or query)."""


def is_tap(url: str) -> bool:
    """Whether ``url`` names a TAP input (``tap+http://...`` or ``tap+https://...``)."""
    return url.startswith(("tap+http://", "tap+https://"))


def service_url(url: str) -> str:
    """The service's base URL of a TAP input or chunk (``tap+`` and any query string dropped)."""
    parts = urlsplit(url[len(SCHEME):] if is_tap(url) else url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}".rstrip("/")


def input_table(url: str) -> str | None:
    """The table a TAP input names (``tap+https://HOST/TAP?table=SCHEMA.NAME``), if any; any other
    query string is a :class:`UserError` (it would otherwise be dropped without a word)."""
    query = urlsplit(url).query
    if not query:
        return None
    given = parse_qsl(query, keep_blank_values=True)
    unknown = sorted({k for k, _ in given if k != "table"})
    if unknown or len(given) != 1 or not given[0][1]:
        said = ", ".join(unknown) or repr(query)
        raise UserError(f"{url}: a TAP input takes one query parameter, table=SCHEMA.NAME (not {said})")
    return given[0][1]


def identifier(name: str) -> str:
    """A column name as a query writes it: reserved words (``date``) as delimited identifiers."""
    return f'"{name}"' if name.lower() in RESERVED or not name.replace("_", "").isalnum() else name


@dataclass(frozen=True)
class TapOptions:
    """How politely and patiently to talk to a service (the build decides these values)."""

    retries: int = 5
    """Attempts after the first for a query failing with a connection error, timeout or 5xx."""
    backoff: float = 1.0
    """First wait between attempts in seconds, doubled each time (at most 60 s)."""
    timeout: float = 600.0
    """Seconds to wait for one answer (an async job: for the job to finish)."""
    sync_rows: int = 100_000
    """Chunks of up to this many rows run as sync queries; larger ones as async (UWS) jobs."""
    limiter: AbstractContextManager | None = None
    """Held around every query: bounds the queries in flight on the service (e.g. a Dask semaphore)."""


@dataclass(frozen=True)
class Chunk:
    """Rows ``lo <= key < hi`` (and ``where``) of a table on a TAP service; ``rows``: their count."""

    service: str
    table: str
    key: str
    lo: int
    hi: int
    rows: int
    where: str | None = None
    format: str = VOTABLE
    """The response format asked for (BINARY2 VOTable when the service offers it)."""
    columns: tuple[str, ...] = ()
    """The service's names of the columns to select (empty: the schema's names)."""

    def url(self) -> str:
        """The chunk as an input string (``tap+SERVICE?table=...&key=...&lo=...&hi=...&rows=...``)."""
        q = {"table": self.table, "key": self.key, "lo": self.lo, "hi": self.hi, "rows": self.rows}
        if self.where:
            q["where"] = self.where
        if self.format != VOTABLE:
            q["format"] = self.format
        if self.columns:
            q["columns"] = ",".join(self.columns)
        return f"{SCHEME}{self.service}?{urlencode(q)}"

    @classmethod
    def from_url(cls, url: str) -> Chunk:
        q = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
        try:
            return cls(service_url(url), q["table"], q["key"], int(q["lo"]), int(q["hi"]), int(q["rows"]),
                       q.get("where") or None, q.get("format") or VOTABLE,
                       tuple(c for c in q.get("columns", "").split(",") if c))
        except (KeyError, ValueError) as e:
            raise InputError(url, "not a TAP chunk (needs table, key, lo, hi and rows)") from e

    def selected(self, names: list[str]) -> list[str]:
        """The columns the chunk's query selects: the service's names, else ``names``."""
        return list(self.columns) or list(names)

    def condition(self) -> str:
        key = identifier(self.key)
        cond = f"{key} >= {self.lo} AND {key} < {self.hi}"
        return f"{cond} AND ({self.where})" if self.where else cond

    def query(self, columns: list[str]) -> str:
        """The chunk's ADQL query: the columns, in key order."""
        return (f"SELECT {', '.join(identifier(c) for c in columns)} FROM {self.table} "
                f"WHERE {self.condition()} ORDER BY {identifier(self.key)}")

    def count_query(self) -> str:
        return f"SELECT COUNT(*) AS n FROM {self.table} WHERE {self.condition()}"

    def split(self, parts: int) -> list[Chunk]:
        """``parts`` key ranges of about equal width covering this one (row counts still unknown)."""
        parts = max(2, min(parts, self.hi - self.lo))
        edges = [self.lo + (self.hi - self.lo) * i // parts for i in range(parts + 1)]
        return [replace(self, lo=a, hi=b, rows=-1) for a, b in zip(edges, edges[1:], strict=False) if b > a]


def chunk_identity(url: str, columns: list[str]) -> dict:
    """What a chunk is, for a resumed build to compare: its query and the rows counted for it."""
    chunk = Chunk.from_url(url)
    return {"query": chunk.query(chunk.selected(columns)), "rows": chunk.rows}


@dataclass
class Answer:
    """One query's VOTable: its bytes, rows, the service's QUERY_STATUS and when it ran (on the wire)."""

    query: str
    data: bytes
    table: object  # astropy.io.votable.tree.TableElement
    rows: int
    status: str
    bytes: int
    started: float
    seconds: float
    mode: str


class TapClient:
    """One service: pyvo's TAPService on a requests session, queries retried on transient failures."""

    def __init__(self, url: str, options: TapOptions | None = None):
        self.url = service_url(url)
        self.options = options or TapOptions()
        self.session = requests.Session()
        self.service = pyvo.dal.TAPService(self.url, session=self.session)
        self._format: str | None = None
        self.log: list[dict] = []
        """Every metadata or count query run and every failed attempt, for the build report."""

    # -- retries -------------------------------------------------------------------------------
    def _retrying(self, fn: Callable[[], object], what: str, query: str | None = None) -> object:
        opts = self.options
        for attempt in range(opts.retries + 1):
            started = time.time()
            try:
                return fn()
            except Exception as e:  # noqa: BLE001 - classified below
                self.log.append({"kind": "failed", "query": query or what, "attempt": attempt + 1,
                                 "error": _reason(e), "started": started,
                                 "seconds": round(time.time() - started, 3)})
                if not is_transient_tap_error(e):
                    raise TapError(f"{self.url}: {what}: {_reason(e)}") from e
                if attempt == opts.retries:
                    raise TapError(f"{self.url}: {what}: {_reason(e)} "
                                   f"(after {opts.retries + 1} attempts)") from e
                delay = min(60.0, opts.backoff * 2**attempt)
                log.warning("%s: %s: %s; retrying in %.1f s", self.url, what, _reason(e), delay)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _limited(self) -> AbstractContextManager:
        return self.options.limiter if self.options.limiter is not None else contextlib.nullcontext()

    # -- metadata and counts -------------------------------------------------------------------
    def output_format(self) -> str:
        """BINARY2 VOTable when the service offers it, else its default VOTable."""
        if self._format is None:
            def formats() -> list[str]:
                return [o.mime or "" for c in self.service.capabilities
                        for o in getattr(c, "outputformats", []) or []]
            offered = self._retrying(formats, "reading its capabilities")
            b2 = [m for m in offered if "serialization=binary2" in m.replace(" ", "").lower()]
            self._format = b2[0] if b2 else VOTABLE
        return self._format

    def rows(self, query: str) -> list[dict]:
        """A small query's rows as dicts (metadata, counts), keys in lower case."""
        answer = self.fetch(query, maxrec=1_000_000, sync=True)
        kind = "count" if query.upper().startswith("SELECT COUNT(") else "metadata"
        self.log.append({"kind": kind, "query": query, "received": answer.rows, "status": answer.status,
                         "mode": answer.mode, "bytes": answer.bytes, "started": answer.started,
                         "seconds": round(answer.seconds, 3)})
        if answer.status == "OVERFLOW":
            raise TapError(f"{self.url}: query {query!r} returned more than {answer.rows} rows")
        table = answer.table.to_table()
        return [{k.lower(): _plain(r[k]) for k in table.colnames} for r in table]

    def count(self, chunk: Chunk) -> int:
        return int(self.rows(chunk.count_query())[0]["n"])

    def fetch(self, query: str, maxrec: int, sync: bool, fmt: str = VOTABLE) -> Answer:
        """Run ``query`` (sync or async) for a ``fmt`` VOTable and parse it; retried on transient failures."""

        def run() -> Answer:
            with self._limited():  # held for the query only: parsing does not load the service
                started = time.time()
                data = self._sync(query, maxrec, fmt) if sync else self._async(query, maxrec, fmt)
                seconds = time.time() - started
            return _answer(query, data, started, seconds, "sync" if sync else "async")
        return self._retrying(run, f"query {query!r}", query)

    def _sync(self, query: str, maxrec: int, fmt: str) -> bytes:
        q = self.service.create_query(query, mode="sync", maxrec=maxrec, RESPONSEFORMAT=fmt)
        r = self.session.post(q.queryurl, data=dict(q), timeout=self.options.timeout)
        if r.status_code >= 500 or (r.status_code >= 400 and not r.content.lstrip().startswith(b"<")):
            r.raise_for_status()  # a 4xx with a VOTable body carries the service's error message
        return r.content

    def _async(self, query: str, maxrec: int, fmt: str) -> bytes:
        job = self.service.submit_job(query, maxrec=maxrec, RESPONSEFORMAT=fmt)
        try:
            job.run()
            deadline, pause = time.monotonic() + self.options.timeout, 0.2
            while (phase := job.phase) not in ("COMPLETED", "ERROR", "ABORTED"):
                if time.monotonic() > deadline:  # e.g. a job its restarted service forgot to end
                    raise AsyncJobError(f"async job {job.url} still {phase} after "
                                        f"{self.options.timeout:.0f} s")
                time.sleep(pause)
                pause = min(5.0, pause * 1.5)
            if phase != "COMPLETED":  # a restarted service ends its running jobs in ERROR too
                try:
                    job.raise_if_error()
                except DALQueryError as e:
                    raise AsyncJobError(f"async job {job.url} ended {job.phase}: {e}") from e
                raise AsyncJobError(f"async job {job.url} ended {job.phase}")
            r = self.session.get(job.result_uri, timeout=self.options.timeout)
            r.raise_for_status()
            return r.content
        finally:
            with contextlib.suppress(Exception):
                job.delete()

    # -- the table -----------------------------------------------------------------------------
    def resolve_table(self, name: str) -> str:
        """The service's name of table ``name``: itself, or the one ``SCHEMA.name`` (unique)."""
        rows = self.rows("SELECT table_name FROM TAP_SCHEMA.tables")
        names = [r["table_name"] for r in rows]
        if name in names:
            return name
        found = [n for n in names if n.lower().rsplit(".", 1)[-1] == name.lower()]
        if len(found) == 1:
            return found[0]
        if not found:
            raise TapError(f"{self.url}: no table {name!r} in its TAP_SCHEMA.tables")
        raise TapError(f"{self.url}: table {name!r} is ambiguous ({', '.join(found)}); give the full name")

    def columns(self, table: str) -> list[dict]:
        """``TAP_SCHEMA.columns`` of ``table``, in the service's column order."""
        rows = self.rows(f"SELECT * FROM TAP_SCHEMA.columns WHERE table_name = '{table}'")
        if not rows:
            raise TapError(f"{self.url}: TAP_SCHEMA.columns lists no column of {table}")
        if all(r.get("column_index") is not None for r in rows):
            rows.sort(key=lambda r: r["column_index"])
        return rows


@functools.cache
def _served_names(url: str) -> frozenset[str]:
    rows = TapClient(url).rows("SELECT table_name FROM TAP_SCHEMA.tables")
    return frozenset(str(r["table_name"]).lower() for r in rows)


def served_table(url: str, name: str) -> bool:
    """Whether the service at ``url`` has table ``name`` (bare, or as ``SCHEMA.name``)."""
    names = _served_names(service_url(url))
    return name.lower() in names or any(n.rsplit(".", 1)[-1] == name.lower() for n in names)


class AsyncJobError(RuntimeError):
    """An async job that did not complete (a restarted service loses its running jobs): retried."""


def is_transient_tap_error(e: BaseException) -> bool:
    """Connection errors, timeouts, 5xx/408/429 answers, unfinished jobs and cut-off VOTables."""
    if isinstance(e, DALQueryError):
        return False
    if isinstance(e, DALServiceError):
        if e.code in RETRY_STATUS or not e.code:  # no HTTP status: the service could not be reached
            return True
        return e.cause is not None and is_transient_tap_error(e.cause)
    if isinstance(e, requests.HTTPError):
        return e.response is not None and e.response.status_code in RETRY_STATUS
    return isinstance(e, requests.ConnectionError | requests.Timeout
                      | requests.exceptions.ChunkedEncodingError | ConnectionError | TimeoutError
                      | AsyncJobError | TruncatedAnswer)


class TruncatedAnswer(ValueError):
    """A response body that is not a whole VOTable (a connection cut mid-answer)."""


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _plain(value: object) -> object:
    if np.ma.is_masked(value):
        return None
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode()
    return value


def _answer(query: str, data: bytes, started: float, seconds: float, mode: str) -> Answer:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", VOWarning)
            vot = parse_vot_xml(io.BytesIO(data), verify="ignore")
    except Exception as e:  # noqa: BLE001 - astropy raises many kinds on a cut-off document
        raise TruncatedAnswer(f"not a whole VOTable ({len(data)} bytes): {e}") from e
    status, message = "OK", ""
    for info in [*vot.infos, *(i for r in vot.resources for i in r.infos)]:
        if info.name == "QUERY_STATUS":
            status, message = (info.value or "OK").upper(), (info.content or "")
            if status == "ERROR":
                raise DALQueryError(f"the service says: {message.strip() or 'ERROR'}")
    tables = list(vot.iter_tables())
    if not tables:
        raise TruncatedAnswer("VOTable holds no table")
    table = tables[0]
    return Answer(query, data, table, len(table.array), status, len(data), started, seconds, mode)


# -- planning -------------------------------------------------------------------------------------
@dataclass
class HarvestPlan:
    """A table's harvest: the service, its name for the table, the chunks, and what the service said."""

    service: str
    table: str
    key: str
    where: str | None
    rows: int
    chunks: list[Chunk]
    columns: list[dict] = field(default_factory=list)
    """``TAP_SCHEMA.columns`` of the table as the service listed it (the snapshot)."""
    planned: str = ""
    queries: int = 0
    log: list[dict] = field(default_factory=list)
    """Every query planning ran (metadata, counts, failed attempts)."""
    layout: dict | None = None
    """How the service's columns met the schema (:class:`FileLayout` JSON)."""

    def to_json(self) -> dict:
        return {"service": self.service, "table": self.table, "key": self.key, "where": self.where,
                "rows": self.rows, "planned": self.planned, "queries": self.queries,
                "chunks": [asdict(c) for c in self.chunks], "tap_schema": self.columns, "log": self.log,
                "layout": self.layout}

    @classmethod
    def from_json(cls, d: dict) -> HarvestPlan:
        chunks = [Chunk(**(c | {"columns": tuple(c.get("columns") or ())})) for c in d["chunks"]]
        return cls(d["service"], d["table"], d["key"], d["where"], d["rows"], chunks, d["tap_schema"],
                   d["planned"], d["queries"], d.get("log") or [], d.get("layout"))


def served_layout(url: str, table: str, records: list[dict], schema: TableSchema) -> FileLayout:
    """How a served table's ``TAP_SCHEMA.columns`` meet ``schema`` (by name or alias); a table
    without the positions of a positional schema is refused naming the column."""
    columns = []
    for r in records:
        try:
            arrow = service_arrow(r)
        except ValueError:
            arrow = "string"
        columns.append(InputColumn(str(r["column_name"]).strip('"'), pa.type_for_alias(arrow),
                                   str(r.get("datatype") or ""),
            r.get("unit") or None, r.get("ucd") or None, r.get("description") or ""))
    return match_columns(f"{url} table {table}", "tap", columns, schema,
                         source=f"TAP_SCHEMA.columns of {url}")


def plan_chunks(url: str, schema: TableSchema, key: str, *, chunk_rows: int, where: str | None = None,
                options: TapOptions | None = None, table: str | None = None) -> HarvestPlan:
    """Key ranges of about ``chunk_rows`` rows covering the table (with ``where``), each counted.

    The table is ``table`` (``SCHEMA.NAME``) or found by the schema's name; its columns are the
    service's (:func:`served_layout`), matched to ``schema`` by name or alias, and ``key`` (a
    documented name, or the service's) must be one of them. ``COUNT``, ``MIN`` and ``MAX`` of the
    key first; a range holding more than ``chunk_rows`` is cut into ``ceil(rows / chunk_rows)``
    ranges of equal key width and each is counted, again until every range fits; neighbouring
    ranges are then merged while they fit. The counts must add up to the table's, or a row has no
    key and the plan is refused.
    """
    client = TapClient(url, options)
    table = client.resolve_table(table or schema.table)
    columns = client.columns(table)
    layout = served_layout(client.url, table, columns, schema)
    served_key = layout.matched.get(key) or next((n for n in layout.columns if n.lower() == key.lower()),
                                                 None)
    if served_key is None:
        known = schema.lookup().get(key.lower())
        also = f" (or {'/'.join(known.aliases)})" if known is not None and known.aliases else ""
        raise TapError(f"{client.url}: {table} has no key column {key}{also}: the harvest is split on it")
    key = served_key
    start = Chunk(client.url, table, key, 0, 0, 0, where, client.output_format(), tuple(layout.columns))
    k = identifier(key)
    cond = f" WHERE {where}" if where else ""
    head = client.rows(f"SELECT COUNT(*) AS n, MIN({k}) AS lo, MAX({k}) AS hi FROM {table}{cond}")[0]
    queries = 1
    total = int(head["n"])
    planned = datetime.now(UTC).isoformat(timespec="seconds")
    if total == 0:
        return HarvestPlan(client.url, table, key, where, 0, [], columns, planned, queries, client.log,
                           layout.to_json())
    todo = [replace(start, lo=int(head["lo"]), hi=int(head["hi"]) + 1, rows=total)]
    done: list[Chunk] = []
    while todo:
        big = todo.pop()
        if big.rows <= chunk_rows or big.hi - big.lo <= 1:
            done.append(big)
            continue
        parts = big.split(math.ceil(big.rows / chunk_rows))
        counts = [client.count(p) for p in parts[:-1]]
        queries += len(counts)
        counts.append(big.rows - sum(counts))
        if counts[-1] < 0:
            raise TapError(f"{client.url}: {table} changed while it was being counted ({big.count_query()})")
        todo.extend(replace(p, rows=n) for p, n in zip(parts, counts, strict=True) if n)
    done.sort(key=lambda c: c.lo)
    merged: list[Chunk] = []
    for c in done:
        if merged and merged[-1].hi == c.lo and merged[-1].rows + c.rows <= chunk_rows:
            merged[-1] = replace(merged[-1], hi=c.hi, rows=merged[-1].rows + c.rows)
        else:
            merged.append(c)
    if sum(c.rows for c in merged) != total:
        raise TapError(f"{client.url}: {table}: key ranges hold {sum(c.rows for c in merged)} rows but "
                       f"COUNT(*) is {total}: rows with a null {key}?")
    return HarvestPlan(client.url, table, key, where, total, merged, columns, planned, queries, client.log,
                       layout.to_json())


# -- reading one chunk ----------------------------------------------------------------------------
def read_chunk(url: str, schema: TableSchema, *, options: TapOptions | None = None,
               digest: FileDigest | None = None) -> Iterator[ParsedBlock]:
    """Query one chunk and yield its rows as typed blocks, checked against the chunk's count.

    A result the service cut short at its row limit (OVERFLOW) is split into key ranges that are
    counted and queried in turn; a result with more or fewer rows than counted is queried again
    (``options.retries`` times), then an :class:`InputError` names the chunk and the query.
    Each block lists the queries that led to it: the data queries (``kind: data``, rows expected and
    received, status, timing), a split's counts (``count``) and failed attempts (``failed``).
    """
    opts = options or TapOptions()
    chunk = Chunk.from_url(url)
    client = TapClient(chunk.service, opts)
    queries: list[dict] = []
    todo = [chunk]
    line = 1
    while todo:
        part = todo.pop(0)
        if part.rows == 0:
            continue
        query = part.query(part.selected(schema.names))
        for attempt in range(opts.retries + 1):
            answer = client.fetch(query, maxrec=part.rows + 1, sync=part.rows <= opts.sync_rows,
                                  fmt=part.format)
            queries.append({"kind": "data", "query": query, "expected": part.rows, "received": answer.rows,
                                   "status": answer.status, "mode": answer.mode, "bytes": answer.bytes,
                                   "started": answer.started, "seconds": round(answer.seconds, 3)})
            if answer.status == "OVERFLOW" and answer.rows <= part.rows:
                break
            if answer.rows == part.rows:
                break
            if attempt == opts.retries:
                raise InputError(url, f"the service returned {answer.rows} rows where COUNT(*) gave "
                                      f"{part.rows}, {opts.retries + 1} times, for query {query!r}")
            log.warning("%s: %d rows where %d were counted; querying again", url, answer.rows, part.rows)
            time.sleep(min(60.0, opts.backoff * 2**attempt))
        if answer.status == "OVERFLOW" and answer.rows <= part.rows:
            if part.hi - part.lo <= 1:
                raise InputError(url, f"one key value holds more rows ({part.rows}) than the service returns "
                                      f"at once ({answer.rows}): query {query!r}")
            pieces = part.split(2 * math.ceil(part.rows / max(answer.rows, 1)))
            counts = [client.count(p) for p in pieces]
            if sum(counts) != part.rows:
                raise InputError(url, f"the rows of {part.condition()} changed while being split "
                                      f"({sum(counts)} now, {part.rows} counted)")
            log.warning("%s: cut at %d rows by the service (OVERFLOW); split into %d key ranges",
                        url, answer.rows, len(pieces))
            todo[:0] = [replace(p, rows=n) for p, n in zip(pieces, counts, strict=True)]
            continue
        if digest is not None:
            digest.update(answer.data)
        block = answer_block(url, line, answer, schema)
        block.queries, queries = sorted(queries + client.log, key=lambda q: q["started"]), []
        client.log.clear()
        answer.data = b""
        line += block.n_lines
        yield block


def answer_block(url: str, first_line: int, answer: Answer, schema: TableSchema) -> ParsedBlock:
    """One answer as a typed block: the VOTable reader's (columns by name or alias, values that
    break the schema quarantined with their row)."""
    return parse_votable(answer.table, schema, path=url, first_line=first_line,
                         source_name=f"TAP_SCHEMA.columns of {service_url(url)}")
