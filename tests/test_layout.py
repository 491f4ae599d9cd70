"""Layout from the source, documentation from the schema: projections of a table (a Gator IPAC query
of fp_psc with 20 of its 60 columns, a VOTable with 10) read and build with the shipped schema, the
absent columns listed in the drift report, ``--strict-layout`` refusing them; only the positions
(and a key an index needs) are required; the light-curve build's ``ngrp`` check on the mock.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.io.votable import from_table, writeto
from astropy.table import Table
from conftest import as_text, bulk_lines, masked_column, normalise

from tmass_lake.cli import main
from tmass_lake.convert import build_table, resolve_parameters, table_arguments
from tmass_lake.convert.lightcurves import check_built_columns, check_ngrp
from tmass_lake.convert.manifest import format_drift
from tmass_lake.convert.pipelines import load_pipeline
from tmass_lake.errors import BuildError, InputError
from tmass_lake.lake.lightcurves import POINT_COLUMNS, product_tables
from tmass_lake.mock import generate
from tmass_lake.readers import read_bulk, read_input, unify
from tmass_lake.schema import load_schema

PSC = load_schema("fp_psc")
GATOR = ["pts_key", "ra", "decl", "err_maj", "err_min", "err_ang", "designation", "j_m", "j_cmsig", "h_m",
         "h_cmsig", "k_m", "k_cmsig", "ph_qual", "rd_flg", "cc_flg", "xdate", "scan", "glon", "glat"]
"""20 of fp_psc's 60 columns under Gator's names (``decl``, ``xdate``), in a query's own order."""
COMPUTED = {"clon": None, "dist": "arcsec", "j_h": "mag"}
"""Gator's computed columns a query adds, with their units."""


def psc_text(n: int, seed: int = 5) -> tuple[pa.Table, list[list[str]]]:
    """``n`` synthetic fp_psc rows as the bulk reader types them, and each line's text fields."""
    lines = bulk_lines(PSC, n, seed=seed)
    path_rows = [line.decode().rstrip("\n").split("|") for line in lines]
    blocks = list(read_bulk_bytes(b"".join(lines)))
    return pa.concat_tables(b.table for b in blocks), path_rows


def read_bulk_bytes(data: bytes):
    from tmass_lake.readers.bulk import parse_block

    yield parse_block("synthetic", data, 1, PSC)


def gator_table(typed: pa.Table, names: list[str]) -> Table:
    """The rows as a Gator query result: the ``names`` columns (Gator's names), computed ones after."""
    known = PSC.lookup()
    cols = {}
    for name in names:
        column = known[name.lower()]
        cols[name] = masked_column(typed.column(column.name))
    out = Table(cols)
    n = len(out)
    out["clon"] = [f"{v:.4f}h" for v in typed.column("ra").to_numpy() / 15.0]
    out["dist"] = np.round(np.arange(n) * 0.01, 3)
    out["j_h"] = np.round(np.arange(n) * 0.001, 3)
    for name, unit in COMPUTED.items():
        if unit:
            out[name].unit = unit
    return out


def assert_values_equal_text(table: pa.Table, text: list[list[str]], names: list[str]) -> None:
    """Every value of the documented ``names`` in ``table`` prints back as its text (rows found by
    their position's text)."""
    ra, dec = PSC.column("ra"), PSC.column("dec")
    i, j = PSC.names.index("ra"), PSC.names.index("dec")
    by_key = {(normalise(f[i], ra), normalise(f[j], dec)): f for f in text}
    rows = table.to_pylist()
    assert len(rows) == len(text) == len(by_key)
    known = PSC.lookup()
    for row in rows:
        fields = by_key[as_text(row["ra"], ra), as_text(row["dec"], dec)]
        for name in names:
            column = known[name.lower()]
            value = row[column.name]
            if column.arrow == "date32" and value is not None:
                value = value.isoformat()
            want = normalise(fields[PSC.names.index(column.name)], column)
            assert as_text(value, column) == want, (row["pts_key"], column.name)


# -- reading (unmarked: fast) --------------------------------------------------------------------

def test_gator_ipac_projection_reads_with_the_shipped_schema(tmp_path):
    typed, text = psc_text(50)
    path = tmp_path / "gator.tbl"
    gator_table(typed, GATOR).write(path, format="ascii.ipac")
    blocks = list(read_input(str(path), PSC))
    table = pa.concat_tables(b.table for b in blocks)
    assert [x for b in blocks for x in b.bad] == []
    documented = [n for n in PSC.names if n in {PSC.lookup()[g].name for g in GATOR}]
    assert table.column_names == [*documented, *COMPUTED]  # schema order, then the query's own
    assert len(documented) == 20 and table.schema.field("date").type == pa.date32()
    assert_values_equal_text(table, text, GATOR)
    layout = blocks[0].layout
    assert set(layout.missing) == set(PSC.names) - set(documented) and len(layout.missing) == 40
    assert layout.matched["date"] == "xdate" and layout.matched["dec"] == "decl"
    assert {c.name: c.unit for c in layout.extra} == COMPUTED
    schema, drift = unify(PSC, [(str(path), layout)])
    assert schema.names == table.column_names and drift["absent"] == list(layout.missing)
    assert drift["layout"] == ["ipac header"] and drift["missing"] == []
    line = format_drift(drift)
    assert line.startswith("layout from ipac header; 20 matched (dec from decl, date from xdate)")
    assert "3 input-only: clon, dist [arcsec], j_h [mag]; 40 documented but absent: " in line
    with pytest.raises(BuildError, match=r"fp_psc: .*--strict-layout.*absent: .*prox.*not in the schema: "
                                         r"clon, dist, j_h"):
        unify(PSC, [(str(path), layout)], strict=True)


def test_votable_projection_of_ten_columns(tmp_path):
    typed, text = psc_text(30, seed=8)
    names = ["ra", "decl", "pts_key", "j_m", "h_m", "k_m", "xdate", "ph_qual", "designation", "scan"]
    part = gator_table(typed, names)
    part.remove_columns(list(COMPUTED))
    path = tmp_path / "tap.xml"
    writeto(from_table(part), str(path))
    blocks = list(read_input(str(path), PSC))
    table = pa.concat_tables(b.table for b in blocks)
    assert table.num_columns == 10 and "prox" not in table.column_names
    assert_values_equal_text(table, text, names)
    assert len(blocks[0].layout.missing) == 50 and blocks[0].layout.extra == ()


def test_only_what_the_build_needs_is_required(tmp_path):
    typed, _ = psc_text(10)
    for gone, said in (("ra", "ra"), ("decl", r"dec \(or decl\)")):
        part = gator_table(typed, [n for n in GATOR if n != gone])
        path = tmp_path / f"no_{gone}.tbl"
        part.write(path, format="ascii.ipac")
        with pytest.raises(InputError, match=rf"no_{gone}.tbl: has no column {said}: fp_psc needs it"):
            list(read_input(str(path), PSC))
    # a table without positions: nothing is required
    link = load_schema("cf_link")
    pq.write_table(pa.table({"cntr": [1, 2], "gcntr": [5, 6]}), tmp_path / "link.parquet")
    block = next(read_input(str(tmp_path / "link.parquet"), link))
    assert block.table.column_names == ["gcntr", "cntr"] and block.layout.missing == ("ngrp",)


def test_bulk_files_take_the_schemas_layout_and_say_so():
    schema, drift = unify(PSC, [("psc_aaa.gz", None), ("psc_aab.gz", None)])
    assert schema is PSC and drift["absent"] == [] and drift["matched"] == PSC.names
    assert format_drift(drift) == f"layout from schema file {PSC.path} (bulk files, by position)"


def test_files_of_one_table_with_different_projections_unify(tmp_path):
    """A documented column only some files have is nullable, null in the others' rows; one no file
    has is absent."""
    typed, _ = psc_text(20)
    paths = []
    for i, names in enumerate((GATOR, [n for n in GATOR if n != "glon"])):
        paths.append(tmp_path / f"q{i}.tbl")
        gator_table(typed.slice(i * 10, 10), names).write(paths[-1], format="ascii.ipac")
    layouts = [(str(p), next(read_input(str(p), PSC)).layout) for p in paths]
    schema, drift = unify(PSC, layouts)
    assert drift["missing"] == [{"name": "glon", "files": 1}] and schema.column("glon").nullable
    assert "prox" in drift["absent"] and "prox" not in schema.names


# -- builds (slow: the session's cluster) ---------------------------------------------------------

def build(client, inputs, out: Path, **params) -> dict:
    params.setdefault("pixel_threshold", 500)
    indexes = params.pop("indexes", ())
    args = table_arguments(PSC, [str(p) for p in inputs], str(out), params=resolve_parameters(params),
                           progress=False, indexes=indexes)
    return build_table(args, client)


@pytest.mark.slow
def test_gator_projection_builds_exactly_and_strict_layout_refuses_it(local_client, tmp_path, capsys):
    typed, text = psc_text(800, seed=12)
    path = tmp_path / "gator.tbl"
    gator_table(typed, GATOR).write(path, format="ascii.ipac")
    report = build(local_client, [path], tmp_path / "out")
    files = sorted((tmp_path / "out" / "fp_psc" / "dataset").glob("Norder=*/Dir=*/Npix=*.parquet"))
    built = pa.concat_tables(pq.read_table(f) for f in files)
    assert report["rows_written"] == 800 and report["rows_quarantined"] == 0
    documented = [n for n in PSC.names if n in {PSC.lookup()[g].name for g in GATOR}]
    assert built.column_names == ["_healpix_29", *documented, *COMPUTED]
    assert_values_equal_text(built, text, GATOR)
    described = pq.read_schema(tmp_path / "out" / "fp_psc" / "dataset" / "_common_metadata")
    assert described.field("dist").metadata[b"unit"] == b"arcsec"
    assert described.field("date").metadata[b"description"] == PSC.column("date").description.encode()
    drift = report["columns"]
    assert drift["absent"] == [n for n in PSC.names if n not in documented]
    assert drift["aliases"] == {"dec": "decl", "date": "xdate"}

    with pytest.raises(BuildError, match=r"documented column\(s\) absent: .*prox"):
        build(local_client, [path], tmp_path / "strict", strict_layout=True)
    assert main(["build", "--table", "fp_psc", "--input", str(path), "--output", str(tmp_path / "cli"),
                 "--strict-layout", "--quiet", "--scheduler", local_client.scheduler.address]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tmass-lake: error: fp_psc: ") and "prox" in err and "clon" in err

    part = gator_table(typed, [n for n in GATOR if n != "pts_key"])
    part.write(tmp_path / "no_key.tbl", format="ascii.ipac")
    with pytest.raises(BuildError, match=r"fp_psc: no input has column\(s\) pts_key, which its index"):
        build(local_client, [tmp_path / "no_key.tbl"], tmp_path / "nokey", indexes=["pts_key"])


@pytest.mark.slow
def test_ngrp_check_passes_on_the_mock_and_names_a_removed_link(local_client, tmp_path):
    generate(str(tmp_path / "mock"), scale=0.05, seed=4, tables=["cf_link"], reference=False, progress=False)
    link = load_schema("cf_link")
    files = []
    for i, p in enumerate(sorted((tmp_path / "mock" / "irsa" / "cf_link").glob("*.gz"))):
        table = pa.concat_tables(b.table for b in read_bulk(str(p), link))
        files.append(str(tmp_path / f"part-{i}.parquet"))
        pq.write_table(table, files[-1])
    whole = pa.concat_tables(pq.read_table(f) for f in files)
    assert whole.column("ngrp").null_count == 0 and pa.compute.max(whole.column("ngrp")).as_py() >= 2
    quarantine = str(tmp_path / "quarantine.parquet")  # a lake lists its quarantine among its files
    pq.write_table(pa.table({"file": ["x"], "line": [1], "reason": ["r"], "text": ["t"]}), quarantine)
    result = check_ngrp("cf_link", [*files, quarantine], {}, "cntr")
    assert result == {"checked": len(set(whole.column("cntr").to_pylist())), "differences": 0}

    first = pq.read_table(files[0])
    multi = np.flatnonzero(first.column("ngrp").to_numpy() >= 2)
    drop = int(multi[0])
    cntr = first.column("cntr")[drop].as_py()
    keep = np.ones(first.num_rows, bool)
    keep[drop] = False
    pq.write_table(first.filter(pa.array(keep)), files[0])
    with pytest.raises(BuildError, match=rf"cf_link: cntr {cntr} is in \d+ group\(s\) but its ngrp is \d+"):
        check_ngrp("cf_link", files, {}, "cntr")
    pq.write_table(whole.drop_columns(["ngrp"]), files[0])
    assert check_ngrp("cf_link", files[:1], {}, "cntr") == {"checked": False}
    pq.write_table(whole.drop_columns(["cntr"]), files[0])
    with pytest.raises(BuildError, match="cf_link has no column cntr: the light curves need its link keys"):
        check_ngrp("cf_link", files[:1], {}, "cntr")


def test_light_curves_nest_what_a_projection_has_and_need_only_their_keys():
    tables = product_tables("calibration", "point")

    def lake(det: list[str], info: list[str]) -> SimpleNamespace:
        entry = {tables.detections: det, tables.info: info}
        return SimpleNamespace(url="LAKE", manifest={"tables": {
            t: {"schema": {"columns": [{"name": c} for c in cols]}} for t, cols in entry.items()}})

    det = [c for c in load_schema("pt_src_c").names if c not in ("err_ang", "bl_flg")]
    nested, sources = check_built_columns("cf_lightcurves", lake(det, ["gcntr", "ra", "dec"]), tables)
    assert nested == [c for c in POINT_COLUMNS if c not in ("err_ang", "bl_flg")]
    assert sources == ["gcntr", "ra", "dec"]  # no napp in this projection
    for gone in ("jdate", "gcntr", "cntr"):
        with pytest.raises(BuildError, match=rf"cf_lightcurves: pt_src_c in LAKE has no column {gone}: the"):
            check_built_columns("cf_lightcurves", lake([c for c in det if c != gone], ["gcntr"]), tables)
    with pytest.raises(BuildError, match=r"cf_info in LAKE has no column gcntr"):
        check_built_columns("cf_lightcurves", lake(det, ["ra", "dec"]), tables)
    full = SimpleNamespace(url="LAKE", manifest={})
    assert check_built_columns("cf_lightcurves", full, tables)[0] == POINT_COLUMNS


def test_strict_layout_per_table_in_a_pipeline(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('[pipeline]\nname = "p"\n[[table]]\nname = "fp_psc"\ninput = "q/*.tbl"\n'
                    'strict_layout = true\n[[table]]\nname = "fp_xsc"\ninput = "x/*.tbl"\n')
    specs = {t.name: t for t in load_pipeline(path).tables}
    assert specs["fp_psc"].params.strict_layout and not specs["fp_xsc"].params.strict_layout


def test_mock_link_rows_carry_ngrp(tmp_path):
    generate(str(tmp_path / "mock"), scale=0.01, seed=2, tables=["cf_link"], reference=False, progress=False)
    link = load_schema("cf_link")
    paths = sorted((tmp_path / "mock" / "irsa" / "cf_link").glob("*.gz"))
    table = pa.concat_tables(b.table for p in paths for b in read_bulk(str(p), link))
    counts = {}
    for c in table.column("cntr").to_pylist():
        counts[c] = counts.get(c, 0) + 1
    assert table.column("ngrp").to_pylist() == [counts[c] for c in table.column("cntr").to_pylist()]
    assert len(gzip.decompress(paths[0].read_bytes()).splitlines()[0].split(b"|")) == 3
    assert json.dumps(link.column("ngrp").source).count("seca6_3c") == 1
