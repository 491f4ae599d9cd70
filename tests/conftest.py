"""Shared fixtures: a tiny synthetic pt_src_6x2 input set, a build helper and lake comparison.

The inputs are written with the mock package's bulk formatter, so they look like IRSA's files.
Half the sources sit in a 3-degree patch around (150, 2) so the build makes several partitions
at a few orders with margins, and a cone search there finds rows.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import s3fs
from astropy.table import MaskedColumn
from dask.distributed import Client
from tap_server import tap_service  # noqa: F401 - the DaCHS fixture, shared by the TAP tests

from tmass_lake.cli import main
from tmass_lake.cluster import dask_client
from tmass_lake.convert import (
    LakeArguments,
    TableArguments,
    build_lake,
    build_table,
    load_pipelines,
    resolve_parameters,
    table_arguments,
)
from tmass_lake.lake import open_lake
from tmass_lake.mock.bulkfmt import format_table
from tmass_lake.mock.scoring import MockLake, mock_lake
from tmass_lake.schema import TableSchema, load_schema

TABLE = "pt_src_6x2"
BIN = Path(sys.executable).parent
N_FILES = 4
ROWS_PER_FILE = 4_000
PIXEL_THRESHOLD = 1_500  # several partitions at orders 0..3 from 16k rows
CONE = (150.0, 2.0, 1800.0)  # ra, dec, radius in arcsec: inside the dense patch


@pytest.fixture(scope="session")
def pt_schema() -> TableSchema:
    return load_schema(TABLE)


def synthetic_table(schema: TableSchema, n: int, seed: int, first_cntr: int = 1) -> pa.Table:
    """``n`` rows with valid values for every column of ``schema`` (not physically meaningful)."""
    rng = np.random.default_rng(seed)
    dense = rng.random(n) < 0.5
    ra = np.where(dense, 150.0 + rng.uniform(-1.5, 1.5, n), rng.uniform(0.0, 360.0, n)) % 360.0
    dec = np.where(dense, 2.0 + rng.uniform(-1.5, 1.5, n),
                   np.degrees(np.arcsin(rng.uniform(-1.0, 1.0, n))))
    arrays = []
    for col in schema.columns:
        t = col.arrow_type
        null = (rng.random(n) < 0.1) if col.nullable else None
        if col.name == schema.ra_column:
            values = np.round(ra, 6)
        elif col.name == schema.dec_column:
            values = np.round(dec, 6)
        elif col.name in ("cntr", "pxcntr", "gcntr"):
            values = np.arange(first_cntr, first_cntr + n, dtype=np.int64)
        elif pa.types.is_date32(t):
            values = rng.integers(10_000, 11_000, n).astype(np.int32)
        elif pa.types.is_floating(t):
            values = np.round(rng.uniform(0.0, 9.0, n), col.scale if col.scale is not None else 3)
        elif pa.types.is_integer(t):
            values = rng.integers(0, 9, n)
        else:
            values = np.array(["A"] * n, dtype=object)
        arr = pa.array(values, mask=null)
        arrays.append(arr.cast(t) if not pa.types.is_date32(t) else arr.cast(pa.int32()).cast(t))
    return pa.Table.from_arrays(arrays, schema=pa.schema([c.field() for c in schema.columns]))


def as_text(value, column) -> str:
    """A typed value printed back the way IRSA's bulk text carries it (documented scale, zero padding)."""
    if value is None:
        return "\\N"
    if column.scale is not None:
        return f"{value:.{column.scale}f}"
    if zero_pad := re.fullmatch(r"%?0(\d+)h?d", column.type):
        return f"{value:0{zero_pad.group(1)}d}"
    return str(value)


def normalise(text: str, column) -> str:
    """Bulk text as :func:`as_text` prints it: trailing blanks dropped, decimals padded to the scale."""
    if text == "\\N" or column.scale is None:
        return text.rstrip()
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(column.scale, '0')}"


def bulk_lines(schema: TableSchema, n: int, seed: int, first_cntr: int = 1) -> list[bytes]:
    """IRSA bulk lines (each ending in ``\\n``) of a synthetic table."""
    text = format_table(synthetic_table(schema, n, seed, first_cntr), schema)
    return text.splitlines(keepends=True)


def write_gz(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(data)
    return path


@pytest.fixture(scope="session")
def tiny_inputs(tmp_path_factory, pt_schema) -> list[Path]:
    """Four gzip'd bulk files of 4,000 clean rows each, IRSA style names."""
    root = tmp_path_factory.mktemp("irsa") / TABLE
    return [
        write_gz(root / f"{TABLE}_{suffix}.gz",
                 b"".join(bulk_lines(pt_schema, ROWS_PER_FILE, seed=i, first_cntr=1 + i * ROWS_PER_FILE)))
        for i, suffix in enumerate(["aaa", "aab", "aac", "aad"])
    ]


def make_args(schema: TableSchema, inputs, output: str, *, tmp_dir: str | None = None,
              storage_options: dict | None = None, resume: bool = False, indexes=(),
              **params) -> TableArguments:
    """A table build of ``inputs`` with the shared thresholds (``params``: build parameters)."""
    params.setdefault("pixel_threshold", PIXEL_THRESHOLD)
    return table_arguments(schema, [str(p) for p in inputs], output, params=resolve_parameters(params),
                           tmp_dir=tmp_dir, indexes=indexes, storage_options=storage_options, resume=resume,
                           progress=False)


@dataclass
class CliResult:
    """What an in-process ``tmass-lake`` call printed and returned."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def text(self) -> str:
        return self.stdout + self.stderr


def run_cli(*argv: str) -> CliResult:
    """``tmass-lake ARGV`` in this process (argument errors and short builds need no new process)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:  # argparse's own usage errors
            code = int(e.code or 0)
    return CliResult(code, out.getvalue(), err.getvalue())


def build_cli(inputs, output: str, *extra: str) -> list[str]:
    """The ``tmass-lake build`` command line for the tiny inputs with the shared thresholds; like
    :func:`make_args`, no index unless ``extra`` asks for one (the command line indexes the key
    by default)."""
    index = () if "--index" in extra else ("--no-index",)
    return [str(BIN / "tmass-lake"), "build", "--table", TABLE, "--input", *map(str, inputs),
            "--output", output, "--pixel-threshold", str(PIXEL_THRESHOLD), "--quiet", *index, *extra]


# --- a cluster of dask command-line processes -------------------------------------------------------

ISOLATE = """set -e
mount -t tmpfs -o size=512m tmpfs "$TMPDIR"
mount -t tmpfs -o size=512m tmpfs "$HOME/.cache"
exec "$@"
"""


class ExternalCluster:
    """A scheduler and workers started as ``dask`` command-line processes on 127.0.0.1.

    ``private``: each worker runs in its own mount namespace with a private tmpfs over its
    ``$TMPDIR`` and ``$HOME/.cache``, so no worker sees another's (or the client's) local files,
    as on hosts that share no disk.
    """

    def __init__(self, tmp: Path, env: dict | None = None, private: bool = False):
        self.tmp, self.env, self.private = tmp, env or dict(os.environ), private
        self.scheduler_file = tmp / "scheduler.json"
        self.procs: list[subprocess.Popen] = []
        self.workers: list[subprocess.Popen] = []

    def _start(self, *args: str, log: str, private: bool = False) -> subprocess.Popen:
        wrap = (["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", ISOLATE, "sh"]
                if private else [])
        with open(self.tmp / log, "wb") as out:
            # its own session: the worker's nanny and worker process die together on killpg
            proc = subprocess.Popen([*wrap, str(BIN / "dask"), *args], stdout=out, stderr=subprocess.STDOUT,
                                    env=self.env, start_new_session=True)
        self.procs.append(proc)
        return proc

    def start(self, n_workers: int = 2) -> ExternalCluster:
        self._start("scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                    "--scheduler-file", str(self.scheduler_file), log="scheduler.log")
        wait_for(lambda: self.scheduler_file.exists() and self.scheduler_file.stat().st_size, 60,
                 "the scheduler file")
        for i in range(n_workers):
            self.workers.append(self._start(
                "worker", "--scheduler-file", str(self.scheduler_file), "--nworkers", "1", "--nthreads", "1",
                "--host", "127.0.0.1", "--no-dashboard", "--memory-limit", "1GiB", "--name", f"w{i}",
                log=f"worker{i}.log", private=self.private))
        with Client(self.address, timeout=30) as client:
            client.wait_for_workers(n_workers, timeout=60)
        return self

    @property
    def address(self) -> str:
        return json.loads(self.scheduler_file.read_text())["address"]

    def kill_worker(self, i: int) -> None:
        os.killpg(self.workers[i].pid, signal.SIGKILL)
        self.workers[i].wait(10)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


# --- a loopback S3 endpoint, one per session ------------------------------------------------------

BUCKET = "tmass-lake-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 server in its own process on a free loopback port, stopped at the end."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def so(s3_endpoint) -> dict:
    """Storage options for the endpoint (dummy credentials: nothing leaves the machine)."""
    return {"endpoint_url": s3_endpoint, "key": "testing", "secret": "testing"}


@pytest.fixture(scope="session")
def s3(so, tiny_inputs) -> s3fs.S3FileSystem:
    """The filesystem, with the bucket made and the tiny inputs uploaded under ``in/``."""
    fs = s3fs.S3FileSystem(**so)
    fs.mkdir(BUCKET)
    for p in tiny_inputs:
        fs.put_file(str(p), f"{BUCKET}/in/{TABLE}/{p.name}")
    return fs


def cli_options(so: dict) -> list[str]:
    return [x for k, v in so.items() for x in ("--storage-option", f"{k}={v}")]


def s3_environ(endpoint: str) -> dict[str, str]:
    """The environment a process needs to reach the endpoint, as a cloud host gets it (no options)."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1"}


# --- private mounts (tests run as root) -------------------------------------------------------------


def private_mounts(tmp: Path) -> None:
    """Skip the test, saying why, unless ``unshare --mount`` may mount a tmpfs here."""
    probe = tmp / "unshare-probe"
    probe.mkdir(exist_ok=True)
    try:
        proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "--",
                               "mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"needs 'unshare --mount' and a tmpfs mount (as root): {e}")
    if proc.returncode != 0:
        pytest.skip(f"needs 'unshare --mount' and a tmpfs mount (as root): {proc.stderr.strip()}")


@pytest.fixture(scope="session")
def local_client():
    """One local cluster (2 single-threaded worker processes) shared by the session."""
    # 2 GiB: the session's workers run every test's tasks for ~20 minutes; at 1 GiB the pages they
    # keep (pyarrow's pool, imported modules) reached Dask's 80 % pause threshold and a late
    # build waited for ever on two paused workers.
    with dask_client(workers=2, memory_limit="2GiB") as client:
        yield client


@pytest.fixture(scope="session")
def reference_lake(tmp_path_factory, pt_schema, tiny_inputs, local_client) -> Path:
    """The tiny inputs built once on the local cluster: what every other build must equal."""
    out = tmp_path_factory.mktemp("reference") / "lake"
    build_table(make_args(pt_schema, tiny_inputs, str(out)), local_client)
    return out


def lake_data(fs, root: str, pattern: str = "*/dataset/**/Npix=*.parquet") -> dict[str, str]:
    """Every data Parquet file of a collection (main and margin; ``pattern`` under ``root``):
    relative path -> hash of its rows.

    Files are read back and hashed as Arrow IPC (schema metadata dropped), so write-time
    metadata cannot make equal content look different.
    """
    root = root.rstrip("/")
    out = {}
    for path in sorted(fs.glob(f"{root}/{pattern}")):
        with fs.open(path, "rb") as f:
            table = pq.read_table(f)
        table = table.replace_schema_metadata(None)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as w:
            w.write_table(table.combine_chunks())
        out[path[len(root) + 1:]] = hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()
    return out


def local_lake_data(root: Path, pattern: str = "*/dataset/**/Npix=*.parquet") -> dict[str, str]:
    from fsspec.implementations.local import LocalFileSystem

    return lake_data(LocalFileSystem(), str(root), pattern)


PRELOAD = '''"""Dask worker preload for the tests: count (and maybe slow) the map and reduce tasks."""
import functools
import json
import os
import time

import tmass_lake.convert.map as _map
import tmass_lake.convert.reduce as _reduce


def _instrument(module, name, stage):
    fn = getattr(module, name)
    if getattr(fn, "_tmass_lake_test", False):  # the preload may be executed more than once
        return
    delay = float(os.environ.get(f"TMASS_LAKE_TEST_{stage.upper()}_DELAY", "0"))
    delays = os.environ.get("TMASS_LAKE_TEST_DELAYS")  # a JSON file {stage: seconds}, read at each call
    log = os.environ.get("TMASS_LAKE_TEST_CALLS")

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if log:
            with open(log, "a") as f:
                f.write(stage + "\\n")
        if delays and os.path.exists(delays):
            with open(delays) as f:
                time.sleep(float(json.load(f).get(stage, delay)))
        else:
            time.sleep(delay)
        return fn(*args, **kwargs)

    wrapper._tmass_lake_test = True
    setattr(module, name, wrapper)


_instrument(_map, "map_input", "map")
_instrument(_reduce, "reduce_partition", "reduce")
'''


@pytest.fixture(scope="session")
def worker_env(tmp_path_factory):
    """``worker_env(calls=..., map_delay=..., reduce_delay=...)``: an environment whose Dask workers
    (local cluster or ``dask worker``) log each map/reduce task to ``calls`` and sleep first
    (``delays``: a JSON file ``{"map": s, "reduce": s}`` read at each call, to change it mid-run)."""
    preload = tmp_path_factory.mktemp("preload") / "tmass_lake_test_preload.py"
    preload.write_text(PRELOAD)

    def env(calls: Path | None = None, map_delay: float = 0.0, reduce_delay: float = 0.0,
            delays: Path | None = None) -> dict:
        out = dict(os.environ, DASK_DISTRIBUTED__WORKER__PRELOAD=json.dumps([str(preload)]),
                   TMASS_LAKE_TEST_MAP_DELAY=str(map_delay), TMASS_LAKE_TEST_REDUCE_DELAY=str(reduce_delay))
        if calls is not None:
            out["TMASS_LAKE_TEST_CALLS"] = str(calls)
        if delays is not None:
            out["TMASS_LAKE_TEST_DELAYS"] = str(delays)
        return out

    return env


def task_calls(calls: Path) -> dict[str, int]:
    """How many map and reduce tasks the instrumented workers ran."""
    lines = calls.read_text().split() if calls.exists() else []
    return {stage: lines.count(stage) for stage in ("map", "reduce")}


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a process started in its own session, and every process it started."""
    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    os.killpg(proc.pid, signal.SIGKILL)
    for child in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    proc.wait(30)
    psutil.wait_procs(family, timeout=30)


def wait_for(predicate, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not (found := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)
    return found


def build_mock_lake(env: MockLake, client, families=("6x", "calibration")) -> None:
    """Build ``env.mock`` into ``env.lake`` with the families' pipelines."""
    pipelines = tuple(p for family in families for p in load_pipelines(family))
    build_lake(LakeArguments(pipelines=pipelines, input_roots=(str(env.mock),), output=str(env.lake),
                             progress=False, report_plots=False, echo=lambda _line: None), client)


@pytest.fixture(scope="session")
def env(tmp_path_factory, local_client):
    """The mock lake the lake-API tests share (mock at scale 0.3), built once per session, or
    reused from ``$TMASS_LAKE_TEST_LAKE`` when set (kept between runs)."""
    base = os.environ.get("TMASS_LAKE_TEST_LAKE") or tmp_path_factory.getbasetemp() / "mock_lake"
    return mock_lake(base, lambda env: build_mock_lake(env, local_client))


@pytest.fixture(scope="session")
def lake(env):
    return open_lake(str(env.lake))


def masked_column(column: pa.ChunkedArray) -> MaskedColumn:
    """An Arrow column as astropy writes it into IPAC/VOTable: masked nulls, dates and text as text."""
    a = column.combine_chunks()
    mask = a.is_null().to_numpy(zero_copy_only=False)
    if pa.types.is_date32(a.type) or pa.types.is_string(a.type):
        values = np.array([str(v) if v is not None else "" for v in a.to_pylist()])
    else:
        fill = 0 if pa.types.is_integer(a.type) else np.nan
        values = np.array([v if v is not None else fill for v in a.to_pylist()],
                          dtype=a.type.to_pandas_dtype())
    return MaskedColumn(values, mask=mask)
