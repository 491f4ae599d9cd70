"""Real inputs: IPAC, VOTable (TABLEDATA, BINARY2), headed CSV and Parquet written from mock rows
with astropy, matched to the schema by name and alias, unified across files with other headers,
built exactly, their drift reported; bad bytes, compression, detection and ``inspect``.

The end-to-end tests use the mock Extended Mission's rows (slow); the reader-level ones and the
small builds use synthetic rows.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import lzma
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.io.votable import from_table, writeto
from astropy.table import Table
from conftest import as_text, bulk_lines, masked_column, normalise

from tmass_lake.cli import main
from tmass_lake.convert import LakeArguments, build_lake, build_table, resolve_parameters, table_arguments
from tmass_lake.convert.manifest import read_manifest
from tmass_lake.convert.pipelines import load_pipeline
from tmass_lake.convert.verify import verify_lake
from tmass_lake.errors import InputError
from tmass_lake.mock import generate
from tmass_lake.readers import detect_format, parse_votable, read_bulk, read_input
from tmass_lake.readers.bulk import parse_block
from tmass_lake.schema import load_schema

TABLE = "pt_src_6x2"
SCHEMA = load_schema(TABLE)


@pytest.fixture(scope="module")
def mock(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mock")
    generate(str(root), scale=0.02, seed=11, tables=[TABLE], progress=False)
    return root


@pytest.fixture(scope="module")
def rows() -> tuple[pa.Table, list[bytes]]:
    """Synthetic rows (a valid value in every column) as the bulk reader types them, and their lines."""
    lines = bulk_lines(SCHEMA, 400, seed=3)
    return parse_block("synthetic", b"".join(lines), 1, SCHEMA).table, lines


@pytest.fixture(scope="module")
def source(mock) -> tuple[pa.Table, dict[int, list[str]], list[bytes]]:
    """The mock rows as the bulk reader types them, their text fields by cntr, and their lines."""
    paths = sorted((mock / "irsa" / TABLE).glob("*.gz"))
    table = pa.concat_tables(b.table for p in paths for b in read_bulk(str(p), SCHEMA))
    lines = [line for p in paths for line in gzip.decompress(p.read_bytes()).splitlines(keepends=True)]
    key = SCHEMA.names.index("cntr")
    text = {int(f[key]): f for f in (line.decode().rstrip("\n").split("|") for line in lines)}
    assert table.num_rows == len(text) == len(lines) > 400
    return table, text, lines


def astropy_table(t: pa.Table) -> Table:
    """An astropy table of typed rows: masked columns, dates as ISO text, units from the schema."""
    cols = {}
    for name in t.column_names:
        cols[name] = masked_column(t.column(name))
    out = Table(cols)
    for c in SCHEMA.columns:
        if c.name in out.colnames and c.unit:
            out[c.name].unit = c.unit
    return out


def write_votable(t: Table, path: Path, serialization: str) -> None:
    vt = from_table(t)
    vt.get_first_table().format = serialization
    writeto(vt, str(path))


# Four files of one table, each with its own header: aliases, extra and missing columns.
FILES = {
    "a_gator.tbl": {"rename": {"date": "xdate", "dec": "decl"}, "drop": ["j_psfchi"],
                    "extra": {"dist": "arcsec", "angle": "deg"}},
    "b_tap.xml": {"rename": {"date": "xdate"}, "drop": ["h_psfchi"],
                  "extra": {"dist": "arcsec", "src_note": None}},
    "c_tap_binary2.xml": {"rename": {}, "drop": [], "extra": {"dist": "arcsec"}},
    "d_export.csv": {"rename": {}, "drop": ["k_psfchi"], "extra": {"note": None}, "reverse": True},
}


def extra_values(name: str, n: int, first: int) -> np.ndarray | list[str]:
    i = np.arange(first, first + n)
    if name == "dist":
        return np.round(i * 0.013, 3)
    if name == "angle":
        return np.round((i * 7.5) % 360.0, 1)
    return [f"row {k}" for k in i]


def write_headed_inputs(source_table: pa.Table, root: Path) -> dict[str, tuple[int, int]]:
    """The rows split over the four FILES; returns each file's row range."""
    edges = np.linspace(0, source_table.num_rows, len(FILES) + 1).astype(int)
    ranges = {}
    root.mkdir(parents=True, exist_ok=True)
    for (name, spec), lo, hi in zip(FILES.items(), edges[:-1], edges[1:], strict=True):
        part = astropy_table(source_table.slice(lo, hi - lo))
        part.remove_columns(spec["drop"])
        for column, unit in spec["extra"].items():
            part[column] = extra_values(column, hi - lo, lo)
            if unit:
                part[column].unit = unit
            part[column].description = f"{column}, as the service describes it"
        for old, new in spec["rename"].items():
            part.rename_column(old, new)
        if spec.get("reverse"):
            part = part[part.colnames[::-1]]
        path = root / name
        if name.endswith(".tbl"):
            part.write(path, format="ascii.ipac")
        elif name.endswith(".csv"):
            part.write(path, format="ascii.csv")
        else:
            write_votable(part, path, "binary2" if "binary2" in name else "tabledata")
        ranges[name] = (int(lo), int(hi))
    return ranges


def read_lake_catalog(lake: Path, name: str) -> pa.Table:
    files = sorted((lake / name / name / "dataset").glob("Norder=*/Dir=*/Npix=*.parquet"))
    return pa.concat_tables(pq.read_table(f) for f in files)


def build(client, inputs, out: Path, schema=SCHEMA, **params) -> dict:
    params.setdefault("pixel_threshold", 500)
    args = table_arguments(schema, [str(p) for p in inputs], str(out), params=resolve_parameters(params),
                           progress=False)
    return build_table(args, client)


@pytest.mark.slow
def test_headed_inputs_build_exactly_with_their_drift_reported(local_client, source, tmp_path, capsys):
    table, text, _ = source
    ranges = write_headed_inputs(table, tmp_path / "inputs" / "real")
    pipeline = tmp_path / "real.toml"
    pipeline.write_text('[pipeline]\nname = "real"\n[defaults]\npixel_threshold = 500\n'
                        f'[[table]]\nname = "{TABLE}"\ninput = "real/*"\nindexes = ["cntr"]\n')
    lake = tmp_path / "lake"
    build_lake(LakeArguments(pipelines=(load_pipeline(pipeline),), input_roots=(str(tmp_path / "inputs"),),
                             output=str(lake), progress=False, report_plots=False, echo=lambda _l: None),
               local_client)

    built = read_lake_catalog(lake, TABLE)
    assert built.num_rows == table.num_rows
    assert built.column_names == ["_healpix_29", *SCHEMA.names, "dist", "angle", "src_note", "note"]
    rows = {r["cntr"]: r for r in built.to_pylist()}
    order = table.column("cntr").to_pylist()
    for name, (lo, hi) in ranges.items():
        spec = FILES[name]
        for i in range(lo, hi):
            row, fields = rows[order[i]], text[order[i]]
            for column, field in zip(SCHEMA.columns, fields, strict=True):
                value = row[column.name]
                if column.arrow == "date32" and value is not None:
                    value = value.isoformat()
                expected = "\\N" if column.name in spec["drop"] else normalise(field, column)
                assert as_text(value, column) == expected, (name, column.name, order[i])
            for column in ("dist", "angle", "src_note", "note"):
                want = extra_values(column, 1, i)[0] if column in spec["extra"] else None
                assert row[column] == want, (name, column, i)

    # the described schema (data files hold types and a compact VOParquet; the metadata is here)
    fields = pq.read_schema(lake / TABLE / TABLE / "dataset" / "_common_metadata")
    assert built.schema.field("dist").type == fields.field("dist").type
    assert fields.field("dist").metadata[b"unit"] == b"arcsec"
    assert fields.field("angle").metadata[b"unit"] == b"deg"
    assert fields.field("dist").metadata[b"provenance"] == b"input header"
    assert fields.field("dist").metadata[b"description"] == b"dist, as the service describes it"
    assert fields.field("dist").type == pa.float64() and fields.field("note").type == pa.string()
    assert fields.field("date").type == pa.date32()
    assert fields.field("dec").metadata[b"ucd"].startswith(b"pos.eq.dec")

    entry = read_manifest(str(lake))["tables"][TABLE]
    drift = entry["columns"]
    assert drift["files"] == 4 and drift["positional"] == 0
    assert drift["matched"] == SCHEMA.names
    assert drift["aliases"] == {"date": "xdate", "dec": "decl"}
    assert [(c["name"], c["unit"], c["files"]) for c in drift["input_only"]] == [
        ("dist", "arcsec", 3), ("angle", "deg", 1), ("src_note", None, 1), ("note", None, 1)]
    assert drift["missing"] == [{"name": n, "files": 1} for n in ("j_psfchi", "h_psfchi", "k_psfchi")]
    assert drift["absent"] == [] and drift["layout"] == ["csv header", "ipac header", "votable header"]
    assert {c["name"]: c["unit"] for c in entry["schema"]["columns"]}["dist"] == "arcsec"
    assert sorted(i["format"] for i in entry["inputs"]) == ["csv", "ipac", "votable", "votable"]

    assert main(["info", str(lake)]) == 0
    info = capsys.readouterr().out
    assert "62 matched (dec from decl, date from xdate)" in info
    assert "4 input-only: dist [arcsec], angle [deg], src_note, note; 0 documented but absent" in info
    assert ("3 missing in some inputs, null there: j_psfchi (1 file), h_psfchi (1 file), k_psfchi (1 file)"
            in info)
    assert "layout from csv header; ipac header; votable header; 62 matched" in info
    assert all(not c.problems for c in verify_lake(str(lake))), [c.problems for c in verify_lake(str(lake))]


def test_missing_required_column_is_an_error_naming_file_and_column(local_client, rows, tmp_path):
    """Only what the build needs is required: the positions; the key only where an index uses it."""
    table, _ = rows
    part = astropy_table(table.slice(0, 50))
    part.remove_column("ra")
    path = tmp_path / "no_ra.tbl"
    part.write(path, format="ascii.ipac")
    with pytest.raises(InputError, match=r"no_ra.tbl: has no column ra: pt_src_6x2 needs it"):
        build(local_client, [path], tmp_path / "out")
    part = astropy_table(table.slice(0, 50))
    part.remove_column("cntr")
    path = tmp_path / "no_key.tbl"
    part.write(path, format="ascii.ipac")
    report = build(local_client, [path], tmp_path / "projection")  # a projection without the key builds
    assert report["rows_written"] == 50 and "cntr" in report["columns"]["absent"]


def test_files_that_cannot_be_unified_are_named(local_client, rows, tmp_path):
    table, _ = rows
    paths = []
    for n, value in enumerate([np.arange(40) * 0.5, [f"x{k}" for k in range(40)]]):
        part = astropy_table(table.slice(n * 40, 40))
        part["dist"] = value
        paths.append(tmp_path / f"part{n}.csv")
        part.write(paths[-1], format="ascii.csv")
    with pytest.raises(InputError, match=r"part1.csv: column dist is string here but float64 in .*part0.csv"):
        build(local_client, paths, tmp_path / "out")


def test_parquet_and_astropy_tables_read_through_the_same_matching(rows, tmp_path):
    table, _ = rows
    part = table.slice(0, 30).rename_columns(["xdate" if n == "date" else n for n in table.column_names])
    pq.write_table(part, tmp_path / "export.parquet")
    blocks = list(read_input(str(tmp_path / "export.parquet"), SCHEMA))
    assert blocks[0].layout.format == "parquet" and blocks[0].layout.matched["date"] == "xdate"
    assert pa.concat_tables(b.table for b in blocks).equals(table.slice(0, 30))

    # What a TAP client holds: an astropy table (or the VOTable bytes), onto the schema.
    at = astropy_table(table.slice(0, 30))
    at.rename_column("dec", "decl")
    at["dist"] = np.arange(30) * 0.1
    at["dist"].unit = "arcsec"
    block = parse_votable(at, SCHEMA, path="tap:query")
    assert block.table.select(SCHEMA.names).equals(table.slice(0, 30))
    assert block.layout.matched["dec"] == "decl" and [c.unit for c in block.layout.extra] == ["arcsec"]
    buf = io.BytesIO()
    writeto(from_table(at), buf)
    again = parse_votable(buf.getvalue(), SCHEMA, path="tap:query")
    assert again.table.equals(block.table) and again.bad == []


def test_votable_cell_that_does_not_parse_quarantines_its_row(rows, tmp_path):
    table, _ = rows
    path = tmp_path / "tap.xml"
    write_votable(astropy_table(table.slice(0, 20)), path, "tabledata")
    xml = path.read_text()
    ra = f"{table.column('ra')[6].as_py()!r}"
    assert xml.count(f"<TD>{ra}</TD>") == 1
    path.write_text(xml.replace(f"<TD>{ra}</TD>", "<TD>abc</TD>"))
    blocks = list(read_input(str(path), SCHEMA))
    assert [(b.line, b.reason) for b in blocks[0].bad] == [(7, "column ra: cannot parse 'abc' as %10.6f")]
    assert blocks[0].table.num_rows == 19 and blocks[0].n_lines == 20


@pytest.mark.parametrize("fmt", ["bulk", "csv", "ipac"])
def test_a_latin1_byte_is_quarantined_with_its_line(rows, tmp_path, fmt):
    table, lines = rows
    part = table.slice(0, 30)
    if fmt == "bulk":
        data = b"".join(lines[:30])
        first = 1
    else:
        buf = io.StringIO()
        astropy_table(part).write(buf, format="ascii.csv" if fmt == "csv" else "ascii.ipac")
        data = buf.getvalue().encode()
        first = data.count(b"\n") - 30 + 1  # the line of row 1
    rows = data.split(b"\n")
    target = first - 1 + 7  # row 8
    rows[target] = rows[target].replace(b"A", b"\xe9", 1) if b"A" in rows[target] else rows[target] + b"\xe9"
    path = tmp_path / f"latin1.{fmt}.gz"
    path.write_bytes(gzip.compress(b"\n".join(rows)))
    blocks = list(read_input(str(path), SCHEMA))
    bad = [b for blk in blocks for b in blk.bad]
    assert [(b.file, b.line) for b in bad] == [(str(path), target + 1)]
    assert bad[0].reason.startswith("not valid UTF-8: byte 0xe9 at character")
    assert "\\xe9" in bad[0].text
    assert sum(b.table.num_rows for b in blocks) == 29


def test_latin1_line_quarantined_in_a_build(local_client, rows, tmp_path):
    _, lines = rows
    dirty = list(lines[:200])
    dirty[41] = dirty[41].replace(b"|A", b"|\xe9", 1) if b"|A" in dirty[41] else b"caf\xe9|" + dirty[41]
    path = tmp_path / "in" / "latin1.gz"
    path.parent.mkdir()
    path.write_bytes(gzip.compress(b"".join(dirty)))
    report = build(local_client, [path], tmp_path / "out")
    assert (report["lines_read"], report["rows_written"], report["rows_quarantined"]) == (200, 199, 1)
    q = pq.read_table(report["inputs"][0]["quarantine"]).to_pylist()
    assert [(r["file"], r["line"]) for r in q] == [(str(path), 42)] and "UTF-8" in q[0]["reason"]


@pytest.mark.parametrize("codec", ["bz2", "xz"])
def test_bzip2_and_xz_inputs_build(local_client, rows, tmp_path, codec):
    table, lines = rows
    compress = bz2.compress if codec == "bz2" else lzma.compress
    path = tmp_path / "in" / f"{TABLE}_aaa.{codec}"
    path.parent.mkdir()
    path.write_bytes(compress(b"".join(lines)))
    assert detect_format(str(path)).description.startswith(f"{codec}-compressed text without a header")
    report = build(local_client, [path], tmp_path / "out")
    assert (report["rows_written"], report["rows_quarantined"]) == (table.num_rows, 0)
    files = sorted((tmp_path / "out" / TABLE / "dataset").glob("Norder=*/Dir=*/Npix=*.parquet"))
    built = pa.concat_tables(pq.read_table(f) for f in files).drop_columns(["_healpix_29"])
    assert built.sort_by("cntr").equals(table.sort_by("cntr").cast(built.schema))


def complete_lines(data: bytes) -> int:
    """Whole lines a zlib decompressor gets out of a damaged gzip stream."""
    out = b""
    with contextlib.suppress(zlib.error):
        out = zlib.decompressobj(wbits=31).decompress(data)
    return out.count(b"\n")


def test_truncated_gzip_names_the_last_whole_line(rows, tmp_path):
    _, lines = rows
    whole = gzip.compress(b"".join(lines * 20), compresslevel=1)
    path = tmp_path / "truncated.gz"
    path.write_bytes(whole[: len(whole) * 2 // 3])
    reached = complete_lines(path.read_bytes())
    assert reached > 1000
    said = rf"truncated.gz: corrupt or truncated gzip stream after line {reached} \("
    with pytest.raises(InputError, match=said):
        list(read_input(str(path), SCHEMA, block_bytes=1 << 16))


def test_string_longer_than_its_documented_width_is_quarantined(rows, tmp_path):
    _, lines = rows
    fields = lines[3].decode().rstrip("\n").split("|")
    fields[SCHEMA.names.index("ph_qual")] = "AAAA"  # documented 3 characters
    path = tmp_path / "wide.psv"
    path.write_bytes(b"".join(lines[:3]) + ("|".join(fields) + "\n").encode() + b"".join(lines[4:10]))
    blocks = list(read_input(str(path), SCHEMA))
    bad = [b for blk in blocks for b in blk.bad]
    assert [(b.line, b.reason) for b in bad] == [
        (4, "column ph_qual: 'AAAA' is longer than its documented width (3, type %3s)")]


def test_formats_are_detected_and_a_wrong_one_is_named(rows, tmp_path):
    table, lines = rows
    part = astropy_table(table.slice(0, 5))
    part.write(tmp_path / "t.tbl", format="ascii.ipac")
    part.write(tmp_path / "t.csv", format="ascii.csv")
    write_votable(part, tmp_path / "t.xml", "binary2")
    pq.write_table(table.slice(0, 5), tmp_path / "t.parquet")
    (tmp_path / "t.psv.gz").write_bytes(gzip.compress(b"".join(lines[:5])))
    (tmp_path / "other.xml").write_text("<?xml version='1.0'?><html/>")
    found = {p: detect_format(str(tmp_path / p)).format
             for p in ("t.tbl", "t.csv", "t.xml", "t.parquet", "t.psv.gz", "other.xml")}
    assert found == {"t.tbl": "ipac", "t.csv": "csv", "t.xml": "votable", "t.parquet": "parquet",
                     "t.psv.gz": "bulk", "other.xml": None}
    with pytest.raises(InputError, match=r"t.tbl: was given as bulk but looks like an IPAC table"):
        list(read_input(str(tmp_path / "t.tbl"), SCHEMA, input_format="bulk"))
    with pytest.raises(InputError, match=r"t.psv.gz: was given as csv but looks like gzip-compressed text "
                                         r"without a header \(62 '\|'-separated fields on line 1\)"):
        list(read_input(str(tmp_path / "t.psv.gz"), SCHEMA, input_format="csv"))
    with pytest.raises(InputError, match=r"other.xml: looks like XML that is not a VOTable"):
        list(read_input(str(tmp_path / "other.xml"), SCHEMA))


@pytest.mark.slow
def test_inspect_proposes_a_schema_that_reads_a_reordered_extended_file(local_client, source, tmp_path,
                                                                        capsys):
    table, text, lines = source
    i, j = SCHEMA.names.index("ph_qual"), SCHEMA.names.index("j_m")  # text and magnitude swapped
    out = []
    for n, line in enumerate(lines):
        f = line.decode().rstrip("\n").split("|")
        f[i], f[j] = f[j], f[i]
        out.append("|".join([*f, str(n % 7), f"{n * 0.25:.2f}"]) + "\n")  # two new columns at the end
    path = tmp_path / "in" / "dump.gz"
    path.parent.mkdir()
    path.write_bytes(gzip.compress("".join(out).encode()))
    proposed = tmp_path / "pt_src_6x2_dump.yaml"
    assert main(["inspect", str(path), "--table", TABLE, "--write-schema", str(proposed)]) == 0
    report = capsys.readouterr().out
    assert "fields per line: 64" in report
    assert "60 of 64 positions line up; not found: j_m, ph_qual" in report
    assert "(j_m here by position: j_m is a number, values are string)" in report

    schema = load_schema(str(proposed))
    assert schema.layout_status == "inferred from dump.gz"
    expected = [*SCHEMA.names[:j], f"col_{j + 1}", *SCHEMA.names[j + 1:i], f"col_{i + 1}",
                *SCHEMA.names[i + 1:], "col_63", "col_64"]
    assert schema.names == expected
    assert schema.column(f"col_{i + 1}").arrow == "float32" and schema.column("col_63").arrow == "int16"
    assert (schema.ra_column, schema.dec_column, schema.key_column) == ("ra", "dec", "cntr")

    report = build(local_client, [path], tmp_path / "out", schema=schema)
    assert (report["rows_written"], report["rows_quarantined"]) == (len(lines), 0)
    files = sorted((tmp_path / "out" / TABLE / "dataset").glob("Norder=*/Dir=*/Npix=*.parquet"))
    built = pa.concat_tables(pq.read_table(f) for f in files).sort_by("cntr")
    src = table.sort_by("cntr")
    for name in SCHEMA.names:
        if name not in ("j_m", "ph_qual"):
            assert built.column(name).equals(src.column(name).cast(built.schema.field(name).type)), name
    keys = built.column("cntr").to_pylist()
    assert built.column(f"col_{j + 1}").to_pylist() == [text[k][i] for k in keys]  # ph_qual's text
    mags = [None if text[k][j] == "\\N" else float(np.float32(text[k][j])) for k in keys]
    assert built.column(f"col_{i + 1}").to_pylist() == mags
    assert sorted(built.column("col_63").to_pylist()) == sorted(n % 7 for n in range(len(lines)))


def test_link_table_files_with_other_headers_become_one_dataset(local_client, tmp_path):
    """A table without positions: each file is written as its input has it, then brought to the
    table's one schema, so the dataset has one schema and a valid _metadata."""
    schema = load_schema("sixxf_link")
    paths = []
    for n, extra in enumerate([None, "flag", None]):
        keys = np.arange(n * 100, n * 100 + 100)
        t = Table({"GCNTR": keys // 3, "cntr": keys})
        if extra:
            t[extra] = [f"f{k % 4}" for k in range(100)]
        paths.append(tmp_path / "in" / f"link_{n}.csv")
        paths[-1].parent.mkdir(exist_ok=True)
        t.write(paths[-1], format="ascii.csv")
    report = build(local_client, paths, tmp_path / "out", schema=schema)
    assert report["rows_written"] == 300 and report["columns"]["input_only"][0]["name"] == "flag"
    parts = sorted((tmp_path / "out" / "dataset").glob("part-*.parquet"))
    assert len({pq.read_schema(p).to_string() for p in parts}) == 1
    data = pq.read_table(tmp_path / "out" / "dataset")
    assert data.column_names == ["gcntr", "cntr", "flag"]
    assert sorted(data.column("cntr").to_pylist()) == list(range(300))
    assert data.column("flag").null_count == 200
    assert pq.read_metadata(tmp_path / "out" / "dataset" / "_metadata").num_rows == 300
