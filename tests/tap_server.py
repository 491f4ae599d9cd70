"""A real TAP service on loopback for the tests: GAVO DaCHS serving mock Extended Mission tables.

:func:`served_columns` says what the test service declares for a table (our schema's columns
with the service's own descriptions, and IRSA-style computed columns we do not have);
:func:`write_resource` writes the DaCHS resource descriptor and the rows it imports;
:class:`DachsServer` imports it (``dachs imp``) and runs ``dachs serve start --foreground`` on a
free 127.0.0.1 port, with a settings file of its own (``GAVOSETTINGS``), so nothing in the
machine's DaCHS configuration changes. One test session at a time holds the resource directory
(a file lock): two sessions would import into the same database schema.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import quoteattr

import pytest

from tmass_lake.mock import generate
from tmass_lake.schema import TableSchema, load_schema

DACHS = shutil.which("dachs")
INPUTS = Path("/var/gavo/inputs")
RESOURCE = "tmass_lake_test"
"""Resource directory and database schema of the test tables (``tmass_lake_test.pt_src_c``)."""
HARD_MAXREC = 40_000
"""The service's hard row limit: a chunk planned larger than this comes back truncated (OVERFLOW)."""
SERVED_DESCRIPTION = " (as served)"
"""Appended to our descriptions in the RD: the harvest must carry the service's words."""
EXTRA_COLUMNS = [  # IRSA's tables carry computed columns of their own (unit vector, ...)
    {"name": "x", "type": "double precision", "unit": None, "ucd": "pos.cartesian.x",
     "description": "unit vector x (service computed column)", "principal": False},
    {"name": "y", "type": "double precision", "unit": None, "ucd": "pos.cartesian.y",
     "description": "unit vector y (service computed column)", "principal": False},
    {"name": "z", "type": "double precision", "unit": None, "ucd": "pos.cartesian.z",
     "description": "unit vector z (service computed column)", "principal": False},
    {"name": "ra_hours", "type": "double precision", "unit": "h", "ucd": "pos.eq.ra",
     "description": "right ascension in hours (service computed column)", "principal": False},
]
GATOR_NAMES = ("xdate", "decl")
"""Aliases of ours the service uses as its column names (as IRSA's Gator does)."""
SERVED_AS_TEXT = {"xdate"}
"""Served as text where we document a date (Gator's xdate)."""
NOT_SERVED = {  # documented (inferred) columns the service does not have; none the light curves use
    "pt_src_c": ("j_psfchi", "h_psfchi", "k_psfchi", "j_m_stdap", "j_msig_stdap", "h_m_stdap", "h_msig_stdap",
                 "k_m_stdap", "k_msig_stdap", "dist_edge_flg", "x_scan"),
    "cf_info": ("spos", "sig_dec"),
}
REFUSED = {"pt_src_c_nora": ("pt_src_c", "ra"), "pt_src_c_nokey": ("pt_src_c", "cntr")}
"""Served copies of a table (some of its rows) lacking a column a harvest needs."""
_SQL_TYPES = {"float32": "real", "float64": "double precision", "int8": "smallint", "int16": "smallint",
              "int32": "integer", "int64": "bigint", "string": "text", "date32": "date", "bool": "boolean"}


def dachs_missing_reason() -> str | None:
    """Why the DaCHS tests cannot run here (``None``: they can)."""
    if DACHS is None:
        return "GAVO DaCHS is not installed (.ci/run installs the Debian package gavodachs2-server)"
    if not INPUTS.is_dir():
        return f"GAVO DaCHS is installed but {INPUTS} is missing"
    return None


@dataclass(frozen=True)
class ServedTable:
    """One table of the test service: its declared columns and the bulk files holding its rows."""

    name: str
    key: str | None
    columns: tuple[dict, ...]
    """Declared columns: ``name`` (the service's), ``source`` (our column it holds; None: computed)."""
    files: tuple[Path, ...]
    loaded: tuple[str, ...]
    """The columns the files hold, in order (our names: the bulk files are in our layout)."""
    copy_of: str | None = None
    """A served copy of another table (some of its rows), not loaded from files."""

    @property
    def qualified(self) -> str:
        return f"{RESOURCE}.{self.name}"

    @property
    def served(self) -> dict[str, str]:
        """Our column -> the service's name for it."""
        return {c["source"]: c["name"] for c in self.columns if c.get("source")}

    @property
    def absent(self) -> list[str]:
        """Our documented columns the service does not serve, in our order."""
        return [n for n in self.loaded if n not in self.served]


def served_columns(schema: TableSchema, extra: bool = True, lacking: tuple[str, ...] = ()) -> list[dict]:
    """What the service declares, in IRSA's shape: the key first, then our other columns in reverse
    order (bar those it does not serve), Gator's names, service-worded descriptions, then computed ones."""
    gone = set(NOT_SERVED.get(schema.table, ())) | set(lacking)
    ours = [c for c in schema.columns if c.name not in gone]
    key = [c for c in ours if c.name == schema.key_column]
    ours = key + [c for c in ours if c.name != schema.key_column][::-1]
    cols = []
    for i, c in enumerate(ours):
        name = next((a for a in c.aliases if a in GATOR_NAMES), c.name)
        sql = "text" if name in SERVED_AS_TEXT else _SQL_TYPES[c.arrow]
        cols.append({"name": name, "source": c.name, "type": sql, "unit": c.unit, "ucd": c.ucd,
                     "description": c.description + SERVED_DESCRIPTION,
                     "principal": i < 10, "required": not c.nullable})
    return cols + ([dict(c, required=False) for c in EXTRA_COLUMNS] if extra and schema.positional else [])


def served_table(schema: TableSchema, files: list[Path], key: str | None = None) -> ServedTable:
    """The test service's version of a table whose rows are in IRSA bulk ``files``."""
    return ServedTable(schema.table, key or schema.key_column, tuple(served_columns(schema)),
                       tuple(files), tuple(schema.names))


def refused_table(name: str) -> ServedTable:
    """A served copy of a table lacking a column (:data:`REFUSED`)."""
    of, lacking = REFUSED[name]
    schema = load_schema(of)
    return ServedTable(name, None, tuple(served_columns(schema, lacking=(lacking,))), (), tuple(schema.names),
                       copy_of=of)


_COMPUTED = {"x": "cos(radians({dec})) * cos(radians({ra}))", "y": "cos(radians({dec})) * sin(radians({ra}))",
             "z": "sin(radians({dec}))", "ra_hours": "{ra} / 15.0"}


def _column_xml(c: dict) -> str:
    attrs = [f"name={quoteattr(c['name'])}", f"type={quoteattr(c['type'])}",
             f"verbLevel={quoteattr('1' if c['principal'] else '30')}"]
    if c.get("unit"):
        attrs.append(f"unit={quoteattr(c['unit'])}")
    if c.get("ucd"):
        attrs.append(f"ucd={quoteattr(c['ucd'])}")
    if c.get("required"):
        attrs.append('required="True"')
    return f"    <column {' '.join(attrs)}>\n      <description>{_escape(c['description'])}</description>\n" \
           f"    </column>"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def rd_text(tables: list[ServedTable]) -> str:
    """The resource descriptor: one ADQL table (indexed on its key) and one import per table."""
    parts = [f'<resource schema="{RESOURCE}">', "  <meta name='title'>tmass-lake test tables</meta>",
             "  <meta name='creationDate'>2026-11-27T00:00:00Z</meta>",
             "  <meta name='description'>Mock 2MASS Extended Mission tables for tmass-lake's tests</meta>"]
    for t in tables:
        parts.append(f'  <table id="{t.name}" onDisk="True" adql="True">')
        parts.append(f"    <meta name='description'>mock {t.name}</meta>")
        if t.key:
            parts.append(f'    <index columns="{t.key}"/>')
        parts.extend(_column_xml(c) for c in t.columns)
        parts.append("  </table>")
        names = ",".join(c["name"] for c in t.columns)
        parts.append(f'  <data id="import_{t.name}">\n    <sources>data/{t.name}.txt</sources>\n'
                     f'    <csvGrammar delimiter="|" topIgnoredLines="0" names="{names}"/>\n'
                     f'    <make table="{t.name}"><rowmaker idmaps="*"/></make>\n  </data>')
    parts.append("</resource>")
    return "\n".join(parts) + "\n"


def write_resource(tables: list[ServedTable], root: Path = INPUTS / RESOURCE) -> Path:
    """Write ``q.rd`` under ``root`` (with empty row files: :meth:`DachsServer.load` copies the rows)."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    for t in tables:
        (root / "data" / f"{t.name}.txt").write_bytes(b"")
    (root / "q.rd").write_text(rd_text(tables))
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DachsServer:
    """DaCHS on ``127.0.0.1:port`` with its own settings file; started and stopped by the tests."""

    def __init__(self, workdir: Path, port: int | None = None, hard_maxrec: int = HARD_MAXREC):
        self.workdir = workdir
        self.port = port or free_port()
        self.hard_maxrec = hard_maxrec
        # Where the server's query runners (spawned as user gavo) can read it: not under pytest's 0700 tmp.
        self.settings = INPUTS / f"{RESOURCE}.rc"
        self.env = dict(os.environ, GAVOSETTINGS=str(self.settings))
        self.log = workdir / "dachs.log"
        self.process: subprocess.Popen | None = None
        self._lock = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/tap"

    def lock(self) -> None:
        """Hold the test resource for this session (another session waits)."""
        INPUTS.mkdir(parents=True, exist_ok=True)
        self._lock = open(INPUTS / f"{RESOURCE}.lock", "w")  # noqa: SIM115 - held for the session
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        self.settings.write_text(
            "[web]\nbindAddress: 127.0.0.1\n"
            f"serverPort: {self.port}\nserverURL: http://127.0.0.1:{self.port}\n"
            f"[async]\nhardMAXREC: {self.hard_maxrec}\n")
        self.settings.chmod(0o644)

    def dachs(self, *args: str, cwd: Path | None = None) -> str:
        done = subprocess.run([DACHS, *args], cwd=cwd, env=self.env, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"dachs {' '.join(args)} failed ({done.returncode}):\n"
                               f"{done.stdout}{done.stderr}")
        return done.stdout

    def import_resource(self, root: Path, tables: list[ServedTable], ra: str = "ra",
                        dec: str = "dec") -> None:
        """``dachs imp`` the RD (tables, ``TAP_SCHEMA``, indexes), then the rows with PostgreSQL's COPY.

        IRSA's bulk format (``|``-separated, ``\\N`` null) is COPY's text format, so the rows go
        in as they are, about 50x faster than DaCHS's row-by-row grammar; the service's computed
        columns are then filled in SQL, and the table analysed.
        """
        self.dachs("imp", "q", cwd=root)
        by_name = {t.name: t for t in tables}
        for t in tables:
            if t.copy_of:
                continue
            stage = f"{RESOURCE}.stage_{t.name}"  # the bulk files' layout (ours), then the service's
            schema = load_schema(t.name)
            self.sql(f"DROP TABLE IF EXISTS {stage}; CREATE TABLE {stage} ("
                     + ", ".join(f'"{c.name}" {_SQL_TYPES[c.arrow]}' for c in schema.columns) + ")")
            names = ", ".join(f'"{n}"' for n in t.loaded)
            for f in t.files:
                with subprocess.Popen(["zcat", "-f", str(f)], stdout=subprocess.PIPE) as cat:
                    self.sql(f"COPY {stage} ({names}) FROM STDIN WITH (FORMAT text, DELIMITER '|')",
                             stdin=cat.stdout)
            served = t.served
            ours = ", ".join(f'"{n}"' for n in served)
            self.sql(f"INSERT INTO {t.qualified} ({', '.join(served.values())}) SELECT {ours} FROM {stage}; "
                     f"DROP TABLE {stage}")
            computed = [c["name"] for c in t.columns if c["name"] in _COMPUTED]
            if computed:
                sets = ", ".join(f"{n} = {_COMPUTED[n].format(ra=served[ra], dec=served[dec])}"
                                 for n in computed)
                self.sql(f"UPDATE {t.qualified} SET {sets}")
            self.sql(f"ANALYZE {t.qualified}")
        for t in tables:
            if t.copy_of:
                names = ", ".join(c["name"] for c in t.columns)
                self.sql(f"INSERT INTO {t.qualified} ({names}) SELECT {names} "
                         f"FROM {by_name[t.copy_of].qualified} LIMIT 200")

    def sql(self, statement: str, stdin=None, tuples: bool = False) -> str:  # noqa: ANN001 - a pipe or None
        """Run one statement in DaCHS's database as the local PostgreSQL superuser."""
        flags = ["-t", "-A"] if tuples else []
        done = subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1",
                               *flags, "-d", "gavo", "-c", statement], stdin=stdin, capture_output=True,
                              text=True)
        if done.returncode:
            raise RuntimeError(f"psql {statement[:80]!r} failed:\n{done.stderr}")
        return done.stdout

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until ``/tap`` answers."""
        log = open(self.log, "ab")  # noqa: SIM115 - the server's output, for a failing test to show
        self.process = subprocess.Popen([DACHS, "serve", "start", "--foreground"], env=self.env,
                                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dachs serve exited ({self.process.returncode}):\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/availability", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"DaCHS did not answer on {self.url} within {timeout} s:\n{self.log.read_text()}")

    def stop(self) -> None:
        """Stop the server (its process group: the query runners it spawned too)."""
        if self.process is None or self.process.poll() is not None:
            self.process = None
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None

    def close(self) -> None:
        self.stop()
        self.settings.unlink(missing_ok=True)
        if self._lock is not None:
            self._lock.close()
            self._lock = None


@contextlib.contextmanager
def postgres_running() -> Iterator[None]:
    """DaCHS's database: every PostgreSQL cluster that is down is started, and stopped again after."""
    listed = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True, check=True)
    started = []
    for line in listed.stdout.splitlines():
        version, name, _port, status = line.split()[:4]
        if status != "online":
            subprocess.run(["pg_ctlcluster", version, name, "start"], check=True, capture_output=True)
            started.append((version, name))
    try:
        yield
    finally:
        for version, name in started:
            subprocess.run(["pg_ctlcluster", version, name, "stop"], capture_output=True)


# -- the session's service -----------------------------------------------------------------------
TABLES = ("pt_src_c", "cf_info", "cf_link")
MOCK_SCALE = 0.4  # pt_src_c and cf_link ~126k rows each: a 12k-row harvest is 11 chunks


@dataclass
class TapService:
    """The running test service, the mock it serves (IRSA bulk files under ``mock``) and its tables."""

    server: DachsServer
    mock: Path
    tables: dict[str, ServedTable]

    @property
    def url(self) -> str:
        """The service as a tmass-lake input (``tap+http://127.0.0.1:PORT/tap``)."""
        return "tap+" + self.server.url

    def rows(self, table: str) -> int:
        """How many rows the service holds in ``table`` (asked in SQL, not through TAP)."""
        return int(self.server.sql(f"SELECT COUNT(*) FROM {self.tables[table].qualified}", tuples=True))


@pytest.fixture(scope="session")
def tap_service(tmp_path_factory) -> Iterator[TapService]:
    """DaCHS serving the mock calibration tables on loopback, loaded once per session, stopped after."""
    reason = dachs_missing_reason()
    if reason:
        print(f"\nskipping the TAP tests: {reason}")
        pytest.skip(reason)
    base = tmp_path_factory.mktemp("tap")
    generate(str(base / "mock"), scale=MOCK_SCALE, seed=3, tables=list(TABLES), reference=False,
             progress=False)
    tables = {name: served_table(load_schema(name), sorted((base / "mock" / "irsa" / name).glob("*.gz")))
              for name in TABLES}
    tables |= {name: refused_table(name) for name in REFUSED}
    with postgres_running():
        yield from _serve(base, tables)


def _serve(base: Path, tables: dict[str, ServedTable]) -> Iterator[TapService]:
    server = DachsServer(base)
    server.lock()
    try:
        root = write_resource(list(tables.values()))
        server.import_resource(root, list(tables.values()))
        server.start()
        yield TapService(server, base / "mock", tables)
    finally:
        server.stop()
        with contextlib.suppress(RuntimeError):
            server.dachs("drop", "q", cwd=INPUTS / RESOURCE)
        shutil.rmtree(INPUTS / RESOURCE, ignore_errors=True)
        server.close()
