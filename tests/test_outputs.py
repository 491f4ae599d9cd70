"""No command removes or overwrites what it did not create: ``demo`` refuses a directory holding
anything it did not write, ``mock``, ``crossmatch``, ``lightcurves`` and ``inspect --write-schema``
refuse an existing output unless ``--overwrite``, and with it replace the whole output (never a
mix of two); single-file outputs are written atomically."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_cli

from tmass_lake.demo import clear_previous_demo
from tmass_lake.errors import UserError
from tmass_lake.mock import generate
from tmass_lake.storage import OUTPUT_MARK, OutputExistsError, claim_output, filesystem


def refused(result, *words: str) -> str:
    """The one ``tmass-lake: error:`` line of a refused command (exit 2, no traceback)."""
    assert result.returncode == 2, result.text
    assert "Traceback" not in result.text
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tmass-lake: error: "), result.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def test_demo_refuses_a_directory_it_did_not_create_and_leaves_it_untouched(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    result = run_cli("demo", str(out), "--scale", "0.001")
    refused(result, str(out), "not written by tmass-lake demo")
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]
    assert (out / "thesis.tex").read_text() == "years of work"


def test_demo_replaces_only_its_own_previous_output(tmp_path):
    out = tmp_path / "demo"
    clear_previous_demo(out)  # a fresh directory, marked as the demo's
    assert (out / OUTPUT_MARK).is_file()
    (out / "mock").mkdir()
    (out / "mock" / "old.gz").write_bytes(b"old")
    (out / "lightcurve_7.png").write_bytes(b"png")
    clear_previous_demo(out)  # a previous demo's entries go
    assert sorted(p.name for p in out.iterdir()) == [OUTPUT_MARK]
    (out / "mock").mkdir()
    (out / "notes.txt").write_text("mine")  # something the demo never writes, in its directory
    with pytest.raises(UserError, match="notes.txt, which the demo did not write"):
        clear_previous_demo(out)
    assert (out / "mock").is_dir() and (out / "notes.txt").read_text() == "mine"
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        clear_previous_demo(tmp_path / "file")


def test_demo_help_says_what_it_refuses():
    result = run_cli("demo", "--help")
    assert result.returncode == 0
    assert "did not write" in " ".join(result.stdout.split())


def test_claim_output_refuses_and_replaces_only_what_tmass_lake_wrote(tmp_path):
    fs, _ = filesystem(str(tmp_path))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "data.txt").write_text("keep")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        claim_output(fs, str(foreign), overwrite=False, command="crossmatch", directory=True)
    with pytest.raises(OutputExistsError, match="not written by tmass-lake"):
        claim_output(fs, str(foreign), overwrite=True, command="crossmatch", directory=True)
    assert (foreign / "data.txt").read_text() == "keep"
    ours = tmp_path / "ours"
    claim_output(fs, str(ours), overwrite=False, command="crossmatch", directory=True)
    (ours / "part-00000.parquet").write_bytes(b"old")
    claim_output(fs, str(ours), overwrite=True, command="crossmatch", directory=True, check_only=True)
    assert (ours / "part-00000.parquet").exists()  # a check removes nothing
    claim_output(fs, str(ours), overwrite=True, command="crossmatch", directory=True)
    assert sorted(p.name for p in ours.iterdir()) == [OUTPUT_MARK]
    single = tmp_path / "x.parquet"
    single.write_bytes(b"old")
    with pytest.raises(OutputExistsError, match="already exists"):
        claim_output(fs, str(single), overwrite=False, command="crossmatch", directory=False)
    with pytest.raises(OutputExistsError, match="is a file"):
        claim_output(fs, str(single), overwrite=True, command="crossmatch", directory=True)
    claim_output(fs, str(single), overwrite=True, command="crossmatch", directory=False)
    assert single.read_bytes() == b"old"  # a file is left for the writer to replace atomically


def mock_tables(root: Path) -> dict[str, list[str]]:
    return {d.name: sorted(p.name for p in d.iterdir()) for d in sorted((root / "irsa").iterdir())}


def test_mock_into_an_existing_mock_is_refused_and_overwrite_replaces_it_whole(tmp_path):
    out = tmp_path / "mock"
    first = run_cli("mock", str(out), "--scale", "0.01", "--seed", "1", "--tables", "pt_src_c", "pt_src_6x2",
                    "--workers", "1")
    assert first.returncode == 0, first.text
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    again = ["mock", str(out), "--scale", "0.01", "--seed", "2", "--tables", "pt_src_c", "--workers", "1"]
    second = run_cli(*again)
    refused(second, str(out), "already exists", "--overwrite")
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before
    third = run_cli(*again, "--overwrite")
    assert third.returncode == 0, third.text
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 2 and list(manifest["tables"]) == ["pt_src_c"]
    assert list(mock_tables(out)) == ["pt_src_c"]  # nothing of the first mock is left beside it


def test_mock_overwrite_never_removes_a_directory_it_did_not_write(tmp_path):
    out = tmp_path / "papers"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    result = run_cli("mock", str(out), "--scale", "0.01", "--tables", "pt_src_c", "--workers", "1",
                     "--overwrite")
    refused(result, "not written by tmass-lake")
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]


def test_mock_overwrite_replaces_a_mock_written_before_outputs_were_marked(tmp_path):
    out = tmp_path / "mock"
    generate(str(out), scale=0.01, seed=1, tables=["pt_src_c"], workers=1, progress=False, reference=False)
    (out / OUTPUT_MARK).unlink()  # as a mock of an earlier version left it: manifest, no mark
    generate(str(out), scale=0.01, seed=2, tables=["pt_src_c"], workers=1, progress=False, reference=False,
             overwrite=True)
    assert json.loads((out / "manifest.json").read_text())["seed"] == 2


def test_inspect_write_schema_refuses_its_own_input_and_an_existing_file(tmp_path, tiny_inputs):
    data = tmp_path / "in.gz"
    data.write_bytes(tiny_inputs[0].read_bytes())
    original = data.read_bytes()
    result = run_cli("inspect", str(data), "--table", "pt_src_6x2", "--sample", "50", "--write-schema",
                     str(data), "--overwrite")
    refused(result, "one of the inputs")
    assert data.read_bytes() == original
    yaml_out = tmp_path / "proposed.yaml"
    yaml_out.write_text("# my edited schema\n")
    result = run_cli("inspect", str(data), "--table", "pt_src_6x2", "--sample", "50", "--write-schema",
                     str(yaml_out))
    refused(result, "already exists", "--overwrite")
    assert yaml_out.read_text() == "# my edited schema\n"
    result = run_cli("inspect", str(data), "--table", "pt_src_6x2", "--sample", "50", "--write-schema",
                     str(yaml_out), "--overwrite")
    assert result.returncode == 0, result.text
    assert "layout proposed by tmass-lake inspect" in yaml_out.read_text()
    assert not list(tmp_path.glob("*.tmp-*"))


@pytest.mark.parametrize("command", ["crossmatch", "lightcurves"])
def test_an_existing_query_output_is_refused_before_any_work(command, tmp_path):
    out = tmp_path / "result.parquet"
    out.write_bytes(b"a result that took an hour")
    args = (["crossmatch", "--table", "pt_src_6x2", "--with", "gaia_dr3"] if command == "crossmatch"
            else ["lightcurves"])
    result = run_cli(*args, "--lake", str(tmp_path / "no-lake"), "--output", str(out))
    refused(result, str(out), "already exists", "--overwrite")
    assert out.read_bytes() == b"a result that took an hour"


@pytest.mark.slow
def test_crossmatch_and_lightcurves_outputs_are_replaced_only_with_overwrite(env, tmp_path):
    gaia = str(env.reference("gaia_dr3"))
    for fmt_out in (tmp_path / "x.parquet", tmp_path / "x_hats", tmp_path / "x_parts"):
        extra = ["--format", "parquet"] if fmt_out.name == "x_parts" else []
        argv = ["crossmatch", "--lake", str(env.lake), "--table", "pt_src_c", "--with", gaia, "--radius", "1",
                "--columns", "cntr", "jdate", "--workers", "1", "--output", str(fmt_out), *extra]
        assert run_cli(*argv).returncode == 0
        refused(run_cli(*argv, "--radius", "0.1"), "already exists")
        again = run_cli(*argv, "--overwrite")
        assert again.returncode == 0, again.text
        if fmt_out.is_dir():
            assert (fmt_out / OUTPUT_MARK).is_file()
        assert not list(tmp_path.rglob("*.tmp-*"))
    assert len(pd.read_parquet(tmp_path / "x.parquet")) == len(pd.read_parquet(tmp_path / "x_parts"))
    lc = tmp_path / "lc"
    argv = ["lightcurves", "--lake", str(env.lake), "--product", "calibration", "--output", str(lc),
            "--workers", "1", "--cone", "0", "0", "36000"]
    assert run_cli(*argv).returncode == 0
    first = len(pd.read_parquet(lc))
    refused(run_cli(*argv), "already exists")
    assert run_cli(*argv, "--overwrite").returncode == 0
    assert len(pd.read_parquet(lc)) == first
