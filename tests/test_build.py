"""Conversion engine: mock IRSA files to HATS, checked by hats, hats-import, lsdb and the input text."""

from __future__ import annotations

import gzip
import io
import json
import shutil
from pathlib import Path

import lsdb
import numpy as np
import pyarrow.parquet as pq
import pytest
from astropy.coordinates import Latitude, Longitude
from astropy.io import votable
from cdshealpix.nested import lonlat_to_healpix
from conftest import as_text, normalise
from hats.io.validation import is_valid_catalog, is_valid_collection

from tmass_lake.convert import build_table, resolve_parameters, table_arguments
from tmass_lake.convert.writer import VOPARQUET_CONTENT
from tmass_lake.errors import BuildError
from tmass_lake.mock import generate
from tmass_lake.readers import expand_inputs
from tmass_lake.schema import load_schema

TABLES = ["pt_src_6x2", "ext_src_6x2", "pt_src_c"]


@pytest.fixture(scope="module")
def mock_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mock")
    generate(str(root), scale=0.02, seed=7, tables=TABLES, progress=False, reference=False)
    return root


def build(client, table: str, inputs: list[str], out: Path, resume: bool = False, **params) -> dict:
    args = table_arguments(load_schema(table), inputs, str(out), params=resolve_parameters(params),
                           resume=resume, progress=False)
    return build_table(args, client)


def text_rows(paths: list[str]) -> list[list[str]]:
    rows = []
    for p in paths:
        with gzip.open(p, "rt") as f:
            rows.extend(line.rstrip("\n").split("|") for line in f)
    return rows


@pytest.mark.parametrize("table", TABLES)
def test_build_is_valid_hats_and_equals_the_text(local_client, mock_root, tmp_path, table):
    from hats_import.verification.arguments import VerificationArguments
    from hats_import.verification.run_verification import run as verify

    inputs = expand_inputs([str(mock_root / "irsa" / table)])
    out = tmp_path / table
    report = build(local_client, table, inputs, out, pixel_threshold=3_000)
    schema = load_schema(table)
    rows = text_rows(inputs)
    assert report["lines_read"] == len(rows) == report["rows_written"] + report["rows_quarantined"]
    assert report["rows_quarantined"] == 0
    assert report["partitions"] > 1

    catalog_dir = out / table
    assert is_valid_catalog(str(catalog_dir), strict=True)
    assert is_valid_collection(str(out), strict=True)
    verifier = verify(VerificationArguments(input_catalog_path=str(out), output_path=str(tmp_path / "v"),
                                            truth_total_rows=len(rows), verbose=False))
    assert verifier.all_tests_passed, verifier.results_df

    frame = lsdb.open_catalog(str(out), columns="all").compute()  # not only hats_cols_default
    assert len(frame) == len(rows)
    key = schema.key_column
    by_key = {int(r[schema.names.index(key)]): r for r in rows}
    assert len(by_key) == len(rows)
    records = frame.reset_index(drop=True).to_dict("records")
    for rec in records:
        text = by_key[rec[key]]
        for column, field in zip(schema.columns, text, strict=True):
            value = rec[column.name]
            value = None if value is None or (isinstance(value, float) and np.isnan(value)) else value
            if column.arrow == "date32" and value is not None:
                value = value.isoformat() if hasattr(value, "isoformat") else str(value)[:10]
            assert as_text(value, column) == normalise(field, column), (column.name, rec[key])

    part = next((catalog_dir / "dataset").rglob("Npix=*.parquet"))
    fields = pq.read_schema(part)  # a data file: types, and units/UCDs in its compact VOParquet
    ra = votable.parse(io.BytesIO(fields.metadata[VOPARQUET_CONTENT.encode()])).get_first_table() \
        .get_field_by_id_or_name("ra")
    assert str(ra.unit) == "deg" and ra.ucd.startswith("pos.eq.ra")
    common = pq.read_schema(catalog_dir / "dataset" / "_common_metadata")  # and the full metadata
    assert common.field("ra").metadata[b"unit"] == b"deg"
    assert common.field("ra").metadata[b"ucd"].startswith(b"pos.eq.ra")
    assert fields.names[0] == "_healpix_29"
    props = (catalog_dir / "hats.properties").read_text()
    assert "obs_title=" in props and "hats_builder=tmass-lake" in props


def test_build_is_deterministic(local_client, mock_root, tmp_path):
    inputs = expand_inputs([str(mock_root / "irsa" / "pt_src_6x2")])
    build(local_client, "pt_src_6x2", inputs, tmp_path / "a", pixel_threshold=3_000)
    build(local_client, "pt_src_6x2", inputs, tmp_path / "b", pixel_threshold=3_000)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("Npix=*.parquet"))
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("Npix=*.parquet"))
    assert files_a == files_b
    for rel in files_a:
        assert pq.read_table(tmp_path / "a" / rel).equals(pq.read_table(tmp_path / "b" / rel))


def test_bad_lines_are_quarantined_and_accounted(local_client, mock_root, tmp_path):
    src = expand_inputs([str(mock_root / "irsa" / "pt_src_6x2")])[0]
    with gzip.open(src, "rt") as f:
        lines = f.read().splitlines()
    lines[10] = lines[10] + "|extra"
    lines[20] = lines[20].replace("|", "|x", 1)
    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    report = build(local_client, "pt_src_6x2", [str(bad)], tmp_path / "out", pixel_threshold=3_000)
    assert report["lines_read"] == len(lines)
    assert report["rows_quarantined"] == 2
    assert report["rows_written"] == len(lines) - 2
    q = pq.read_table(report["inputs"][0]["quarantine"]).to_pylist()
    assert [(r["file"], r["line"]) for r in q] == [(str(bad), 11), (str(bad), 21)]


def test_existing_output_is_not_overwritten(local_client, mock_root, tmp_path):
    inputs = expand_inputs([str(mock_root / "irsa" / "pt_src_6x2")])
    build(local_client, "pt_src_6x2", inputs, tmp_path / "x")
    with pytest.raises(BuildError, match="is not empty .*: it is a finished build; choose a new output"):
        build(local_client, "pt_src_6x2", inputs, tmp_path / "x")
    before = json.loads((tmp_path / "x" / "build_report.json").read_text())
    again = build(local_client, "pt_src_6x2", inputs, tmp_path / "x", resume=True)  # idempotent
    assert again.pop("already_complete") and again == before
    with pytest.raises(BuildError, match="is a finished build: there is nothing to resume"):
        build(local_client, "pt_src_6x2", inputs, tmp_path / "x", resume=True, pixel_threshold=1234)
    (tmp_path / "y").mkdir()
    (tmp_path / "y" / "notes.txt").write_text("mine")
    with pytest.raises(BuildError, match="not empty .*notes.txt.*pass --resume to continue an interrupted"):
        build(local_client, "pt_src_6x2", inputs, tmp_path / "y")
    assert (tmp_path / "y" / "notes.txt").read_text() == "mine"
    shutil.rmtree(tmp_path / "x")


def test_every_positional_table_has_a_margin_catalog_even_an_empty_one(local_client, mock_root, tmp_path):
    """A table in one partition has no rows near another partition: its margin catalog is empty,
    but it exists, is valid HATS and lsdb loads it (``catalog.margin`` is never None)."""
    schema = load_schema("pt_src_6x2")
    rows = text_rows(expand_inputs([str(mock_root / "irsa" / "pt_src_6x2")]))
    ra, dec = (np.array([float(r[schema.names.index(c)]) for r in rows]) for c in ("ra", "dec"))
    top = lonlat_to_healpix(Longitude(ra, unit="deg"), Latitude(dec, unit="deg"), 0)
    keep = top == np.bincount(top).argmax()  # the rows of one order-0 pixel: one partition
    path = tmp_path / "one.gz"
    text = "".join("|".join(r) + "\n" for r, k in zip(rows, keep, strict=True) if k)
    path.write_bytes(gzip.compress(text.encode()))
    out = tmp_path / "one"
    report = build(local_client, "pt_src_6x2", [str(path)], out, pixel_threshold=10_000_000)
    assert report["partitions"] == 1 and report["margin_rows"] == 0
    assert report["margin"] == "pt_src_6x2_10arcsec"
    assert is_valid_collection(str(out), strict=True)
    cat = lsdb.open_catalog(str(out))
    assert cat.margin is not None and len(cat.margin.get_healpix_pixels()) == 0
    assert len(cat.margin.compute()) == 0
    assert len(cat.cone_search(*cat.compute()[["ra", "dec"]].iloc[0], radius_arcsec=5).compute()) >= 1
