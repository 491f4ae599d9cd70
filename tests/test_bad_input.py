"""Bad input corpus: each case either stops the build with an error naming the file (and line),
or quarantines exactly the bad lines with file, line number and reason, and accounts every line."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from conftest import build_cli, bulk_lines, make_args, run_cli, write_gz
from hats.io.validation import is_valid_collection

from tmass_lake.convert import build_table
from tmass_lake.errors import InputError, UserError
from tmass_lake.readers import expand_inputs
from tmass_lake.schema import load_schema

N = 300  # clean lines per file


@pytest.fixture
def lines(pt_schema) -> list[bytes]:
    return bulk_lines(pt_schema, N, seed=7)


def with_bad(lines: list[bytes], bad: dict[int, bytes]) -> bytes:
    """The file text with 1-based lines replaced by ``bad``."""
    out = list(lines)
    for n, text in bad.items():
        out[n - 1] = text
    return b"".join(out)


def replace_field(line: bytes, name: str, value: bytes, schema) -> bytes:
    fields = line.rstrip(b"\n").split(b"|")
    fields[schema.names.index(name)] = value
    return b"|".join(fields) + b"\n"


def quarantine_rows(out: Path) -> list[dict]:
    rows = []
    for f in sorted((out / "quarantine").glob("*.parquet")):
        rows.extend(pq.read_table(f).to_pylist())
    return sorted(rows, key=lambda r: (r["file"], r["line"]))


def build_ok(pt_schema, client, inputs, out: Path) -> dict:
    report = build_table(make_args(pt_schema, inputs, str(out)), client)
    assert report == json.loads((out / "build_report.json").read_text()) | {"seconds": report["seconds"]}
    assert report["lines_read"] == report["rows_written"] + report["rows_quarantined"]
    assert is_valid_collection(str(out), verbose=False)
    return report


def build_fails(pt_schema, client, inputs, out: Path) -> InputError:
    with pytest.raises(InputError) as info:
        build_table(make_args(pt_schema, inputs, str(out)), client)
    assert not (out / "collection.properties").exists()
    return info.value


def assert_quarantined(pt_schema, client, tmp_path, lines, bad: dict[int, bytes], reason: str):
    """Build one clean file and one with ``bad`` lines; exactly those lines are quarantined."""
    clean = write_gz(tmp_path / "in" / "clean.gz", b"".join(lines))
    dirty = write_gz(tmp_path / "in" / "dirty.gz", with_bad(lines, bad))
    out = tmp_path / "lake"
    report = build_ok(pt_schema, client, [clean, dirty], out)
    assert report["lines_read"] == 2 * N
    assert report["rows_quarantined"] == len(bad)
    assert report["rows_written"] == 2 * N - len(bad)
    per_file = {r["path"]: r for r in report["inputs"]}
    assert per_file[str(dirty)]["quarantined"] == len(bad)
    assert per_file[str(clean)]["quarantined"] == 0
    q = quarantine_rows(out)
    assert [(r["file"], r["line"]) for r in q] == [(str(dirty), n) for n in sorted(bad)]
    for r in q:
        assert reason in r["reason"], r
        assert r["text"] == bad[r["line"]].rstrip(b"\n").decode()
    return q


# --- fatal: the file cannot be read at all --------------------------------------------------------


def test_truncated_gzip_names_the_file(pt_schema, local_client, tmp_path, lines):
    whole = gzip.compress(b"".join(lines * 20))
    path = tmp_path / "in" / "truncated.gz"
    path.parent.mkdir()
    path.write_bytes(whole[: len(whole) // 2])
    err = build_fails(pt_schema, local_client, [path], tmp_path / "lake")
    assert err.path == str(path)
    assert "truncated" in str(err) and str(path) in str(err)


def test_truncated_gzip_through_the_cli_exits_2(tmp_path, lines, local_client):
    whole = gzip.compress(b"".join(lines))
    path = tmp_path / "truncated.gz"
    path.write_bytes(whole[:-20])
    address = local_client.scheduler.address
    proc = run_cli(*build_cli([path], str(tmp_path / "lake"), "--scheduler", address)[1:])
    assert proc.returncode == 2, proc.stderr
    assert f"{path}" in proc.stderr and "truncated" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("content", [b"", gzip.compress(b"")], ids=["zero-bytes", "empty-gzip"])
def test_empty_file_names_the_file(pt_schema, local_client, tmp_path, content):
    path = tmp_path / "empty.gz"
    path.write_bytes(content)
    err = build_fails(pt_schema, local_client, [path], tmp_path / "lake")
    assert err.path == str(path) and "empty" in str(err)


@pytest.mark.parametrize("sep", [b",", b"\t"], ids=["comma", "tab"])
def test_wrong_delimiter_names_file_and_line(pt_schema, local_client, tmp_path, lines, sep):
    path = write_gz(tmp_path / "in" / "commas.gz", b"".join(line.replace(b"|", sep) for line in lines))
    err = build_fails(pt_schema, local_client, [path], tmp_path / "lake")
    assert (err.path, err.line) == (str(path), 1)
    assert "delimiter" in str(err)


def test_schema_that_does_not_match_the_file(tmp_path, local_client, lines):
    doc = yaml.safe_load(Path(load_schema("pt_src_6x2").path).read_text())
    doc["columns"] = doc["columns"][:40]  # a layout with 40 columns against 62-field lines
    yml = tmp_path / "pt_src_6x2.yaml"
    yml.write_text(yaml.safe_dump(doc))
    other = load_schema(str(yml))
    path = write_gz(tmp_path / "in" / "a.gz", b"".join(lines))
    err = build_fails(other, local_client, [path], tmp_path / "lake")
    assert (err.path, err.line) == (str(path), 1)
    assert "62" in str(err) and "40" in str(err) and "does not match the schema" in str(err)


def test_missing_input_names_the_path(pt_schema, local_client, tmp_path, lines):
    good = write_gz(tmp_path / "in" / "good.gz", b"".join(lines))
    missing = tmp_path / "in" / "gone.gz"
    err = build_fails(pt_schema, local_client, [good, missing], tmp_path / "lake")
    assert err.path == str(missing) and "no such file" in str(err)


def test_pattern_or_directory_matching_nothing_names_it(tmp_path):
    (tmp_path / "empty-dir").mkdir()
    with pytest.raises(InputError, match="empty-dir: directory holds no files"):
        expand_inputs([str(tmp_path / "empty-dir")])
    pattern = tmp_path / "nowhere" / "*.gz"
    proc = run_cli(*build_cli([pattern], str(tmp_path / "lake"))[1:])
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == f"tmass-lake: error: {pattern}: no file matches this pattern\n"


def test_directory_given_as_a_file_is_refused(pt_schema, local_client, tmp_path):
    d = tmp_path / "in" / "not_a_file.gz"
    d.mkdir(parents=True)
    err = build_fails(pt_schema, local_client, [d], tmp_path / "lake")
    assert err.path == str(d) and "directory" in str(err)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a mode-000 file")
def test_unreadable_file_names_the_path(pt_schema, local_client, tmp_path, lines):
    path = write_gz(tmp_path / "in" / "secret.gz", b"".join(lines))
    path.chmod(0)
    err = build_fails(pt_schema, local_client, [path], tmp_path / "lake")
    assert err.path == str(path) and "cannot be read" in str(err)


def test_duplicated_input_is_refused(pt_schema, tmp_path, lines):
    path = write_gz(tmp_path / "in" / "a.gz", b"".join(lines))
    proc = run_cli(*build_cli([path, path], str(tmp_path / "lake"))[1:])
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == f"tmass-lake: error: pt_src_6x2: input files listed more than once: {path}\n"
    assert not (tmp_path / "lake").exists()
    # the same file again through its directory
    with pytest.raises(UserError, match=f"more than once: {path}"):
        make_args(pt_schema, expand_inputs([str(tmp_path / "in"), str(path)]), str(tmp_path / "lake"))


# --- quarantined: bad lines set aside, the rest built ----------------------------------------------


def test_wrong_field_count_lines_are_quarantined(pt_schema, local_client, tmp_path, lines):
    bad = {
        5: lines[4].rstrip(b"\n") + b"|extra\n",
        17: lines[16].rsplit(b"|", 3)[0] + b"\n",
        120: b"\n",  # a blank line
        N: b"just some text\n",  # the last line
    }
    q = assert_quarantined(pt_schema, local_client, tmp_path, lines, bad, reason="")
    assert [r["reason"] for r in q] == ["expected 62 fields, found 63", "expected 62 fields, found 59",
                                        "blank line", "expected 62 fields, found 1"]


def test_non_numeric_value_is_quarantined(pt_schema, local_client, tmp_path, lines):
    bad = {3: replace_field(lines[2], "j_m", b"12.3x", pt_schema),
           250: replace_field(lines[249], "scan", b"abc", pt_schema)}
    q = assert_quarantined(pt_schema, local_client, tmp_path, lines, bad, reason="cannot parse")
    assert "j_m" in q[0]["reason"] and "scan" in q[1]["reason"]


def test_bad_date_is_quarantined(pt_schema, local_client, tmp_path, lines):
    bad = {42: replace_field(lines[41], "date", b"2000-13-45", pt_schema)}
    q = assert_quarantined(pt_schema, local_client, tmp_path, lines, bad, reason="column date")
    assert "2000-13-45" in q[0]["reason"]


def test_coordinates_out_of_range_are_quarantined(pt_schema, local_client, tmp_path, lines):
    bad = {2: replace_field(lines[1], "ra", b"360.0", pt_schema),
           9: replace_field(lines[8], "ra", b"-0.5", pt_schema),
           33: replace_field(lines[32], "dec", b"90.5", pt_schema),
           34: replace_field(lines[33], "dec", b"-91", pt_schema)}
    q = assert_quarantined(pt_schema, local_client, tmp_path, lines, bad, reason="outside")
    assert [r["reason"].split(":")[0] for r in q] == ["column ra", "column ra", "column dec", "column dec"]


def test_nan_and_null_coordinates_are_quarantined(pt_schema, local_client, tmp_path, lines):
    bad = {4: replace_field(lines[3], "ra", b"nan", pt_schema),
           5: replace_field(lines[4], "dec", b"NaN", pt_schema),
           6: replace_field(lines[5], "ra", b"inf", pt_schema),
           7: replace_field(lines[6], "dec", b"\\N", pt_schema)}
    q = assert_quarantined(pt_schema, local_client, tmp_path, lines, bad, reason="column")
    assert [r["reason"] for r in q] == ["column ra: nan outside [0, 360)",
                                        "column dec: nan outside [-90, 90]",
                                        "column ra: inf outside [0, 360)",
                                        "column dec: null in a non-null column"]
