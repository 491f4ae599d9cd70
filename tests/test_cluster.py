"""Existing cluster: builds on a ``dask scheduler`` and ``dask worker`` processes of their own (as a
cluster made by dask-jobqueue, dask-kubernetes or Coiled would be), identical to a local build,
and still identical when a worker dies mid-build."""

from __future__ import annotations

import json
import mmap
import subprocess
from pathlib import Path

import pytest
from conftest import ExternalCluster, build_cli, local_lake_data, make_args, task_calls, wait_for
from dask.distributed import Client
from hats.io.validation import is_valid_collection

from tmass_lake.convert.map import map_input

pytestmark = pytest.mark.slow  # builds a lake (or a cluster) of its own


@pytest.fixture
def external_cluster(tmp_path, worker_env):
    """Start-and-stop factory: ``external_cluster(**worker_env_kwargs)``; always torn down."""
    started: list[ExternalCluster] = []

    def start(**env_kwargs) -> ExternalCluster:
        d = tmp_path / f"cluster{len(started)}"
        d.mkdir()
        cluster = ExternalCluster(d, worker_env(**env_kwargs))
        started.append(cluster)
        return cluster.start()

    yield start
    for cluster in started:
        cluster.stop()


def test_cli_build_on_an_existing_cluster_equals_local_build(external_cluster, tiny_inputs, reference_lake,
                                                               tmp_path):
    calls = tmp_path / "calls.log"
    cluster = external_cluster(calls=calls)
    out = tmp_path / "lake"
    proc = subprocess.run(build_cli(tiny_inputs, str(out), "--scheduler", cluster.address),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert is_valid_collection(str(out), strict=True, verbose=False)
    assert local_lake_data(out) == local_lake_data(reference_lake)
    report = json.loads((out / "build_report.json").read_text())
    assert task_calls(calls) == {"map": len(tiny_inputs), "reduce": report["partitions"]}  # ran out there
    assert not (out / "_build").exists()


def test_build_survives_losing_a_worker(external_cluster, tiny_inputs, reference_lake, tmp_path):
    """SIGKILL one of two workers (nanny and all) while it runs a map task: Dask runs it elsewhere."""
    calls = tmp_path / "calls.log"
    cluster = external_cluster(calls=calls, map_delay=1.0)
    out = tmp_path / "lake"
    build = subprocess.Popen(build_cli(tiny_inputs, str(out), "--scheduler", cluster.address),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: list((out / "_build" / "plan" / "map").glob("*.json")), 60, "a map marker")
        # both workers are inside their second (one-second) map task: the kill interrupts one
        wait_for(lambda: task_calls(calls)["map"] == len(tiny_inputs), 60, "the second round of maps")
        assert not (out / "collection.properties").exists()
        cluster.kill_worker(0)
        stdout, stderr = build.communicate(timeout=300)
    finally:
        if build.poll() is None:
            build.kill()
            build.wait()
    assert build.returncode == 0, stderr
    # the interrupted task ran again elsewhere (and Dask may recompute finished maps whose
    # results lived on the dead worker: their spill runs are rewritten atomically)
    assert task_calls(calls)["map"] > len(tiny_inputs)
    with Client(cluster.address) as client:
        assert len(client.scheduler_info()["workers"]) == 1
    assert is_valid_collection(str(out), strict=True, verbose=False)
    assert local_lake_data(out) == local_lake_data(reference_lake)


def test_rerun_map_task_replaces_its_spill_runs_atomically(pt_schema, tiny_inputs, tmp_path):
    """After a worker loss Dask may rerun a finished map task (its result lived on the dead worker)
    while reducers memory-map its runs: the rerun must rename a new file over the old one, never
    truncate what a reader has mapped."""
    args = make_args(pt_schema, tiny_inputs, str(tmp_path / "lake"))
    path = Path(map_input(args, 0).runs[0].url)
    before = path.read_bytes()
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        inode = path.stat().st_ino
        rerun = map_input(args, 0)
        assert rerun.runs[0].url == str(path)
        assert path.stat().st_ino != inode  # a new file took the name
        assert mapped[:] == before  # the reader's view is intact
    assert path.read_bytes() == before
    assert not list(path.parent.glob("*.tmp-*"))
