"""Nothing half-served: only finished tables are opened, manifests stay inside their lake, caches
follow the store, ``--rebuild`` carries what derives from a table, ``--resume`` redoes a lost partition."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import hats
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import BUCKET, make_args, run_cli
from hats.pixel_math import HealpixPixel

from tmass_lake.convert import LakeArguments, build_lake, build_table, load_pipelines
from tmass_lake.convert import collection as collection_module
from tmass_lake.convert import derive as derive_module
from tmass_lake.convert.manifest import read_manifest
from tmass_lake.convert.verify import verify_lake
from tmass_lake.convert.writer import pixel_file, upath
from tmass_lake.errors import UserError
from tmass_lake.lake import ManifestError, NotALakeError, UnfinishedTableError, open_lake
from tmass_lake.mock import generate
from tmass_lake.schema import load_schema
from tmass_lake.storage import join

PIPELINE = """[pipeline]
name = "six"
description = "6x point sources, their merged sources and links, the 6x catalog, light curves"

[defaults]
input = "irsa/{table}/*.gz"
pixel_threshold = THRESHOLD

[[table]]
name = "pt_src_6x2"
indexes = ["cntr", "gcntr"]
PT_PARAMETERS

[[table]]
name = "sixxf_info"
indexes = ["gcntr"]

[[table]]
name = "sixxf_link"

[[derived]]
name = "pt_src_6x2_cat"
source = "pt_src_6x2"
where = "irsa_default"
indexes = ["cntr"]
"""
TABLES = ["pt_src_6x2", "sixxf_info", "sixxf_link"]
NOT_FINISHED = "build not finished — `--resume` or rebuild"


def pipeline(where: Path, threshold: int, pt_threshold: int | None = None) -> tuple:
    """The pipeline with ``threshold`` for every table (``pt_threshold`` for pt_src_6x2 alone)."""
    path = where / f"six_{threshold}_{pt_threshold}.toml"
    pt = f"pixel_threshold = {pt_threshold}" if pt_threshold else ""
    path.write_text(PIPELINE.replace("THRESHOLD", str(threshold)).replace("PT_PARAMETERS", pt))
    return tuple(load_pipelines(str(path)))


def build(client, root: Path, out: Path | str, threshold: int, *, pt_threshold: int | None = None,
          rebuild: tuple[str, ...] = (), pipelines_dir: Path | None = None,
          storage_options: dict | None = None) -> list[str]:
    """Build the pipeline into ``out``; the lines it printed."""
    lines: list[str] = []
    pipelines = pipeline(pipelines_dir or Path(out).parent, threshold, pt_threshold)
    build_lake(LakeArguments(pipelines=pipelines, input_roots=(str(root),), output=str(out),
                             storage_options=storage_options or {}, rebuild=rebuild, progress=False,
                             report_plots=False, echo=lines.append), client)
    return lines


@pytest.fixture(scope="module")
def mock_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mock")
    generate(str(root), scale=0.02, seed=3, tables=TABLES, progress=False, reference=False,
             rows_per_file=1000)
    return root


@pytest.fixture(scope="module")
def six_lake(mock_root, tmp_path_factory, local_client) -> Path:
    out = tmp_path_factory.mktemp("six") / "lake"
    build(local_client, mock_root, out, 250)
    return out


def copy_of(lake: Path, tmp_path: Path) -> Path:
    out = tmp_path / "lake"
    shutil.copytree(lake, out, symlinks=True)
    return out


# --- a directory that is not a lake; a manifest leading outside it (no build needed) -------------------

@pytest.mark.parametrize("content", ["empty", "files"])
def test_a_directory_that_is_not_a_lake_is_an_error(content, tmp_path):
    if content == "files":
        (tmp_path / "thesis.tex").write_text("\\documentclass{article}")
        (tmp_path / "data").mkdir()
        (tmp_path / "data" / "x.parquet").write_bytes(b"PAR1")
    with pytest.raises(NotALakeError, match="is not a tmass-lake lake"):
        open_lake(str(tmp_path))
    with pytest.raises(NotALakeError, match="no such directory"):
        open_lake(str(tmp_path / "missing"))
    result = run_cli("lightcurves", "--lake", str(tmp_path), "--output", str(tmp_path / "out.parquet"))
    assert result.returncode == 2 and "is not a tmass-lake lake" in result.stderr, result.text
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "out.parquet").exists()


@pytest.mark.parametrize("tables", [{"etc": {"path": "../../../etc"}}, ["../../../../etc"],
                                    {"etc": {"path": "/etc"}}, {"etc": {"path": "file:///etc"}}])
def test_a_manifest_path_leading_outside_the_lake_is_refused(tables, tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"tables": tables}))
    with pytest.raises(ManifestError, match=r"manifest\.json: table '.*etc' has path .*outside the lake"):
        open_lake(str(tmp_path))
    if isinstance(tables, dict):
        with pytest.raises(UserError, match=r"manifest\.json: table 'etc' has path .*outside the lake"):
            read_manifest(str(tmp_path))
        result = run_cli("verify", str(tmp_path))
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.text
        assert lines[0].startswith("tmass-lake: error: ") and "manifest.json: table 'etc'" in lines[0]
        assert "Traceback" not in result.text and not result.stdout


# --- only finished tables are served ------------------------------------------------------------------

@pytest.mark.slow
def test_an_unfinished_table_is_reported_and_never_served(six_lake, tmp_path):
    lake = copy_of(six_lake, tmp_path)
    full = open_lake(str(lake))
    assert {"pt_src_6x2", "sixxf_link", "pt_src_6x2_cat", "sixxf_lightcurves"} <= set(full.tables)
    assert full.unfinished == {}
    # a build killed during reduce: some partitions written, no properties
    (lake / "pt_src_6x2" / "collection.properties").unlink()
    (lake / "pt_src_6x2" / "pt_src_6x2" / "hats.properties").unlink()
    (lake / "sixxf_link" / "table.properties").unlink()  # a Parquet table killed before its end
    opened = open_lake(str(lake))
    assert "pt_src_6x2" not in opened.tables and "sixxf_link" not in opened.tables
    assert "pt_src_6x2" not in opened and "sixxf_link" not in opened
    assert opened.unfinished == {"pt_src_6x2": NOT_FINISHED, "sixxf_link": NOT_FINISHED}
    assert "sixxf_info" in opened.tables
    for name in ("pt_src_6x2", "sixxf_link"):
        with pytest.raises(UnfinishedTableError, match=rf"^{name}: {NOT_FINISHED}$"):
            opened[name]
    with pytest.raises(UnfinishedTableError):
        opened.entry("pt_src_6x2")
    # the CLI on top: one line, exit 2
    result = run_cli("lightcurves", "--lake", str(lake), "--product", "6x", "--join",
                     "--output", str(tmp_path / "out.parquet"))
    assert result.returncode == 2 and "pt_src_6x2: build not finished" in result.stderr, result.text
    assert "Traceback" not in result.text
    info = run_cli("info", str(lake))
    assert info.returncode == 0 and f"pt_src_6x2: {NOT_FINISHED}" in info.stdout, info.text
    checks = {c.table: c.problems for c in verify_lake(str(lake))}
    assert checks["pt_src_6x2"] == [NOT_FINISHED] and checks["sixxf_link"] == [NOT_FINISHED]
    assert checks["sixxf_info"] == []


@pytest.mark.slow
def test_a_killed_single_table_output_is_not_served(six_lake, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(six_lake / "pt_src_6x2", out)  # what `build --table pt_src_6x2 --output OUT` writes
    assert "pt_src_6x2" in open_lake(str(out)).tables
    for written_last in out.rglob("*.properties"):  # killed during reduce: partitions, no properties
        written_last.unlink()
    killed = open_lake(str(out))
    assert killed.tables == [] and killed.unfinished == {"pt_src_6x2": NOT_FINISHED}
    with pytest.raises(UnfinishedTableError, match="pt_src_6x2: build not finished"):
        killed["pt_src_6x2"].compute()


@pytest.mark.slow
def test_a_manifest_entry_not_built_is_not_served(six_lake, tmp_path):
    lake = copy_of(six_lake, tmp_path)
    manifest = json.loads((lake / "manifest.json").read_text())
    manifest["tables"]["sixxf_info"]["status"] = "building"
    (lake / "manifest.json").write_text(json.dumps(manifest))
    opened = open_lake(str(lake))
    assert "sixxf_info" not in opened.tables and opened.unfinished["sixxf_info"] == NOT_FINISHED


# --- caches keyed by what is on the store -------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_rebuild_at_the_same_url_on_long_lived_workers(where, mock_root, tmp_path, local_client, request):
    """Build, delete, build again with other parameters on the session's workers: the second build
    (its light curves read the detections on the workers) and on-the-fly light curves succeed."""
    so: dict = {}
    out = str(tmp_path / "lake")
    if where == "s3":
        so, s3 = request.getfixturevalue("so"), request.getfixturevalue("s3")
        out = f"s3://{BUCKET}/rebuild-{tmp_path.name}/lake"
    sizes = []
    for threshold in (250, 90):
        if where == "s3":
            if s3.exists(out):
                s3.rm(out, recursive=True)
        else:
            shutil.rmtree(out, ignore_errors=True)
        build(local_client, mock_root, out, threshold, pipelines_dir=tmp_path, storage_options=so)
        assert all(not c.problems for c in verify_lake(out, so))
        detections = hats.read_hats(upath(join(out, "pt_src_6x2"), so)).main_catalog
        sizes.append(len(detections.get_healpix_pixels()))
        if where == "local":  # and the lake API's joins on the same workers
            lake = open_lake(out)
            stored = lake.light_curves("6x").compute(progress_bar=False)
            joined = lake.light_curves("6x", links="detections").compute(progress_bar=False)
            assert len(stored) == len(joined) == lake.open("sixxf_info").hc_structure.catalog_info.total_rows
    assert sizes[0] != sizes[1]  # other partitions at the same URLs


# --- --rebuild carries what derives from a table; verify checks it -----------------------------------

@pytest.mark.slow
def test_rebuild_rebuilds_what_derives_from_the_table(six_lake, mock_root, tmp_path, local_client):
    lake = copy_of(six_lake, tmp_path)
    before = json.loads((lake / "manifest.json").read_text())["tables"]
    lines = build(local_client, mock_root, lake, 250, pt_threshold=120, rebuild=("pt_src_6x2",))
    text = "\n".join(lines)
    assert "pt_src_6x2: rebuilding" in text
    assert "pt_src_6x2_cat: rebuilding (pt_src_6x2 rebuilt)" in text
    assert "sixxf_lightcurves: rebuilding" in text
    manifest = json.loads((lake / "manifest.json").read_text())["tables"]
    new = manifest["pt_src_6x2"]["build_id"]
    assert new != before["pt_src_6x2"]["build_id"]
    assert manifest["pt_src_6x2_cat"]["sources"] == {"pt_src_6x2": new}
    assert manifest["sixxf_lightcurves"]["sources"]["pt_src_6x2"] == new
    assert manifest["pt_src_6x2"]["parameters"]["pixel_threshold"] == 120
    assert all(not c.problems for c in verify_lake(str(lake))), verify_lake(str(lake))


@pytest.mark.slow
def test_verify_finds_a_derived_table_made_from_another_build(six_lake, tmp_path):
    lake = copy_of(six_lake, tmp_path)
    path = lake / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["tables"]["pt_src_6x2"]["build_id"] = "0" * 32  # the source rebuilt, the catalog left stale
    path.write_text(json.dumps(manifest))
    checks = {c.table: c.problems for c in verify_lake(str(lake))}
    assert checks["pt_src_6x2"] == []
    assert any("made from build" in p and "stale" in p for p in checks["pt_src_6x2_cat"]), checks
    assert any("stale" in p for p in checks["sixxf_lightcurves"]), checks
    result = run_cli("verify", str(lake))
    assert result.returncode == 1 and "pt_src_6x2_cat     FAILED" in result.stdout, result.text


# --- --resume after a lost partition file --------------------------------------------------------------

@pytest.mark.slow
def test_resume_redoes_a_lost_partition_and_names_it(mock_root, tmp_path, local_client, monkeypatch, caplog):
    schema = load_schema("pt_src_6x2")
    inputs = sorted((mock_root / "irsa" / "pt_src_6x2").glob("*.gz"))
    out = tmp_path / "out"

    def killed(*_args, **_kwargs):
        raise KeyboardInterrupt("killed after reduce")

    with monkeypatch.context() as m:  # the build stops after every partition was written and recorded
        m.setattr(collection_module, "finish_catalog", killed)
        with pytest.raises(KeyboardInterrupt):
            build_table(make_args(schema, inputs, str(out), pixel_threshold=250), local_client)
    records = sorted((out / "_build" / "plan" / "reduce").glob("*.json"))
    assert len(records) > 2
    rec = json.loads(records[1].read_text())
    lost = Path(pixel_file(str(out / "pt_src_6x2"), HealpixPixel(rec["order"], rec["pixel"])))
    lost.unlink()
    with caplog.at_level(logging.WARNING):
        report = build_table(make_args(schema, inputs, str(out), pixel_threshold=250, resume=True),
                             local_client)
    assert any(str(lost) in r.getMessage() and "gone" in r.getMessage() for r in caplog.records), caplog.text
    assert lost.exists()
    assert report["rows_written"] + report["rows_quarantined"] == report["lines_read"]
    rows = open_lake(str(out)).open("pt_src_6x2").hc_structure.catalog_info.total_rows
    assert rows == report["rows_written"]


@pytest.mark.slow
def test_resume_redoes_a_lost_derived_partition(six_lake, mock_root, tmp_path, local_client, monkeypatch,
                                                caplog):
    lake = copy_of(six_lake, tmp_path)
    shutil.rmtree(lake / "pt_src_6x2_cat")
    (lake / "_lake" / "tables" / "pt_src_6x2_cat.json").unlink()

    def killed(*_args, **_kwargs):
        raise KeyboardInterrupt("killed after the partitions")

    with monkeypatch.context() as m:
        m.setattr(derive_module, "finish_catalog", killed)
        with pytest.raises(KeyboardInterrupt):
            build(local_client, mock_root, lake, 250)
    records = sorted(lake.glob("**/plan/derive/*.json"))
    rec = next(json.loads(r.read_text()) for r in records if json.loads(r.read_text())["rows"])
    catalog = str(lake / "pt_src_6x2_cat" / "pt_src_6x2_cat")
    lost = Path(pixel_file(catalog, HealpixPixel(rec["order"], rec["pixel"])))
    lost.unlink()
    lines: list[str] = []
    with caplog.at_level(logging.WARNING):
        build_lake(LakeArguments(pipelines=pipeline(lake.parent, 250), input_roots=(str(mock_root),),
                                 output=str(lake), resume=True, progress=False, report_plots=False,
                                 echo=lines.append), local_client)
    assert any(str(lost) in r.getMessage() for r in caplog.records), caplog.text
    assert lost.exists()
    assert all(not c.problems for c in verify_lake(str(lake)))


@pytest.mark.slow
def test_a_parquet_table_serves_its_dataset_not_its_quarantine(six_lake, tmp_path):
    lake = copy_of(six_lake, tmp_path)
    rows = json.loads((lake / "manifest.json").read_text())["tables"]["sixxf_link"]["rows"]
    (lake / "sixxf_link" / "quarantine").mkdir(exist_ok=True)
    bad = pa.table({"gcntr": pa.array([1], pa.int64()), "cntr": pa.array([2], pa.int64())})
    pq.write_table(bad, lake / "sixxf_link" / "quarantine" / "sixxf_link_aaa.parquet")
    opened = open_lake(str(lake))
    assert all("/dataset/" in f for f in opened.parquet_files("sixxf_link"))
    assert len(opened["sixxf_link"]) == rows
