"""Resume: a build SIGKILLed mid-way (process group: the CLI and its local workers) and rerun
with ``--resume`` redoes no finished step and ends identical to an uninterrupted build."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
from conftest import build_cli, kill_tree, local_lake_data, make_args, task_calls, wait_for
from hats.io.validation import is_valid_collection

from tmass_lake.convert import build_table
from tmass_lake.convert.map import map_input, map_inputs
from tmass_lake.convert.resume import ResumePlan
from tmass_lake.convert.scratch import Scratch
from tmass_lake.convert.table import fingerprint
from tmass_lake.errors import BuildError


def partition_files(out: Path) -> dict[tuple[int, int], list[Path]]:
    """Partition (order, pixel) -> its main and margin files."""
    found: dict[tuple[int, int], list[Path]] = {}
    for f in out.glob("*/dataset/Norder=*/Dir=*/Npix=*.parquet"):
        order = int(f.parent.parent.name.split("=")[1])
        pixel = int(f.stem.split("=")[1])
        found.setdefault((order, pixel), []).append(f)
    return found


def markers(out: Path, stage: str) -> list[Path]:
    return sorted((out / "_build" / "plan" / stage).glob("*.json"))


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["map", "reduce"])
def test_killed_build_resumes_without_redoing_finished_work(stage, pt_schema, tiny_inputs, reference_lake,
                                                            worker_env, local_client, tmp_path):
    out = tmp_path / "lake"
    first, second = tmp_path / "calls-1.log", tmp_path / "calls-2.log"
    slow = {"map_delay": 0.5} if stage == "map" else {"reduce_delay": 0.2}
    build = subprocess.Popen(build_cli(tiny_inputs, str(out), "--workers", "2"),
                             env=worker_env(first, **slow), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, start_new_session=True)
    try:
        wait_for(lambda: markers(out, stage) or build.poll() is not None, 120, f"a {stage} marker")
    finally:
        kill_tree(build)
    assert build.returncode == -signal.SIGKILL, build.stderr.read().decode()
    assert not (out / "collection.properties").exists()
    assert not is_valid_collection(str(out), verbose=False)

    maps_done = len(markers(out, "map"))
    reduced = {(int(p.stem.split("_")[0]), int(p.stem.split("_")[1])) for p in markers(out, "reduce")}
    files = partition_files(out)
    kept = {f: (f.stat().st_ino, f.stat().st_mtime_ns) for key in reduced for f in files[key]}
    if stage == "map":
        assert 1 <= maps_done < len(tiny_inputs) and not reduced
    else:
        assert maps_done == len(tiny_inputs) and reduced and kept

    if stage == "reduce":  # a plain rerun will not overwrite partitions already written
        with pytest.raises(BuildError, match="--resume"):
            build_table(make_args(pt_schema, tiny_inputs, str(out)), local_client)

    resumed = subprocess.run(build_cli(tiny_inputs, str(out), "--workers", "2", "--resume"),
                             env=worker_env(second), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads((out / "build_report.json").read_text())
    assert task_calls(second) == {"map": len(tiny_inputs) - maps_done,
                                  "reduce": report["partitions"] - len(reduced)}
    assert {f: (f.stat().st_ino, f.stat().st_mtime_ns) for f in kept} == kept  # untouched
    assert report["lines_read"] == report["rows_written"] == 16_000
    assert is_valid_collection(str(out), strict=True, verbose=False)
    assert local_lake_data(out) == local_lake_data(reference_lake)
    assert not list(out.rglob("*.tmp-*")) and not (out / "_build").exists()


def test_resume_clears_temporaries_of_a_killed_writer(pt_schema, tiny_inputs, reference_lake, local_client,
                                                      tmp_path):
    """A writer killed before its rename leaves ``Npix=….parquet.tmp-…`` next to the partition; hats'
    metadata scan reads every file under ``dataset/``, so the resumed build must remove it."""
    out = tmp_path / "lake"
    ref = next(reference_lake.glob("*/dataset/Norder=*/Dir=*/Npix=*.parquet"))
    stale = out / ref.relative_to(reference_lake).with_name(ref.name + ".tmp-0123456789abcdef")
    stale.parent.mkdir(parents=True)
    stale.write_bytes(ref.read_bytes()[:1000])  # half-written
    build_table(make_args(pt_schema, tiny_inputs, str(out), resume=True), local_client)
    assert not stale.exists()
    assert is_valid_collection(str(out), strict=True, verbose=False)
    assert local_lake_data(out) == local_lake_data(reference_lake)


def plan_of(args) -> ResumePlan:
    return ResumePlan(args.path("plan"), fingerprint(args), resume=args.resume)


def test_resume_with_other_arguments_is_refused(pt_schema, tiny_inputs, tmp_path):
    out = str(tmp_path / "lake")
    plan_of(make_args(pt_schema, tiny_inputs, out))
    plan_of(make_args(pt_schema, tiny_inputs, out, resume=True))  # same arguments: fine
    for changed, what in (({"pixel_threshold": 999}, "parameters"), ({"inputs": tiny_inputs[:3]}, "inputs"),
                          ({"margin_arcsec": 5.0}, "parameters")):
        kw = {"inputs": tiny_inputs} | changed
        with pytest.raises(BuildError, match=f"cannot resume .* other {what}"):
            plan_of(make_args(pt_schema, kw.pop("inputs"), out, resume=True, **kw))


def test_scratch_of_another_output_is_refused(pt_schema, tiny_inputs, tmp_path):
    """Two outputs given one --tmp-dir get a subdirectory each; a space claimed by another output
    (or holding files no build made) is never used, let alone removed."""
    a = make_args(pt_schema, tiny_inputs, str(tmp_path / "a"), tmp_dir=str(tmp_path / "tmp"))
    b = make_args(pt_schema, tiny_inputs, str(tmp_path / "b"), tmp_dir=str(tmp_path / "tmp"))
    assert a.scratch != b.scratch and a.scratch.startswith(str(tmp_path / "tmp"))
    Scratch(a.scratch, a.output).claim()
    with pytest.raises(BuildError, match="belongs to the build of"):
        Scratch(a.scratch, b.output).claim()
    with pytest.raises(BuildError, match="refusing to remove"):
        Scratch(a.scratch, b.output).remove()
    foreign = tmp_path / "foreign"
    (foreign / "keep").mkdir(parents=True)
    with pytest.raises(BuildError, match="no tmass-lake build made"):
        Scratch(str(foreign), a.output).claim()
    assert (foreign / "keep").exists()


def test_resume_maps_again_an_input_whose_spill_runs_are_gone(pt_schema, tiny_inputs, reference_lake,
                                                              local_client, tmp_path):
    out = tmp_path / "lake"
    args = make_args(pt_schema, tiny_inputs, str(out))
    Scratch(args.scratch, args.output).claim()
    plan = plan_of(args)
    results = [map_input(args, i) for i in range(2)]
    for res in results:
        plan.put("map", args.input_key(res.index), res.to_json())
    Path(results[1].runs[0].url).unlink()  # e.g. a tmp dir cleaned behind the build's back
    build_table(make_args(pt_schema, tiny_inputs, str(out), resume=True), local_client)
    assert local_lake_data(out) == local_lake_data(reference_lake)


def test_resume_refuses_an_input_changed_since_it_was_read(pt_schema, tiny_inputs, local_client, tmp_path):
    """A file shortened between the kill and the resume: its recorded parse is stale."""
    inputs = [tmp_path / f"in{i}.gz" for i in range(2)]
    for src, dst in zip(tiny_inputs, inputs, strict=False):
        dst.write_bytes(src.read_bytes())
    out = tmp_path / "lake"
    args = make_args(pt_schema, inputs, str(out))
    plan = plan_of(args)
    plan.put("map", args.input_key(0), map_input(args, 0).to_json())
    inputs[0].write_bytes(tiny_inputs[2].read_bytes()[:5000])
    resumed = make_args(pt_schema, inputs, str(out), resume=True)
    with pytest.raises(BuildError, match=f"{inputs[0]} changed since the interrupted build read it"):
        map_inputs(resumed, plan_of(resumed), local_client)
