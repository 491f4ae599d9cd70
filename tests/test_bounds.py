"""Bounded memory for any input: a line longer than ``--max-line-bytes`` is quarantined by its first
bytes and length (never held), a run of empty lines is counted (one quarantine entry), a VOTable is
refused above its size limit or when it declares entities, ``inspect`` reads only its sample, and
a quarantine reason never repeats a long value. The scale is kept small here (a 5 MB line against
a 1 MB limit); ``benchmarks/bench_bounds.py`` measures GiB-sized inputs under a 2 GiB worker."""

from __future__ import annotations

import gzip
import io
import json
import tracemalloc
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import TABLE, bulk_lines, run_cli

from tmass_lake.errors import InputError
from tmass_lake.readers import parse_votable, quarantined_lines, read_bulk, read_input
from tmass_lake.readers.blocks import LONG_LINE_HEAD, MIN_BLANK_RUN, iter_line_blocks
from tmass_lake.readers.diagnose import diagnose, sample_lines
from tmass_lake.readers.votable import read_votable
from tmass_lake.schema import load_schema

SCHEMA = load_schema(TABLE)
MB = 1_000_000
LIMIT = 1 << 20


@pytest.fixture(scope="module")
def good() -> list[bytes]:
    return bulk_lines(SCHEMA, 300, seed=5)


def read(path: Path, **kw):
    blocks = list(read_bulk(str(path), SCHEMA, **kw))
    rows = sum(b.table.num_rows for b in blocks)
    bad = [x for b in blocks for x in b.bad]
    lines = sum(b.n_lines for b in blocks)
    assert lines == rows + quarantined_lines(bad)  # nothing lost
    return rows, bad, lines


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("where", ["first", "middle", "last, no newline"])
def test_a_line_longer_than_the_limit_is_quarantined_by_its_head_and_length(good, tmp_path, compress, where):
    long = b"9|" + b"X" * (5 * MB)
    at = {"first": 0, "middle": 100, "last, no newline": 300}[where]
    lines = [*good[:at], long + (b"" if where.startswith("last") else b"\n"), *good[at:]]
    data = b"".join(lines)
    path = tmp_path / ("in.gz" if compress else "in")
    path.write_bytes(gzip.compress(data, 1) if compress else data)
    rows, bad, n = read(path, max_line_bytes=LIMIT, block_bytes=256 << 10)
    assert rows == 300 and n == 301
    [entry] = bad
    assert entry.line == at + 1
    assert entry.reason == (f"line of {len(long):,} bytes, longer than the {LIMIT:,}-byte limit "
                            f"(--max-line-bytes); its first {LONG_LINE_HEAD} bytes kept")
    assert entry.text == long[:LONG_LINE_HEAD].decode()


def test_lines_under_the_limit_are_read_whole(good, tmp_path):
    path = tmp_path / "in"
    path.write_bytes(b"".join(good[:30]))
    longest = max(len(x) for x in good[:30])
    rows, bad, _ = read(path, max_line_bytes=longest, block_bytes=4096)
    assert rows == 30 and bad == []
    rows, bad, _ = read(path, max_line_bytes=longest - 2, block_bytes=4096)  # the newline is not counted
    assert rows + len(bad) == 30 and bad


def test_reading_past_a_long_line_holds_only_the_limit(tmp_path):
    long = b"A" * (40 * MB) + b"\n"
    stream = io.BytesIO(long + b"x|y\n")
    found: dict = {}
    tracemalloc.start()
    try:
        blocks = list(iter_line_blocks("in", stream, 32 << 20, max_line_bytes=LIMIT, long_lines=found))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert blocks and b"".join(blocks) == b" \nx|y\n"
    assert found[1].length == 40 * MB
    assert peak < 8 * LIMIT  # the 40 MB line never held (40x the limit)


def test_a_run_of_empty_lines_is_one_counted_entry(good, tmp_path):
    data = b"".join(good[:10]) + b"\n" * 200_000 + b"".join(good[10:]) + b"\n\n"
    path = tmp_path / "in.gz"
    path.write_bytes(gzip.compress(data, 1))
    rows, bad, n = read(path, block_bytes=64 << 10)
    assert rows == 300 and n == 300 + 200_002
    runs = [b for b in bad if b.lines > 1]
    assert sum(b.lines for b in runs) == 200_000 and len(runs) <= 200_000 // (64 << 10) + 2
    assert runs[0].line == 11 and runs[0].reason.endswith(f"blank lines (11 to {11 + runs[0].lines - 1:,})")
    assert [(b.line, b.reason, b.lines) for b in bad if b.lines == 1] == [(200_301, "blank line", 1),
                                                                           (200_302, "blank line", 1)]


def test_a_short_run_of_empty_lines_is_kept_line_by_line(good, tmp_path):
    path = tmp_path / "in"
    path.write_bytes(b"".join(good[:5]) + b"\n" * (MIN_BLANK_RUN - 1) + b"".join(good[5:]))
    rows, bad, _ = read(path)
    assert rows == 300 and [b.line for b in bad] == list(range(6, 6 + MIN_BLANK_RUN - 1))


def read_traced(path):
    """``read(path)`` in blocks of ``LIMIT``, with the peak of Python allocations while it ran."""
    tracemalloc.start()
    try:
        result = read(path, block_bytes=LIMIT)
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_empty_lines_are_read_in_bounded_memory(tmp_path):
    path = tmp_path / "newlines"
    path.write_bytes(b"\n" * (20 * MB))
    (rows, bad, n), peak = read_traced(path)
    assert rows == 0 and n == 20 * MB and quarantined_lines(bad) == 20 * MB and len(bad) <= 21
    assert peak < 16 * LIMIT


def test_a_file_of_newlines_then_rows_is_read_in_bounded_memory(good, tmp_path):
    path = tmp_path / "in"
    path.write_bytes(b"".join(good[:3]) + b"\n" * (20 * MB) + b"".join(good[3:]))
    (rows, bad, n), peak = read_traced(path)
    assert rows == 300 and n == 300 + 20 * MB and quarantined_lines(bad) == 20 * MB and len(bad) < 64
    assert peak < 32 * LIMIT  # one object per empty line would take GBs


@pytest.mark.slow
def test_a_build_quarantines_long_lines_and_runs_and_verify_counts_them(good, tmp_path):
    data = b"".join(good[:50]) + b"1|" + b"Z" * (2 * MB) + b"\n" + b"\n" * 5000 + b"".join(good[50:])
    src = tmp_path / "in" / "irsa" / TABLE / f"{TABLE}_aaa.gz"
    src.parent.mkdir(parents=True)
    src.write_bytes(gzip.compress(data, 1))
    pipeline = tmp_path / "mine.toml"
    pipeline.write_text(f'[pipeline]\nname = "mine"\n\n[[table]]\nname = "{TABLE}"\n')
    out = tmp_path / "lake"
    built = run_cli("build", str(pipeline), "--input", str(tmp_path / "in"), "--output", str(out),
                    "--workers", "1", "--max-line-bytes", str(LIMIT), "--quiet")
    assert built.returncode == 0, built.text
    report = json.loads((out / TABLE / "build_report.json").read_text())
    assert (report["lines_read"], report["rows_written"], report["rows_quarantined"]) == (5301, 300, 5001)
    q = pa.concat_tables(pq.read_table(p) for p in sorted((out / TABLE / "quarantine").glob("*.parquet")))
    assert q.column("lines").to_pylist() == [1, 5000]
    assert q.column("reason")[0].as_py().startswith(f"line of {2 * MB + 2:,} bytes")
    assert max(len(t) for t in q.column("text").to_pylist()) == LONG_LINE_HEAD
    verified = run_cli("verify", str(out))
    assert verified.returncode == 0 and "1/1 tables verified" in verified.stdout, verified.text


def test_a_quarantine_reason_does_not_repeat_a_long_value(good, tmp_path):
    fields = good[0].rstrip(b"\n").split(b"|")
    at = SCHEMA.names.index("ph_qual")
    fields[at] = b"A" * MB
    path = tmp_path / "in"
    path.write_bytes(b"|".join(fields) + b"\n" + b"".join(good[1:]))
    rows, bad, _ = read(path)
    [entry] = bad
    assert rows == 299 and len(entry.reason) < 200, entry.reason[:300]
    assert f"({MB:,} characters)" in entry.reason


def test_inspect_reads_only_its_sample_in_bounded_memory(good, tmp_path):
    path = tmp_path / "in"
    path.write_bytes(b"".join(good[:10]) + b"Q" * (30 * MB) + b"\n" + b"\n" * (5 * MB) + b"".join(good[10:]))
    tracemalloc.start()
    try:
        lines = sample_lines(str(path), 100, max_line_bytes=LIMIT)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(lines) == 100 and lines[:10] == [x.decode().rstrip("\n") for x in good[:10]]
    assert lines[10].strip() == "" and peak < 16 * LIMIT
    budget = sample_lines(str(path), 100, max_line_bytes=LIMIT, max_bytes=LIMIT)
    assert len(budget) == 11  # stops reading at its byte budget
    d = diagnose([str(path)], SCHEMA, sample=1000)
    assert d.lines == 10 and len(d.positions) == len(SCHEMA.columns)  # the sample's good lines only


def votable_text(cells: str = "<TD>1</TD>", doctype: str = "") -> bytes:
    return (f'<?xml version="1.0"?>\n{doctype}<VOTABLE version="1.4" '
            'xmlns="http://www.ivoa.net/xml/VOTable/v1.3"><RESOURCE><TABLE>'
            '<FIELD name="cntr" datatype="long"/><DATA><TABLEDATA>'
            f"<TR>{cells}</TR><TR><TD>2</TD></TR></TABLEDATA></DATA></TABLE></RESOURCE></VOTABLE>\n").encode()


@pytest.mark.parametrize("doctype", [
    '<!DOCTYPE VOTABLE [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>\n',
    '<!DOCTYPE VOTABLE [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n',
])
@pytest.mark.parametrize("cell", ["<TD>1</TD>", "<TD>&b;</TD>", "<TD>&x;</TD>"])
def test_a_votable_declaring_entities_is_refused(doctype, cell, tmp_path):
    path = tmp_path / "t.xml"
    path.write_bytes(votable_text(cell, doctype))
    with pytest.raises(InputError, match=r"t.xml, line 2: declares DOCTYPE \(XML entities\): refused"):
        list(read_input(str(path), SCHEMA))
    with pytest.raises(InputError, match="declares DOCTYPE"):
        parse_votable(votable_text(cell, doctype), SCHEMA, path="tap:chunk")
    result = run_cli("inspect", str(path), "--table", TABLE)  # inspect reports it, as any unreadable input
    assert "declares DOCTYPE (XML entities): refused" in result.stdout and "Traceback" not in result.text


def test_a_votable_with_an_unreadable_cell_quarantines_its_row(tmp_path):
    block = parse_votable(votable_text("<TD>abc</TD>"), None, path="t.xml")
    assert [b.line for b in block.bad] == [1] and block.n_lines == 2


def test_a_votable_larger_than_the_limit_is_refused_before_it_is_held(tmp_path):
    path = tmp_path / "big.xml.gz"
    rows = "".join(f"<TR><TD>{i}</TD></TR>" for i in range(60_000))
    path.write_bytes(gzip.compress(votable_text(f"<TD>0</TD></TR>{rows}<TR><TD>1</TD>"), 1))
    with pytest.raises(InputError, match=r"is a VOTable of more than 1 MiB \(decompressed\): refused"):
        list(read_votable(str(path), None, max_bytes=LIMIT))
    assert list(read_votable(str(path), None, max_bytes=2 * LIMIT))[0].n_lines == 60_003


@pytest.mark.parametrize("fmt", ["csv", "ipac"])
def test_headed_text_inputs_quarantine_a_long_line_too(fmt, tmp_path):
    long = b"7" * (3 * MB)
    if fmt == "csv":
        data = b"cntr,ra,dec\n1,10.5,20.5\n" + long + b"\n3,11.5,21.5\n"
        first = 3
    else:
        data = (b"|cntr |ra     |dec    |\n|long |double |double |\n"
                b"  1    10.5    20.5  \n" + long + b"\n  3    11.5    21.5  \n")
        first = 4
    path = tmp_path / f"t.{fmt}"
    path.write_bytes(data)
    blocks = list(read_input(str(path), None, input_format=fmt, max_line_bytes=LIMIT))
    bad = [b for blk in blocks for b in blk.bad]
    assert sum(b.table.num_rows for b in blocks) == 2
    assert [(b.line, b.reason.split(" bytes")[0]) for b in bad] == [(first, f"line of {3 * MB:,}")]


def test_a_run_of_crlf_empty_lines_is_counted_too(good, tmp_path):
    path = tmp_path / "in"
    path.write_bytes(b"".join(good[:2]) + b"\r\n" * 1000 + b"".join(good[2:]))
    rows, bad, n = read(path)
    assert rows == 300 and n == 1300 and [(b.line, b.lines) for b in bad] == [(3, 1000)]
