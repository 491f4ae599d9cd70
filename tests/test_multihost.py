"""Hosts that share no disk: a ``dask scheduler`` and two ``dask worker`` processes, each worker in
its own mount namespace with a private tmpfs over its ``$TMPDIR`` and ``$HOME/.cache``; inputs,
lakes and scratch on the loopback S3 endpoint; credentials and endpoint from the environment,
as on cloud hosts. The commands are the README's ("On a Dask cluster in the cloud"), read from
it and run as they are written, with its variables set: a single-table build, a whole lake of
every family with ``--tmp-dir`` on S3, ``info`` and ``verify``, a resume after the client was
killed, and a build that loses a worker during reduce. Every result equals a local build of the
same mock, file by file.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import (
    BIN,
    BUCKET,
    ExternalCluster,
    kill_tree,
    lake_data,
    local_lake_data,
    private_mounts,
    s3_environ,
    task_calls,
    wait_for,
)
from dask.distributed import Client

from tmass_lake.convert import LakeArguments, build_lake, build_table, load_pipelines, table_arguments
from tmass_lake.convert.manifest import DERIVED_TYPES
from tmass_lake.mock import generate
from tmass_lake.readers import expand_inputs
from tmass_lake.schema import load_schema

pytestmark = pytest.mark.slow
README = Path(__file__).resolve().parents[1] / "README.md"
SCALE = 0.01
TABLE = "pt_src_c"  # the README's single table: 12 partitions at this scale
DATA = "**/dataset/**/*.parquet"  # every data file of a lake: catalogs, margins, indexes, Parquet tables


def readme_commands() -> dict[str, str]:
    """The ``tmass-lake`` commands of the README's cluster section, by role."""
    text = README.read_text()
    section = text[text.index("## On a Dask cluster in the cloud"):]
    section = section[: section.index("\n## ", 1)]
    commands = [line.strip() for block in re.findall(r"```sh\n(.*?)```", section, re.S)
                for line in block.replace("\\\n", " ").splitlines() if line.startswith("tmass-lake ")]
    roles = {
        "table": lambda c: "--table" in c and "--resume" not in c,
        "resume": lambda c: "--table" in c and "--resume" in c,
        "lake": lambda c: c.startswith("tmass-lake build all ") and "--tmp-dir" in c,
        "info": lambda c: c.startswith("tmass-lake info "),
        "verify": lambda c: c.startswith("tmass-lake verify "),
    }
    found = {role: [c for c in commands if is_it(c)] for role, is_it in roles.items()}
    assert all(len(c) == 1 for c in found.values()), f"README cluster commands changed: {found}"
    return {role: c[0] for role, c in found.items()}


COMMANDS = readme_commands()


@dataclass
class Hosts:
    cluster: ExternalCluster
    env: dict
    calls: Path
    delays: Path

    def run(self, command: str, lake: str, mirror: str, timeout: float = 600) -> subprocess.CompletedProcess:
        """A README command on the client, its variables set; must succeed."""
        proc = subprocess.run(["bash", "-c", command], env=self.client_env(lake, mirror), capture_output=True,
                              text=True, timeout=timeout)
        assert proc.returncode == 0, f"{command}\n{proc.stderr}"
        return proc

    def client_env(self, lake: str, mirror: str) -> dict:
        return self.env | {"SCHEDULER": self.cluster.address, "LAKE": lake, "MIRROR": mirror,
                           "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}

    def slow(self, **seconds: float) -> None:
        self.delays.write_text(json.dumps(seconds))


@pytest.fixture(scope="module")
def hosts(tmp_path_factory, worker_env, s3_endpoint):
    """The scheduler and two workers with private disks, started once for the module."""
    tmp = tmp_path_factory.mktemp("hosts")
    private_mounts(tmp)
    (tmp / "tmpdir").mkdir()
    (Path.home() / ".cache").mkdir(exist_ok=True)
    calls, delays = tmp / "calls.log", tmp / "delays.json"
    env = worker_env(calls=calls, delays=delays) | s3_environ(s3_endpoint) | {"TMPDIR": str(tmp / "tmpdir")}
    cluster = ExternalCluster(tmp, env, private=True)
    try:
        cluster.start()
        yield Hosts(cluster, env, calls, delays)
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def mock(tmp_path_factory) -> tuple[Path, dict[str, int]]:
    """Every table of the mock Extended Mission, small; rows per table."""
    root = tmp_path_factory.mktemp("mock")
    manifest = generate(str(root), scale=SCALE, seed=1, progress=False, reference=False)
    return root, {t: e["rows"] for t, e in manifest["tables"].items()}


@pytest.fixture(scope="module")
def mirror(s3, mock) -> str:
    """The mock's IRSA files on S3, as IRSA lays them out."""
    root, _ = mock
    for f in sorted((root / "irsa").rglob("*.gz")):
        s3.put_file(str(f), f"{BUCKET}/mirror/{f.relative_to(root)}")
    return f"s3://{BUCKET}/mirror"


@pytest.fixture(scope="module")
def local_table(mock, local_client, tmp_path_factory) -> Path:
    """The single table built on the local cluster from local files: what the cluster must equal."""
    root, _ = mock
    out = tmp_path_factory.mktemp("local") / TABLE
    build_table(table_arguments(load_schema(TABLE), expand_inputs([str(root / "irsa" / TABLE)]), str(out),
                                progress=False), local_client)
    return out


@pytest.fixture(scope="module")
def local_lake(mock, local_client, tmp_path_factory) -> Path:
    root, _ = mock
    out = tmp_path_factory.mktemp("local") / "lake"
    build_lake(LakeArguments(pipelines=tuple(load_pipelines("all")), input_roots=(str(root),),
                             output=str(out), progress=False, report_plots=False, echo=lambda _line: None),
               local_client)
    return out


def test_each_worker_has_private_temporary_and_cache_directories(hosts, tmp_path):
    def leave_files() -> dict:
        import os
        import tempfile

        mine = {"tmp": os.path.join(tempfile.gettempdir(), f"w{os.getpid()}"),
                "cache": os.path.join(os.path.expanduser("~/.cache"), f"w{os.getpid()}")}
        for path in mine.values():
            with open(path, "w") as f:
                f.write("private")
        return mine | {"seen": sorted(os.listdir(tempfile.gettempdir()))}

    with Client(hosts.cluster.address) as client:
        left = client.run(leave_files)
    assert len(left) == 2
    for files in left.values():
        assert not Path(files["tmp"]).exists() and not Path(files["cache"]).exists()  # not on the client
    a, b = left.values()
    assert Path(a["tmp"]).name not in b["seen"] and Path(b["tmp"]).name not in a["seen"]


def table_rows(mock_rows: dict, report: dict) -> None:
    """Exact accounting: every line of the table's files read, and written or quarantined."""
    assert report["lines_read"] == mock_rows[report["table"]]
    assert report["lines_read"] == report["rows_written"] + report["rows_quarantined"]


def test_single_table_on_hosts_sharing_no_disk_equals_a_local_build(hosts, s3, mock, mirror, local_table):
    before = task_calls(hosts.calls)
    hosts.run(COMMANDS["table"], lake=f"s3://{BUCKET}/single", mirror=mirror)
    out = f"{BUCKET}/single/{TABLE}"
    s3.invalidate_cache()
    report = json.loads(s3.cat(f"{out}/build_report.json"))
    table_rows(mock[1], report)
    assert report["partitions"] > 4
    assert lake_data(s3, out) == local_lake_data(local_table)
    after = task_calls(hosts.calls)  # every task ran out there, on the workers
    assert after["map"] - before["map"] == len(report["inputs"])
    assert after["reduce"] - before["reduce"] == report["partitions"]
    assert not s3.exists(f"{out}/_build") and not s3.exists(f"{out}/_build.lock")


def test_whole_lake_of_every_family_with_scratch_on_s3_equals_a_local_build(hosts, s3, mock, mirror,
                                                                             local_lake):
    lake = f"s3://{BUCKET}/cloud"
    hosts.run(COMMANDS["lake"], lake=lake, mirror=mirror)
    s3.invalidate_cache()
    manifest = json.loads(s3.cat(f"{BUCKET}/cloud/lake/manifest.json"))
    local = json.loads((local_lake / "manifest.json").read_text())
    every = sorted(n for p in load_pipelines("all") for n in p.names)
    assert sorted(manifest["tables"]) == sorted(local["tables"])
    assert sorted(manifest["skipped"]) == sorted(local["skipped"])  # no rows at this scale
    assert sorted([*manifest["tables"], *manifest["skipped"]]) == every
    for name, entry in manifest["tables"].items():
        assert entry["rows"] == local["tables"][name]["rows"], name
        if entry["type"] not in DERIVED_TYPES:  # rows of inputs: every one in the lake or quarantined
            assert entry["rows"] + entry["rows_quarantined"] == mock[1][name], name
    remote = lake_data(s3, f"{BUCKET}/cloud/lake", DATA)
    assert remote == local_lake_data(local_lake, DATA)
    assert {k.split("/", 1)[0] for k in remote} == set(manifest["tables"])  # every table has data files
    assert any("_index/" in k for k in remote) and any("arcsec/" in k for k in remote)
    assert not s3.glob(f"{BUCKET}/cloud/scratch/**")  # the scratch on S3 is gone
    assert s3.exists(f"{BUCKET}/cloud/lake/report/report.txt")

    info = hosts.run(COMMANDS["info"], lake=lake, mirror=mirror).stdout
    assert f"{len(manifest['tables'])} tables" in info
    verify = hosts.run(COMMANDS["verify"], lake=lake, mirror=mirror).stdout
    assert f"{len(manifest['tables'])}/{len(manifest['tables'])} tables verified" in verify


def test_a_build_whose_client_was_killed_resumes_on_the_cluster(hosts, s3, mock, mirror, local_table):
    """The client SIGKILLed once partitions are written; the README's ``--resume`` command takes over
    its lock and its plan on S3, redoes no finished partition, and ends identical."""
    lake, out = f"s3://{BUCKET}/resumed", f"{BUCKET}/resumed/{TABLE}"
    hosts.slow(reduce=0.5)
    first = subprocess.Popen(["bash", "-c", COMMANDS["table"]], env=hosts.client_env(lake, mirror),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)

    def reduced() -> list[str]:
        s3.invalidate_cache()
        return s3.glob(f"{out}/_build/plan/reduce/*.json")

    try:
        wait_for(lambda: len(reduced()) >= 2 or first.poll() is not None, 300, "written partitions")
    finally:
        kill_tree(first)
        hosts.slow()
    done = len(reduced())
    assert first.returncode == -9 and done >= 2, first.stderr.read().decode()
    assert s3.exists(f"{out}/_build.lock")  # left by the killed client
    before = task_calls(hosts.calls)
    hosts.run(COMMANDS["resume"], lake=lake, mirror=mirror)
    s3.invalidate_cache()
    report = json.loads(s3.cat(f"{out}/build_report.json"))
    table_rows(mock[1], report)
    assert lake_data(s3, out) == local_lake_data(local_table)
    resumed = task_calls(hosts.calls)["reduce"] - before["reduce"]
    assert resumed <= report["partitions"] - done  # finished partitions were not redone


def test_a_worker_killed_during_reduce_still_gives_the_identical_table(hosts, s3, mock, mirror, local_table):
    """SIGKILL one of the two workers (nanny and all) inside a reduce task: Dask reruns its tasks on
    the other, which reads the spill runs on S3. (Last: the module's cluster keeps one worker.)"""
    lake, out = f"s3://{BUCKET}/killed", f"{BUCKET}/killed/{TABLE}"
    hosts.slow(reduce=1.0)
    start = task_calls(hosts.calls)["reduce"]
    build = subprocess.Popen(["bash", "-c", COMMANDS["table"]], env=hosts.client_env(lake, mirror),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # both workers are inside their second (one-second) reduce task: the kill interrupts one
        wait_for(lambda: task_calls(hosts.calls)["reduce"] - start >= 3 or build.poll() is not None, 300,
                 "the second round of reduces")
        hosts.cluster.kill_worker(0)
        hosts.slow()
        _, stderr = build.communicate(timeout=600)
    finally:
        hosts.slow()
        if build.poll() is None:
            build.kill()
            build.wait()
    assert build.returncode == 0, stderr
    with Client(hosts.cluster.address) as client:
        assert len(client.scheduler_info()["workers"]) == 1
    s3.invalidate_cache()
    report = json.loads(s3.cat(f"{out}/build_report.json"))
    table_rows(mock[1], report)
    assert lake_data(s3, out) == local_lake_data(local_table)
