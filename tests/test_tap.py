"""Building from a TAP service, against a real one: GAVO DaCHS on loopback serving the mock tables.

The service (``tap_server.tap_service``) holds the mock calibration tables loaded from the same
IRSA bulk files a file build reads, laid out in IRSA's shape, not ours (another column order,
Gator's names, fewer columns, computed ones), so a harvest with the shipped schemas and no
``schema pull`` must give the file build's lake on every shared column, row for row and value
for value, with our documented names, types and words, the service's extra columns kept with
their units, and a drift report saying exactly what differs.
"""

from __future__ import annotations

import io
import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
from astropy.io.votable import from_table
from astropy.io.votable import parse as parse_votable
from astropy.table import MaskedColumn, Table
from conftest import BIN, build_mock_lake, wait_for
from pyvo.dal.exceptions import DALQueryError, DALServiceError
from tap_server import EXTRA_COLUMNS, HARD_MAXREC, NOT_SERVED, SERVED_DESCRIPTION, TABLES, TapService

from tmass_lake.convert import build_table, resolve_parameters, table_arguments
from tmass_lake.errors import InputError
from tmass_lake.mock.scoring import MockLake
from tmass_lake.readers.tap import (
    Answer,
    AsyncJobError,
    Chunk,
    TapClient,
    TapError,
    TapOptions,
    answer_block,
    identifier,
    is_transient_tap_error,
    plan_chunks,
    read_chunk,
    service_url,
)
from tmass_lake.readers.tap_schema import merge_schema, service_arrow
from tmass_lake.schema import load_schema

CHUNK_ROWS = 12_000  # pt_src_c and cf_link (~126k rows) harvest in 11 chunks


def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([str(BIN / "tmass-lake"), *args], capture_output=True, text=True)
    if check and done.returncode:
        raise AssertionError(f"tmass-lake {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done


def plain(table: pa.Table) -> pa.Table:
    """The table's values only: schema and field metadata dropped."""
    return table.cast(pa.schema([f.remove_metadata() for f in table.schema])).replace_schema_metadata(None)


def table_rows(path: Path, key: str, columns: list[str] | None = None) -> dict[str, pa.Table]:
    """A built table's rows: per HATS data file (collections), or the whole dataset sorted by key
    (and then by ``columns``, default all)."""
    files = sorted(path.rglob("Npix=*.parquet"))
    if files:
        return {str(f.relative_to(path)): plain(pq.read_table(f)) for f in files}
    table = plain(pq.read_table(sorted((path / "dataset").glob("part-*.parquet"))))
    order = [key, *(c for c in columns or table.column_names if c != key)]  # a cntr can be linked twice
    return {"dataset": table.sort_by([(c, "ascending") for c in order])}


def assert_same_rows(harvested: Path, built: Path, key: str, absent: tuple[str, ...] = (),
                     extra: tuple[str, ...] = ()) -> None:
    """The harvest's rows equal the file build's on every shared column; it lacks exactly ``absent``
    and has ``extra`` besides."""
    shared = [c for c in pq.read_schema(next(built.rglob("*.parquet"))).names if c not in absent] \
        if not list(built.rglob("Npix=*.parquet")) else None
    a, b = table_rows(harvested, key, shared), table_rows(built, key, shared)
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].num_rows == b[name].num_rows, name
        assert set(a[name].column_names) == (set(b[name].column_names) - set(absent)) | set(extra), name
        for column in a[name].column_names:
            if column not in extra:
                assert a[name].column(column).equals(b[name].column(column)), (name, column)


def served_metadata(service: TapService, table: str, data_file: Path) -> None:
    """A harvested data file's documented columns carry our names, types and words (layout from the
    service, documentation from the schema); the service's own columns its words and units."""
    served, ours = service.tables[table], load_schema(table)
    # a data file carries types and compact VOParquet; the words are in its catalog's _common_metadata
    dataset = next(p for p in data_file.parents if p.name == "dataset")
    fields = {f.name: f for f in pq.read_schema(dataset / "_common_metadata")}
    assert [n for n in fields if n in ours.names] == [n for n in ours.names if n in served.served]
    for name in served.served:
        meta = {k.decode(): v.decode() for k, v in (fields[name].metadata or {}).items()}
        column = ours.column(name)
        assert (meta["description"], meta.get("unit"), meta.get("ucd")) == (
            column.description, column.unit, column.ucd), name
        assert fields[name].type == column.arrow_type and meta["provenance"] == column.provenance, name
        assert not meta["description"].endswith(SERVED_DESCRIPTION)  # the service's words are drift
    for c in (EXTRA_COLUMNS if ours.positional else []):
        meta = {k.decode(): v.decode() for k, v in (fields[c["name"]].metadata or {}).items()}
        assert meta["description"] == c["description"] and meta.get("unit") == c["unit"], c["name"]
        assert meta["provenance"] == "input header" and fields[c["name"]].type == pa.float64()


@pytest.fixture(scope="session")
def file_lake(tap_service, local_client) -> Path:
    """The calibration pipeline built from the bulk files the service was loaded from: the reference."""
    env = MockLake(root=tap_service.mock.parent)
    build_mock_lake(env, local_client, families=("calibration",))
    return env.lake


def harvest(service: TapService, table: str, out: Path, client, resume: bool = False, **params) -> dict:
    """Build ``table`` from the service into ``out`` (in process, on the session's cluster)."""
    args = table_arguments(load_schema(table), [service.url], str(out), params=resolve_parameters(params),
                           resume=resume, progress=False)
    return build_table(args, client)


# -- without the service ------------------------------------------------------------------------

def test_chunk_is_a_string_and_a_query():
    c = Chunk("https://irsa.ipac.caltech.edu/TAP", "pt_src_c", "cntr", 10, 20, 7, "cc_flg = '000'")
    assert Chunk.from_url(c.url()) == c
    assert service_url(c.url()) == "https://irsa.ipac.caltech.edu/TAP"
    assert c.query(["ra", "date", "cntr"]) == ('SELECT ra, "date", cntr FROM pt_src_c WHERE cntr >= 10 AND '
                                               "cntr < 20 AND (cc_flg = '000') ORDER BY cntr")
    assert [(p.lo, p.hi) for p in c.split(3)] == [(10, 13), (13, 16), (16, 20)]
    assert identifier("dec") == '"dec"' and identifier("j_m") == "j_m"
    with pytest.raises(InputError, match="not a TAP chunk"):
        Chunk.from_url("tap+https://irsa.ipac.caltech.edu/TAP?table=x")


def test_transient_failures_are_told_apart():
    assert is_transient_tap_error(requests.ConnectionError("refused"))
    assert is_transient_tap_error(AsyncJobError("job ended ERROR"))
    assert is_transient_tap_error(DALServiceError("bad gateway", 502))
    assert is_transient_tap_error(DALServiceError("Unable to access the capabilities endpoint"))
    assert not is_transient_tap_error(DALServiceError("not found", 404))
    assert not is_transient_tap_error(DALQueryError("syntax error"))


def test_an_answer_becomes_a_typed_block_with_bad_rows_quarantined():
    """VOTable columns matched by name (any order; one the schema does not list kept as the answer
    describes it), typed by the schema, strings trimmed, dates parsed; a row breaking a constraint
    goes to the quarantine with its chunk and row."""
    schema = load_schema("cf_info")
    values = {c.name: [1.5, 2.5, 3.5] if c.arrow.startswith("float") else [1, 2, 3] for c in schema.columns}
    values["dec"] = [10.0, 95.0, -20.0]  # row 2: outside [-90, 90]
    table = Table({"extra": ["a ", "b", "c"], **{n: values[n] for n in reversed(schema.names)}})
    table["sig_ra"] = MaskedColumn([0.5, 0.5, 0.5], mask=[False, False, True], dtype="f4")  # nullable
    data = io.BytesIO()
    from_table(table).to_xml(data, tabledata_format="binary2")
    vot = parse_votable(io.BytesIO(data.getvalue()))
    chunk = Chunk("http://127.0.0.1:1/tap", "s.cf_info", "gcntr", 1, 4, 3)
    answer = Answer("q", data.getvalue(), vot.get_first_table(), 3, "OK", len(data.getvalue()), 0.0, 0.1,
                    "sync")
    block = answer_block(chunk.url(), 1, answer, schema)
    assert block.n_lines == 3 and block.table.num_rows == 2
    assert block.table.select(schema.names).schema == schema.arrow_schema()
    assert [c.name for c in block.layout.extra] == ["extra"] and block.table.column_names[-1] == "extra"
    assert block.table.column("gcntr").to_pylist() == [1, 3]
    assert block.table.column("sig_ra").to_pylist() == [0.5, None]
    assert [(b.file, b.line) for b in block.bad] == [(chunk.url(), 2)] and "dec" in block.bad[0].reason


def test_merge_takes_the_services_layout_and_keeps_our_names_kinds_and_words():
    ours = load_schema("cf_link")
    records = [{"column_name": "cntr", "datatype": "long", "unit": "", "ucd": "meta.id", "description": "key",
                "principal": 1, "indexed": 1},
               {"column_name": "gcntr", "datatype": "int", "description": "group", "principal": 0,
                "indexed": 0},
               {"column_name": "extra", "datatype": "char", "arraysize": "*", "description": "new"}]
    m = merge_schema(records, ours, table="cf_link", service="https://x/TAP", date="2026-11-27")
    assert m.schema.names == ["cntr", "gcntr", "extra"]
    assert [c.arrow for c in m.schema.columns] == ["int64", "int64", "string"]  # ours int64 kept over int
    assert m.schema.column("cntr").indexed
    assert m.schema.column("cntr").description == ours.column("cntr").description  # ours, not "key"
    assert m.schema.column("cntr").origin["description"] == ours.column("cntr").source
    assert m.schema.column("gcntr").origin["arrow"] == ours.column("gcntr").source
    assert m.schema.column("extra").origin["description"] == "TAP_SCHEMA.columns of https://x/TAP, 2026-11-27"
    facts = {(d.column, d.fact) for d in m.drift}
    assert {("extra", "column"), ("gcntr", "arrow"), ("*", "order"), ("cntr", "description")} <= facts
    assert service_arrow({"column_name": "t", "datatype": "adql:TIMESTAMP"}) == "string"

    psc = load_schema("pt_src_c")  # Gator names: xdate and decl are our date and dec (aliases)
    records = [{"column_name": "cntr", "datatype": "long"}, {"column_name": "decl", "datatype": "double"},
               {"column_name": "xdate", "datatype": "char", "arraysize": "*", "description": "obs date"},
               {"column_name": "ra", "datatype": "double", "unit": "deg"},
               {"column_name": "htm20", "datatype": "long", "unit": "", "description": "HTM index"}]
    m = merge_schema(records, psc, table="pt_src_c", service="https://x/TAP", date="2026-11-27")
    assert m.schema.names == ["cntr", "dec", "date", "ra", "htm20"]
    date = m.schema.column("date")
    assert (date.arrow, date.description, date.aliases) == ("date32", psc.column("date").description,
                                                            psc.column("date").aliases)
    assert m.schema.column("htm20").provenance == "documented" and m.schema.column("htm20").arrow == "int64"
    facts = {(d.column, d.fact, d.service) for d in m.drift if d.fact == "name"}
    assert {("date", "name", "xdate"), ("dec", "name", "decl")} <= facts
    gone = {d.column for d in m.drift if d.fact == "column" and d.service == "absent"}
    assert gone == set(psc.names) - {"cntr", "dec", "date", "ra"}


# -- against DaCHS (slow: the service is loaded once per session, ~25 s) ---------------------------

@pytest.mark.slow
def test_schema_pull_merges_our_schema_with_the_services_layout(tap_service, tmp_path):
    """The service's columns and order; our names, aliases, types and words where a column matches by
    name or alias; the service's extras as it describes them; the drift says what differed."""
    out, report = tmp_path / "schemas" / "pt_src_c.yaml", tmp_path / "drift.json"
    done = cli("schema", "pull", "--tap", tap_service.url, "--table", "pt_src_c", "--output", str(out),
               "--report", str(report))
    extras = [c["name"] for c in EXTRA_COLUMNS]
    assert f"only on the service: {', '.join(extras)}" in done.stdout
    ours = load_schema("pt_src_c")
    assert f"only ours: {', '.join(n for n in ours.names if n in NOT_SERVED['pt_src_c'])}" in done.stdout
    pulled = load_schema(str(out))
    declared = tap_service.tables["pt_src_c"].columns
    assert pulled.names == [c.get("source") or c["name"] for c in declared]
    for col, served in zip(pulled.columns, declared, strict=True):
        if served.get("source"):
            mine = ours.column(served["source"])
            assert (col.arrow, col.unit, col.ucd, col.description, col.nullable) == (
                mine.arrow, mine.unit, mine.ucd, mine.description, mine.nullable), col.name
            assert col.origin["description"] == mine.source
            assert served["name"] == col.name or served["name"] in col.aliases
        else:
            assert (col.arrow, col.unit, col.description) == ("float64", served["unit"],
                                                              served["description"])
            assert col.origin["description"].startswith(f"TAP_SCHEMA.columns of {tap_service.server.url}")
        assert col.principal == served["principal"] and col.indexed == (col.name == "cntr"), col.name
    assert pulled.column("date").arrow == "date32" and pulled.column("date").aliases == ("xdate",)
    assert pulled.layout_status == "documented" and pulled.key_column == "cntr"
    assert pulled.irsa_columns == ours.irsa_columns and pulled.data_dictionary == "pt_src_c_dd"
    drift = json.loads(report.read_text())["drift"]
    assert {d["column"] for d in drift if d["fact"] == "column"} == {*extras, *NOT_SERVED["pt_src_c"]}
    assert {(d["column"], d["service"]) for d in drift if d["fact"] == "name"} == {("date", "xdate"),
                                                                                  ("dec", "decl")}
    assert sum(d["fact"] == "description" for d in drift) == len(ours.columns) - len(NOT_SERVED["pt_src_c"])


@pytest.mark.slow
def test_plan_counts_every_row_once(tap_service):
    schema = load_schema("pt_src_c")
    plan = plan_chunks(tap_service.url, schema, "cntr", chunk_rows=CHUNK_ROWS)
    client = TapClient(tap_service.url)
    total = client.rows("SELECT COUNT(*) AS n FROM tmass_lake_test.pt_src_c")[0]["n"]
    assert plan.rows == total >= 100_000 and len(plan.chunks) >= 8
    assert sum(c.rows for c in plan.chunks) == total and max(c.rows for c in plan.chunks) <= CHUNK_ROWS
    assert all(a.hi == b.lo for a, b in zip(plan.chunks, plan.chunks[1:], strict=False))
    assert client.count(plan.chunks[3]) == plan.chunks[3].rows
    declared = [c["name"] for c in tap_service.tables["pt_src_c"].columns]
    assert [c["column_name"] for c in plan.columns] == declared
    assert plan.chunks[0].columns[:3] == ("cntr", "gcntr", "rel")  # the service's names and order
    assert "xdate" in plan.chunks[0].columns and "decl" in plan.chunks[0].columns
    east = plan_chunks(tap_service.url, schema, "cntr", chunk_rows=CHUNK_ROWS, where="ra > 180")
    counted = client.rows("SELECT COUNT(*) AS n FROM tmass_lake_test.pt_src_c WHERE ra > 180")[0]["n"]
    assert 0 < east.rows == counted == sum(c.rows for c in east.chunks) < total
    assert all(c.where == "ra > 180" and "AND (ra > 180)" in c.query(["cntr"]) for c in east.chunks)


@pytest.mark.slow
def test_short_chunk_fails_naming_chunk_and_query(tap_service):
    schema = load_schema("cf_link")
    chunk = plan_chunks(tap_service.url, schema, "cntr", chunk_rows=CHUNK_ROWS).chunks[0]
    wrong = replace(chunk, rows=chunk.rows + 5)  # the service will send 5 rows fewer than "counted"
    with pytest.raises(InputError) as e:
        list(read_chunk(wrong.url(), schema, options=TapOptions(retries=1, backoff=0)))
    message = str(e.value)
    assert wrong.url() in message
    assert f"returned {chunk.rows} rows where COUNT(*) gave {wrong.rows}" in message
    assert "SELECT cntr, ngrp, gcntr FROM tmass_lake_test.cf_link WHERE cntr >= " in message


@pytest.mark.slow
def test_overflow_is_split_never_short(tap_service, file_lake, local_client, tmp_path):
    """A chunk larger than the service's hard MAXREC comes back cut (OVERFLOW): it is split, counted and
    queried again, and the table built equals the file build; async (UWS) jobs for the large queries."""
    out = tmp_path / "cf_link"
    report = harvest(tap_service, "cf_link", out, local_client, tap_chunk_rows=100_000, tap_sync_rows=50_000)
    everything = [q for i in report["inputs"] for q in i["queries"]]
    queries = [q for q in everything if q["kind"] == "data"]
    cut = [q for q in queries if q["status"] == "OVERFLOW"]
    assert cut and all(q["received"] == HARD_MAXREC < q["expected"] for q in cut)
    assert {q["mode"] for q in queries} == {"sync", "async"}
    assert report["rows_written"] == report["tap"]["rows"] == sum(
        q["received"] for q in queries if q["status"] == "OK")
    counts = [q for q in everything if q["kind"] == "count"]  # the split's counts are in the report
    assert counts and all(q["query"].startswith("SELECT COUNT(*) AS n FROM tmass_lake_test.cf_link")
                          for q in counts)
    assert_same_rows(out, file_lake / "cf_link", "cntr")


@pytest.mark.slow
def test_harvest_equals_the_file_build(tap_service, file_lake, tmp_path):
    """The calibration pipeline from a service laid out in IRSA's shape (the README's command, shipped
    schemas, no schema pull) equals it from the bulk files on every shared column, value for value;
    ``date`` is typed as documented, the service's extra columns are kept with their units, and the
    drift report lists exactly what differs."""
    cli("build", "calibration", "--input", tap_service.url, "--output", str(tmp_path / "tap"),
        "--tap-chunk-rows", str(CHUNK_ROWS), "--quiet", "--workers", "2", "--memory-limit", "2GiB")
    manifest = json.loads((tmp_path / "tap" / "manifest.json").read_text())
    assert sorted(manifest["tables"]) == sorted([*TABLES, "cf_lightcurves"])
    for name in TABLES:
        served, ours = tap_service.tables[name], load_schema(name)
        extras = tuple(c["name"] for c in EXTRA_COLUMNS) if ours.positional else ()
        assert_same_rows(tmp_path / "tap" / name, file_lake / name, served.key, tuple(served.absent), extras)
        entry = manifest["tables"][name]
        tap = entry["tap"]
        assert tap["service"] == tap_service.server.url and tap["table"] == served.qualified
        assert [c["column_name"] for c in tap["tap_schema"]] == [c["name"] for c in served.columns]
        data_queries = [q for q in tap["queries"] if q["kind"] == "data"]
        assert entry["rows"] == tap["rows"] == sum(q["received"] for q in data_queries)
        assert all(q["received"] == q["expected"] and q["query"].startswith("SELECT") for q in data_queries)
        planning = [q["query"] for q in tap["queries"] if q["kind"] in ("metadata", "count")]
        assert f"SELECT COUNT(*) AS n, MIN({served.key}) AS lo, MAX({served.key}) AS hi FROM " \
               f"{served.qualified}" in planning
        assert "SELECT table_name FROM TAP_SCHEMA.tables" in planning
        drift = entry["columns"]  # exactly what differs from the shipped schema
        assert drift["absent"] == served.absent and drift["missing"] == []
        assert drift["aliases"] == {c: n for c, n in served.served.items() if c != n}
        assert [(c["name"], c["unit"]) for c in drift["input_only"]] == [
            (c["name"], c["unit"]) for c in EXTRA_COLUMNS if extras]
        assert drift["layout"] == [f"TAP_SCHEMA.columns of {tap_service.server.url}"]
        assert [c["name"] for c in entry["schema"]["columns"]] == [
            *(n for n in ours.names if n not in served.absent), *extras]
        data = next(p for p in (tmp_path / "tap" / name).rglob("*.parquet")
                    if p.name.startswith(("Npix=", "part-")))
        served_metadata(tap_service, name, data)
    assert manifest["tables"]["pt_src_c"]["columns"]["aliases"] == {"dec": "decl", "date": "xdate"}
    psc = next((tmp_path / "tap" / "pt_src_c").rglob("Npix=*.parquet"))
    assert pq.read_schema(psc).field("date").type == pa.date32()  # Gator's text xdate, typed as documented
    described = pq.read_schema(next(p for p in psc.parents if p.name == "dataset") / "_common_metadata")
    assert described.field("ra_hours").metadata[b"unit"] == b"h"  # the service's unit, kept
    assert len([q for q in manifest["tables"]["pt_src_c"]["tap"]["queries"] if q["kind"] == "data"]) >= 8
    assert_same_rows(tmp_path / "tap" / "cf_lightcurves", file_lake / "cf_lightcurves", "gcntr")
    info = cli("info", str(tmp_path / "tap")).stdout
    absent = ", ".join(tap_service.tables["pt_src_c"].absent)
    assert f"layout from TAP_SCHEMA.columns of {tap_service.server.url}; 50 matched (dec from decl, date " \
           f"from xdate); 4 input-only: x, y, z, ra_hours [h]; 11 documented but absent: {absent}; 0 " in info


@pytest.mark.slow
def test_a_table_without_positions_or_key_is_refused_naming_the_column(tap_service, local_client, tmp_path):
    """Tables addressed by their full name (``--tap-table``, ``?table=``); what the harvest needs is
    required, named in one line; a query string that is not ``table=`` is refused."""
    schema = load_schema("pt_src_c")
    nora, nokey = "tmass_lake_test.pt_src_c_nora", "tmass_lake_test.pt_src_c_nokey"
    with pytest.raises(InputError, match=rf"{nora}: has no column ra: pt_src_c needs it"):
        harvest(tap_service, "pt_src_c", tmp_path / "a", local_client, tap_table=nora)
    with pytest.raises(TapError, match=rf"{nokey} has no key column cntr"):
        plan_chunks(tap_service.url, schema, "cntr", chunk_rows=100, table=nokey)
    done = cli("build", "--table", "pt_src_c", "--input", f"{tap_service.url}?table={nokey}",
               "--output", str(tmp_path / "b"), "--quiet", "--scheduler", local_client.scheduler.address,
               check=False)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "has no key column cntr" in done.stderr
    done = cli("build", "--table", "pt_src_c", "--input", f"{tap_service.url}?tabel=pt_src_c",
               "--output", str(tmp_path / "c"), "--quiet", "--scheduler", local_client.scheduler.address,
               check=False)
    assert done.returncode == 2 and "takes one query parameter, table=SCHEMA.NAME (not tabel)" in done.stderr


def _done_chunks(out: Path) -> list[dict]:
    plan = out / "_build" / "plan" / "convert"
    return [json.loads(p.read_text()) for p in sorted(plan.glob("*.json"))] if plan.is_dir() else []


@pytest.mark.slow
def test_service_restarted_mid_harvest(tap_service, file_lake, local_client, tmp_path):
    """A short outage is ridden out by the retries; a long one fails the build naming the query, and
    a resumed build after the restart queries only the unfinished chunks and ends identical."""
    server = tap_service.server
    slow = {"tap_chunk_rows": 4000, "tap_concurrency": 1}  # 32 chunks, one query at a time
    with ThreadPoolExecutor(1) as pool:
        ridden = tmp_path / "ridden"
        build = pool.submit(harvest, tap_service, "cf_link", ridden, local_client, tap_retries=8,
                            tap_backoff=0.5, **slow)
        wait_for(lambda: len(_done_chunks(ridden)) >= 3, timeout=120, what="three harvested chunks")
        server.stop()
        time.sleep(2)
        server.start()
        assert build.result(timeout=300)["rows_written"] == tap_service.rows("cf_link")
        assert_same_rows(ridden, file_lake / "cf_link", "cntr")

        out = tmp_path / "resumed"
        build = pool.submit(harvest, tap_service, "cf_link", out, local_client, tap_retries=1,
                            tap_backoff=0.2, **slow)
        wait_for(lambda: len(_done_chunks(out)) >= 3, timeout=120, what="three harvested chunks")
        server.stop()
        try:
            with pytest.raises(TapError, match=r"\(after 2 attempts\)") as e:
                build.result(timeout=300)
            assert server.url in str(e.value) and "query 'SELECT cntr, ngrp, gcntr FROM" in str(e.value)
            wait_for(lambda: not any(local_client.processing().values()), timeout=120, what="idle workers")
            before = {r["path"]: r["queries"] for r in _done_chunks(out)}
            assert 3 <= len(before) < 32
        finally:
            server.start()
    restarted = time.time()
    report = harvest(tap_service, "cf_link", out, local_client, resume=True, **slow)
    queried = {i["path"]: i["queries"] for i in report["inputs"]}
    for path, queries in before.items():  # finished chunks were not queried again
        assert queried[path] == queries and all(q["started"] < restarted for q in queries)
    assert all(q["started"] > restarted for p, qs in queried.items() if p not in before for q in qs)
    assert report["rows_written"] == report["tap"]["rows"]
    assert_same_rows(out, file_lake / "cf_link", "cntr")


@pytest.mark.slow
def test_queries_in_flight_are_bounded(tap_service, local_client, tmp_path):
    """With tap_concurrency 1 and two workers, no two queries ever overlap on the service."""
    report = harvest(tap_service, "cf_link", tmp_path / "cf_link", local_client, tap_chunk_rows=8000,
                     tap_concurrency=1)
    queries = [q for i in report["inputs"] for q in i["queries"] if q["kind"] != "failed"]
    spans = sorted((q["started"], q["started"] + q["seconds"]) for q in queries)
    assert len(spans) >= 8
    assert all(a_end <= b_start + 0.05 for (_, a_end), (b_start, _) in zip(spans, spans[1:], strict=False))
