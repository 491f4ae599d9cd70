"""Object store: builds reading and writing s3:// on a real S3 endpoint (moto's server, in its own
process on 127.0.0.1), queried back with lsdb; failures leave no valid collection; transient
errors are retried with backoff; permanent ones name the path."""

from __future__ import annotations

import errno
import itertools
import re
import subprocess

import lsdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import s3fs
from botocore.exceptions import EndpointConnectionError
from conftest import (
    BUCKET,
    CONE,
    TABLE,
    build_cli,
    cli_options,
    lake_data,
    local_lake_data,
    make_args,
    run_cli,
)
from dask.distributed import Client, LocalCluster
from fsspec.implementations.local import LocalFileSystem
from hats.io.validation import is_valid_collection
from upath import UPath

import tmass_lake.convert.writer as writer
import tmass_lake.storage as storage
from tmass_lake.convert import build_table
from tmass_lake.convert.writer import finish_parquet_table
from tmass_lake.errors import InputError
from tmass_lake.readers import expand_inputs
from tmass_lake.storage import StorageError, filesystem, open_atomic, retrying, write_parquet


@pytest.fixture
def threaded_client():
    """An in-process cluster, so a test can monkeypatch what the tasks call."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as c, \
            Client(c) as client:
        yield client


@pytest.mark.slow
def test_cli_build_from_s3_to_s3_equals_local_build_and_lsdb_queries_it(
        s3, so, reference_lake, tmp_path):
    out = f"s3://{BUCKET}/lake"
    cmd = build_cli([f"s3://{BUCKET}/in/{TABLE}/*.gz"], out, "--workers", "2", "--index", "cntr",
                    "--tmp-dir", f"s3://{BUCKET}/tmp/spill-here", *cli_options(so))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "16,000 rows written" in proc.stdout

    root = UPath(out, **so)
    assert is_valid_collection(root, strict=True, verbose=False)
    assert s3.exists(f"{BUCKET}/lake/collection.properties")
    assert not s3.exists(f"{BUCKET}/tmp/spill-here")  # the spill on S3 is cleared at the end
    data = lake_data(s3, f"{BUCKET}/lake")
    assert data == local_lake_data(reference_lake)
    assert any("_10arcsec/" in k for k in data)  # margins were written too
    # the index stage spilled to s3:// too (it used to drop the protocol and look on local disk)
    assert s3.glob(f"{BUCKET}/lake/{TABLE}_cntr_index/dataset/index/*.parquet")

    remote = lsdb.open_catalog(root)
    local = lsdb.open_catalog(reference_lake)
    assert remote.hc_structure.get_healpix_pixels() == local.hc_structure.get_healpix_pixels()
    ra, dec, radius = CONE
    got = remote.cone_search(ra, dec, radius).compute().sort_values("cntr")
    want = local.cone_search(ra, dec, radius).compute().sort_values("cntr")
    assert len(got) > 100
    assert got.reset_index(drop=True).equals(want.reset_index(drop=True))


@pytest.mark.slow
def test_failed_reduce_leaves_no_valid_collection_and_resume_completes(
        s3, so, pt_schema, reference_lake, threaded_client, monkeypatch):
    out = f"s3://{BUCKET}/failing"
    real = storage.open_atomic
    partition_writes = itertools.count(1)

    def deny_after_three(fs, path):
        if "/dataset/" in path and next(partition_writes) > 3:
            raise PermissionError("Access Denied")  # what s3fs makes of AccessDenied: permanent
        return real(fs, path)

    monkeypatch.setattr(storage, "open_atomic", deny_after_three)
    monkeypatch.setattr(writer, "open_atomic", deny_after_three)  # the data files' writer
    inputs = expand_inputs([f"s3://{BUCKET}/in/{TABLE}/"], so)
    args = make_args(pt_schema, inputs, out, storage_options=so)
    with pytest.raises(StorageError, match=rf"writing s3://{BUCKET}/failing/{TABLE}/dataset/.*Npix=.*"
                                           r"PermissionError: Access Denied"):
        build_table(args, threaded_client)
    assert len(s3.glob(f"{BUCKET}/failing/*/dataset/**/*.parquet")) == 3  # then every write failed
    for name in ("collection.properties", f"{TABLE}/hats.properties", "build_report.json"):
        assert not s3.exists(f"{BUCKET}/failing/{name}")
    assert not is_valid_collection(UPath(out, **so), verbose=False)

    monkeypatch.setattr(storage, "open_atomic", real)
    monkeypatch.setattr(writer, "open_atomic", real)
    args = make_args(pt_schema, inputs, out, storage_options=so, resume=True)
    build_table(args, threaded_client)
    assert is_valid_collection(UPath(out, **so), strict=True, verbose=False)
    assert lake_data(s3, f"{BUCKET}/failing") == local_lake_data(reference_lake)


def test_failed_write_leaves_no_truncated_object(s3):
    """Closing an fsspec upload commits it: a writer that fails half-way must abort instead."""
    path = f"{BUCKET}/atomic/half.parquet"
    with pytest.raises(RuntimeError, match="writer died"), open_atomic(s3, path) as f:
        f.write(b"PAR1" + b"x" * 100_000)
        raise RuntimeError("writer died")
    s3.invalidate_cache()
    assert not s3.exists(path)
    with open_atomic(s3, path) as f:
        f.write(b"whole")
    assert s3.cat(path) == b"whole"


# --- transient errors are retried with backoff ----------------------------------------------------


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(storage.time, "sleep", slept.append)
    return slept


@pytest.mark.parametrize("error", [
    EndpointConnectionError(endpoint_url="http://127.0.0.1:1/x"),  # botocore: not a builtin error
    ConnectionResetError(errno.ECONNRESET, "reset by peer"),
    OSError(errno.EBUSY, "SlowDown"),  # s3fs' translation of 503 SlowDown
    TimeoutError("read timed out"),
], ids=["endpoint-connection", "reset", "slow-down", "timeout"])
def test_transient_errors_are_retried_with_exponential_backoff(sleeps, error):
    attempts = []

    def flaky():
        attempts.append(1)
        if len(attempts) < 4:
            raise error
        return "done"

    assert retrying(flaky, what="writing s3://b/k", base_delay=0.1) == "done"
    assert len(attempts) == 4
    assert sleeps == pytest.approx([0.1, 0.2, 0.4])


def test_transient_error_that_persists_fails_naming_the_path(sleeps):
    def down():
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1/x")

    with pytest.raises(StorageError, match=r"writing s3://b/k: EndpointConnectionError.*after 3 attempts"):
        retrying(down, what="writing s3://b/k", attempts=3)
    assert len(sleeps) == 2


@pytest.mark.parametrize("error", [FileNotFoundError("The specified bucket does not exist"),
                                   PermissionError("Access Denied")], ids=["missing", "denied"])
def test_permanent_errors_are_not_retried(sleeps, error):
    attempts = []

    def fail():
        attempts.append(1)
        raise error

    with pytest.raises(StorageError, match=rf"writing s3://b/k: {type(error).__name__}: {error}$"):
        retrying(fail, what="writing s3://b/k")
    assert len(attempts) == 1 and sleeps == []


class FlakyFS:
    """A store whose first ``open`` of each file drops the connection, as a store under load does.

    Over a local filesystem it behaves as an object store: no directories to make first.
    """

    def __init__(self, fs, match=lambda path, mode: True):
        self.fs, self.match, self.failed = fs, match, []

    def open(self, path, mode="rb", **kw):
        if self.match(path, mode) and (path, mode) not in self.failed:
            self.failed.append((path, mode))
            raise EndpointConnectionError(endpoint_url=f"http://127.0.0.1:1/{path}")
        if "w" in mode and isinstance(self.fs, LocalFileSystem):
            self.fs.makedirs(self.fs._parent(path), exist_ok=True)
        return self.fs.open(path, mode, **kw)

    def pipe_file(self, path, value, mode="overwrite", **kw):  # through this open, as s3fs's would
        if mode == "create" and self.fs.exists(path):
            raise FileExistsError(path)
        with self.open(path, "wb", **kw) as f:
            f.write(value)

    def __getattr__(self, name):
        return getattr(self.fs, name)


def test_parquet_write_to_flaky_s3_is_retried(s3, sleeps):
    flaky = FlakyFS(s3)
    table = pa.table({"x": [1, 2, 3]})
    size = write_parquet(table, flaky, f"{BUCKET}/flaky/one.parquet")
    assert flaky.failed == [(f"{BUCKET}/flaky/one.parquet", "wb")]
    assert size == s3.size(f"{BUCKET}/flaky/one.parquet") > 0
    assert len(sleeps) == 1


@pytest.mark.slow
def test_build_over_a_flaky_store_completes_identically(pt_schema, tiny_inputs, reference_lake, tmp_path,
                                                         threaded_client, sleeps, monkeypatch):
    """Every spill run, plan record, partition and quarantine file fails once on first open."""
    flaky_fs: list[FlakyFS] = []

    def flaky_url_to_fs(url, **so):
        fs, path = real(url, **so)
        flaky_fs.append(FlakyFS(fs, match=lambda p, mode: p.endswith(".arrow") or ".json.tmp-" in p
                                or ".parquet.tmp-" in p or (p.endswith(".parquet") and "w" in mode)))
        return flaky_fs[-1], path

    real = storage.url_to_fs
    monkeypatch.setattr(storage, "url_to_fs", flaky_url_to_fs)
    out = tmp_path / "lake"
    build_table(make_args(pt_schema, tiny_inputs, str(out)), threaded_client)
    failed = [f for fs in flaky_fs for f in fs.failed]
    assert sum(p.endswith(".arrow") and m == "wb" for p, m in failed) >= len(tiny_inputs)  # spill runs
    assert sum(p.endswith(".arrow") and m == "rb" for p, m in failed) >= len(tiny_inputs)  # read back
    assert sum("Npix=" in p for p, _ in failed) >= 34  # partitions and margins
    assert len(sleeps) == len(failed)
    assert local_lake_data(out) == local_lake_data(reference_lake)


# --- permanent errors name the path ---------------------------------------------------------------


def test_missing_key_and_missing_bucket_inputs_name_the_path(s3, so, pt_schema, local_client, tmp_path):
    for url in (f"s3://{BUCKET}/in/{TABLE}/{TABLE}_zzz.gz", f"s3://no-such-bucket/in/{TABLE}_aaa.gz"):
        with pytest.raises(InputError, match=rf"^{re.escape(url)}: no such file") as info:
            build_table(make_args(pt_schema, [url], str(tmp_path / "lake"), storage_options=so), local_client)
        assert info.value.path == url
    for url in (f"s3://{BUCKET}/in/{TABLE}/*.nothing", f"s3://{BUCKET}/nowhere/", "s3://no-such-bucket/*.gz"):
        with pytest.raises(InputError, match=rf"^{re.escape(url)}: (no file matches|no such directory)"):
            expand_inputs([url], so)


def test_output_to_missing_bucket_fails_naming_it_without_creating_it(s3, so, tiny_inputs, local_client):
    out = "s3://no-such-bucket-out/lake"
    proc = run_cli(*build_cli(tiny_inputs[:1], out, "--scheduler", local_client.scheduler.address,
                              "--tmp-dir", f"{out}/_build", *cli_options(so))[1:])
    assert proc.returncode == 2, proc.stderr
    assert "tmass-lake: error: creating s3://no-such-bucket-out/lake/_build.lock" in proc.stderr
    assert "bucket does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr
    s3.invalidate_cache()
    assert not s3.exists("no-such-bucket-out")  # never created behind the user's back


def test_metadata_scan_sees_what_workers_wrote_after_the_client_listed_the_output(s3, so):
    """A new build lists its output (nothing but its lock may be there) before the workers write into
    it; the client's filesystem must not answer the metadata scan from that stale listing (a Parquet
    table, whose ``_metadata`` is the client's first write there, failed with FileNotFoundError)."""
    out = f"s3://{BUCKET}/late/sixxf_link"
    fs, root = filesystem(out, so)
    fs.pipe_file(f"{root}/_build.lock", b"{}")
    assert fs.ls(root) == [f"{root}/_build.lock"]  # what build_session does
    worker = s3fs.S3FileSystem(**so, skip_instance_cache=True)  # another process, in effect
    with worker.open(f"{root}/dataset/part-00000.parquet", "wb") as f:
        pq.write_table(pa.table({"x": [1, 2, 3]}), f)
    finish_parquet_table(out, {"table": "sixxf_link"}, expected_rows=3, storage_options=so)
    assert worker.exists(f"{root}/dataset/_metadata") and worker.exists(f"{root}/table.properties")
