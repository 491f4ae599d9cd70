"""Readers: real sample rows read exactly; each kind of bad line quarantined with file and line."""

import gzip
from pathlib import Path

import pyarrow as pa
import pytest
from astropy.table import Table

from tmass_lake.errors import InputError
from tmass_lake.readers import read_bulk, read_input, read_ipac
from tmass_lake.readers.bulk import ARROW_BLOCK_BYTES
from tmass_lake.schema import load_schema

DATA = Path(__file__).parent / "data"
PSC_LINE = (DATA / "psc_aaa_gz_line1.psv").read_text().rstrip("\n")


def as_text(value, column) -> str:
    """A typed value printed back the way IRSA's text would carry it (at the documented scale)."""
    if value is None:
        return "\\N"
    if column.scale is not None:
        return f"{value:.{column.scale}f}"
    return str(value)


def pad_to_scale(text: str, column) -> str:
    """IRSA drops trailing zeros (``-89.91861`` for %10.6f): restore them to compare at scale."""
    if column.scale is None or text == "\\N":
        return text.rstrip()
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(column.scale, '0')}"


def read_all(path, schema, **kw):
    blocks = list(read_bulk(str(path), schema, **kw))
    return pa.concat_tables([b.table for b in blocks]), [x for b in blocks for x in b.bad], blocks


@pytest.mark.parametrize("compress", [False, True])
def test_real_psc_line_every_value_equals_the_text(tmp_path, compress):
    schema = load_schema("fp_psc")
    path = tmp_path / ("psc_aaa.gz" if compress else "psc_aaa")
    data = (PSC_LINE + "\n").encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    table, bad, _ = read_all(path, schema)
    assert bad == [] and table.num_rows == 1
    fields = PSC_LINE.split("|")
    assert len(fields) == len(schema.columns) == 60
    for column, text in zip(schema.columns, fields, strict=True):
        assert as_text(table.column(column.name)[0].as_py(), column) == pad_to_scale(text, column), column
    assert table.column("designation")[0].as_py() == "00042876-8955069"  # trailing blank kept out
    assert table.schema.field("ra").metadata[b"unit"] == b"deg"


def gator_ipac(tmp_path) -> tuple[Path, list[str], list[str]]:
    """The Gator fp_psc row as Gator writes it (``xdate``, its computed columns), plus the
    ``dist``/``angle`` columns of a cone search, as an IPAC table written with astropy."""
    rows = (DATA / "astroquery_Box_fp_psc_row.tsv").read_text().splitlines()
    names, values = rows[0].split("\t") + ["dist", "angle"], rows[1].split("\t") + ["0.412", "87.3"]
    known = load_schema("fp_psc").lookup()
    cols = {}
    for n, v in zip(names, values, strict=True):
        c = known.get(n)
        if n in ("dist", "angle") or (c is not None and c.arrow.startswith(("float", "int")) and v != ""):
            cols[n] = [int(v) if c is not None and c.arrow.startswith("int") else float(v)]
        else:
            cols[n] = [v]
    t = Table(cols)
    t["dist"].unit, t["angle"].unit = "arcsec", "deg"
    path = tmp_path / "gator.tbl"
    t.meta["keywords"] = {"fixlen": {"value": "T"}, "RowsRetrieved": {"value": 1}}
    t.write(path, format="ascii.ipac")
    return path, names, values


def test_gator_subset_without_positions_is_refused(tmp_path):
    """A projection is read as it is; only the positions of a positional table are required."""
    path, _, _ = gator_ipac(tmp_path)
    table = Table.read(path, format="ascii.ipac")
    table.remove_column("dec")
    table.write(path, format="ascii.ipac", overwrite=True)
    with pytest.raises(InputError, match=r"gator.tbl: has no column dec \(or decl\): fp_psc needs it"):
        list(read_ipac(str(path), load_schema("fp_psc")))


def test_gator_ipac_table_maps_onto_the_schema(tmp_path):
    """The Gator fp_psc row reads exactly with the shipped schema: ``xdate`` is the documented
    ``date``, Gator's own columns are kept with their IPAC types and units, documented columns it
    lacks are absent (a projection), not null."""
    path, names, values = gator_ipac(tmp_path)
    schema = load_schema("fp_psc")
    known = schema.lookup()
    blocks = list(read_input(str(path), schema))
    table = pa.concat_tables([b.table for b in blocks])
    assert [b for blk in blocks for b in blk.bad] == []
    assert table.num_rows == 1
    documented = [c.name for c in schema.columns if any(known.get(n) is c for n in names)]
    assert table.column_names[:len(documented)] == documented  # in schema order
    for n, v in zip(names, values, strict=True):
        c = known.get(n)
        got = table.column(c.name if c else n)[0].as_py()
        if c is not None and c.scale is not None and v:
            assert f"{got:.{c.scale}f}" == pad_to_scale(v, c), n
        elif v == "":
            assert got is None, n
        else:
            assert str(got) == v, n
    assert table.schema.field("date").type == pa.date32()  # Gator's xdate, typed as documented
    assert "xdate" not in table.column_names
    assert table.schema.field("ra").type == pa.float64()
    assert table.schema.field("ra").metadata[b"ucd"].startswith(b"pos.eq.ra")
    assert table.schema.field("clon").type == pa.string()  # Gator's computed column kept
    assert table.schema.field("dist").metadata[b"unit"] == b"arcsec"
    assert table.schema.field("angle").metadata[b"unit"] == b"deg"
    assert table.schema.field("dist").metadata[b"provenance"] == b"input header"
    assert "pts_key" not in table.column_names  # documented, not in the query: absent
    layout = blocks[0].layout
    assert layout.matched["date"] == "xdate" and "pts_key" in layout.missing
    assert set(layout.missing) == set(schema.names) - set(documented)
    assert layout.source == "ipac header"
    assert [c.name for c in layout.extra] == ["clon", "clat", "j_h", "h_k", "j_k", "id", "dist", "angle"]


def _psc_with(field: str, value: str) -> str:
    schema = load_schema("fp_psc")
    parts = PSC_LINE.split("|")
    parts[schema.names.index(field)] = value
    return "|".join(parts)


BAD_LINES = {
    "wrong field count": (PSC_LINE + "|extra", "expected 60 fields, found 61"),
    "non-numeric": (_psc_with("j_m", "abc"), "column j_m: cannot parse 'abc'"),
    "bad date": (_psc_with("date", "2000-13-45"), "column date: cannot parse '2000-13-45'"),
    "ra out of range": (_psc_with("ra", "361.5"), "column ra: 361.5 outside [0, 360)"),
    "dec out of range": (_psc_with("dec", "-91.2"), "column dec: -91.2 outside [-90, 90]"),
    "nan coordinate": (_psc_with("ra", "nan"), "column ra: nan outside [0, 360)"),
    "null in non-null": (_psc_with("hemis", "\\N"), "column hemis: null in a non-null column"),
    "blank line": ("", "blank line"),
}


@pytest.mark.parametrize("kind", sorted(BAD_LINES))
def test_bad_line_is_quarantined_with_file_and_line(tmp_path, kind):
    bad_text, reason = BAD_LINES[kind]
    lines = [PSC_LINE] * 3 + [bad_text] + [PSC_LINE] * 2
    path = tmp_path / "psc_bad.gz"
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    table, bad, blocks = read_all(path, load_schema("fp_psc"))
    assert table.num_rows == 5
    assert sum(b.n_lines for b in blocks) == 6
    assert len(bad) == 1
    assert bad[0].file == str(path) and bad[0].line == 4
    assert bad[0].reason.startswith(reason), bad[0].reason
    assert bad[0].text == bad_text


def test_bad_lines_found_across_small_blocks(tmp_path):
    """Line numbers stay right when a file spans many blocks."""
    lines = [PSC_LINE] * 200
    lines[57] = _psc_with("k_m", "x")
    lines[143] = PSC_LINE + "|"
    path = tmp_path / "psc.gz"
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    table, bad, blocks = read_all(path, load_schema("fp_psc"), block_bytes=4096)
    assert len(blocks) > 5
    assert [b.line for b in bad] == [58, 144]
    assert table.num_rows == 198


def test_bad_lines_found_across_arrow_blocks_of_one_text_block(tmp_path):
    """One text block parsed in many Arrow blocks (and a line longer than one) keeps exact line numbers."""
    lines = [PSC_LINE] * 12_000  # ~7 MB: one text block, several of pyarrow's 1 MiB blocks
    lines[5] = ""
    lines[4_000] = PSC_LINE + "|extra"
    lines[7_777] = _psc_with("j_m", "abc")
    lines[9_001] = _psc_with("dec", "-91.2")
    lines[10_500] = _psc_with("designation", "x" * (3 * ARROW_BLOCK_BYTES))
    lines[11_998] = ""
    path = tmp_path / "psc.gz"
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    table, bad, blocks = read_all(path, load_schema("fp_psc"), block_bytes=16 << 20)
    assert len(blocks) == 1
    assert [b.line for b in bad] == [6, 4_001, 7_778, 9_002, 10_501, 11_999]
    assert table.num_rows == 12_000 - 6
    assert [b.reason for b in bad][:4] == ["blank line", "expected 60 fields, found 61",
                                           "column j_m: cannot parse 'abc' as %6.3f",
                                           "column dec: -91.2 outside [-90, 90]"]


def test_file_that_does_not_match_the_schema_is_refused(tmp_path):
    path = tmp_path / "psc.csv"
    path.write_text(PSC_LINE.replace("|", ",") + "\n")
    with pytest.raises(InputError, match=r"psc.csv, line 1: has 1 '\|'-separated fields"):
        list(read_bulk(str(path), load_schema("fp_psc")))
    with pytest.raises(InputError, match="does not match the schema"):
        list(read_bulk(str(DATA / "psc_aaa_gz_line1.psv"), load_schema("pt_src_6x2")))


def test_truncated_gzip_and_missing_file_are_clear_errors(tmp_path):
    path = tmp_path / "psc.gz"
    path.write_bytes(gzip.compress(((PSC_LINE + "\n") * 5000).encode())[:3000])
    with pytest.raises(InputError, match="psc.gz: corrupt or truncated gzip"):
        list(read_bulk(str(path), load_schema("fp_psc")))
    with pytest.raises(InputError, match="nope.gz: no such file"):
        list(read_bulk(str(tmp_path / "nope.gz"), load_schema("fp_psc")))
    empty = tmp_path / "empty"
    empty.write_text("")
    with pytest.raises(InputError, match="is empty"):
        list(read_bulk(str(empty), load_schema("fp_psc")))
