"""The command line speaks clearly: every user mistake is one line and exit 2 (with "did you mean"
for names), internal errors keep their traceback (exit 1), help reads well, ``-q``/``-v`` go
anywhere, and ``--help`` imports nothing heavy. Speed itself is measured in benchmarks/bench_cli.py."""

from __future__ import annotations

import argparse
import subprocess
import sys
import urllib.request
from dataclasses import replace
from pathlib import Path

import lsdb
import numpy as np
import pandas as pd
import pytest

import tmass_lake.cli.parsers as parsers
from tmass_lake.cli import build_parser, main
from tmass_lake.cluster import SMALL_BYTES, choose_cluster, dashboard_url, dask_client
from tmass_lake.convert.pipelines import family_names
from tmass_lake.convert.tasks import run_tasks
from tmass_lake.errors import did_you_mean
from tmass_lake.lake.crossmatch import GAIA_DR3, PROFILES
from tmass_lake.lake.lightcurves import PRODUCT_ALIASES
from tmass_lake.readers import FORMATS
from tmass_lake.readers.diagnose import SAMPLE_LINES

HEAVY = ("dask", "distributed", "lsdb", "hats", "pyarrow", "pandas", "numba", "astropy")


# --- a tiny lake and a reference far from it ----------------------------------------------------

def _catalog(path: Path, name: str, df: pd.DataFrame) -> None:
    lsdb.from_dataframe(df, ra_column="ra", dec_column="dec", catalog_name=name, lowest_order=0,
                        highest_order=2).write_catalog(path, catalog_name=name, progress_bar=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """``lake/pt_src_6x2`` (20 detections near RA 10), ``gaia`` (20 stars 36" from them: same sky,
    no match within 1") and ``far`` (20 stars near RA 200: no common sky)."""
    root = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(1)
    n = 20
    ra, dec = 10 + rng.random(n), 5 + rng.random(n)
    _catalog(root / "lake" / "pt_src_6x2", "pt_src_6x2", pd.DataFrame({
        "cntr": np.arange(1, n + 1), "ra": ra, "dec": dec, "jdate": np.full(n, 2451200.5)}))
    for name, (r, d) in {"gaia": (ra, dec + 0.01), "far": (ra + 190, dec - 35)}.items():
        _catalog(root / name, name, pd.DataFrame({
            "source_id": np.arange(n), "ra": r, "dec": d, "pmra": np.zeros(n), "pmdec": np.zeros(n),
            "pmra_error": np.ones(n), "pmdec_error": np.ones(n), "ref_epoch": np.full(n, 2016.0)}))
    (root / "empty").mkdir()
    return {"root": root, "lake": root / "lake", "gaia": root / "gaia", "far": root / "far",
            "empty": root / "empty"}


@pytest.fixture
def fake(tmp_path) -> dict[str, Path]:
    """Directories that look like a lake with ``pt_src_6x2`` and a reference (a ``hats.properties``
    each, no data): enough for every mistake caught before a table is opened."""
    for table in ("lake/pt_src_6x2", "gaia"):
        (tmp_path / table).mkdir(parents=True)
        (tmp_path / table / "hats.properties").write_text(f"obs_collection={table.split('/')[-1]}\n")
    (tmp_path / "empty").mkdir()
    return {"root": tmp_path, "lake": tmp_path / "lake", "gaia": tmp_path / "gaia",
            "empty": tmp_path / "empty"}


def run(capsys, *argv: str) -> tuple[int, str]:
    """``main(argv)``: its exit status (argparse's too) and stderr."""
    try:
        rc = main(list(argv))
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 1
    return rc, capsys.readouterr().err


def assert_one_line(rc: int, err: str, *expected: str) -> None:
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err and lines[0].startswith("tmass-lake") and "error: " in lines[0], err
    for text in expected:
        assert text in lines[0], (text, err)


def crossmatch(tiny, *extra: str, table: str = "pt_src_6x2", with_: str | None = None,
               output: str | None = None) -> list[str]:
    return ["crossmatch", "--lake", str(tiny["lake"]), "--table", table, "--with", with_ or str(tiny["gaia"]),
            "--output", output or str(tiny["root"] / "out.parquet"), *extra]


# --- user mistakes: one line, exit 2, no traceback ------------------------------------------------

def test_mistyped_table_in_crossmatch_says_did_you_mean(fake, capsys):
    assert_one_line(*run(capsys, *crossmatch(fake, table="pt_src_6x")), "pt_src_6x", "did you mean",
                    "'pt_src_6x2'")


def test_mistyped_reference_name_says_did_you_mean(fake, capsys):
    assert_one_line(*run(capsys, *crossmatch(fake, with_="gaia_dr")), "gaia_dr", "'gaia_dr3'")


@pytest.mark.slow  # opens a real catalogue (lsdb's first from_dataframe compiles for seconds)
def test_mistyped_column_says_did_you_mean(tiny, capsys):
    assert_one_line(*run(capsys, *crossmatch(tiny, "--columns", "cntrr")), "cntrr", "'cntr'")


@pytest.mark.parametrize("url, package", [("s3://bucket/lake", "s3fs"), ("gs://bucket/lake", "gcsfs")])
def test_object_store_url_without_its_package(url, package, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, package, None)  # as if not installed: find_spec says None
    assert_one_line(*run(capsys, "info", url), url, f"pip install {package}")
    assert_one_line(*run(capsys, "build", "--table", "pt_src_6x2", "--input", f"{url}/in/*.gz",
                         "--output", "/nonexistent/out"), package)


def test_named_reference_without_a_copy_and_offline(fake, monkeypatch, capsys):
    """The lake has no gaia_dr3 and the public copy cannot be reached (a port nobody listens on)."""
    offline = replace(GAIA_DR3, url="http://127.0.0.1:9/hats/gaia_dr3")
    monkeypatch.setitem(PROFILES, "gaia_dr3", offline)
    assert_one_line(*run(capsys, *crossmatch(fake, with_="gaia_dr3")), "no copy", "public", offline.url)


def test_reference_url_that_cannot_be_read(fake, capsys):
    assert_one_line(*run(capsys, *crossmatch(fake, with_="http://127.0.0.1:9/gaia")), "127.0.0.1:9")
    assert_one_line(*run(capsys, *crossmatch(fake, with_=str(fake["root"] / "nothing" / "here"))),
                    "no HATS catalogue")


@pytest.mark.parametrize("radius", ["-1", "0", "abc"])
def test_bad_radius(fake, radius, capsys):
    assert_one_line(*run(capsys, *crossmatch(fake, "--radius", radius)), "--radius")


def test_unknown_how_and_unknown_command(fake, capsys):
    assert_one_line(*run(capsys, *crossmatch(fake, "--how", "outer")), "--how", "outer")
    assert_one_line(*run(capsys, "crossmach", "--lake", "x"), "crossmach")


def test_a_lake_that_is_not_a_lake(fake, capsys):
    assert_one_line(*run(capsys, *["crossmatch", "--lake", str(fake["empty"]), "--table", "pt_src_6x2",
                                   "--with", "gaia_dr3", "--output", "o.parquet"]), "not a tmass-lake lake")
    assert_one_line(*run(capsys, "lightcurves", "--lake", str(fake["root"] / "missing"), "--output", "o"),
                    "no lake at")
    assert_one_line(*run(capsys, "info", str(fake["empty"])), "manifest.json")
    assert_one_line(*run(capsys, "verify", str(fake["empty"])), "manifest.json")


def test_mistyped_family_product_and_schema_table(fake, capsys):
    assert_one_line(*run(capsys, "build", "6xx", "--input", str(fake["root"]), "--output", "o"), "'6x'")
    assert_one_line(*run(capsys, "build", "--table", "pt_src_6x", "--input", str(fake["root"]),
                         "--output", "o"), "did you mean", "'pt_src_6x2'")
    assert_one_line(*run(capsys, "lightcurves", "--lake", str(fake["lake"]), "--product", "calibratoin",
                         "--output", "o"), "'calibration'")


def test_missing_input_root(fake, capsys):
    assert_one_line(*run(capsys, "build", "6x", "--input", str(fake["root"] / "mokc"), "--output", "o"),
                    "mokc", "no such input root")


def test_index_column_typo(fake, capsys):
    assert_one_line(*run(capsys, "build", "--table", "pt_src_6x2", "--input", str(fake["root"]),
                         "--output", "o", "--index", "gcntrr"), "gcntrr", "'gcntr'")


@pytest.mark.slow  # may run as far as the write on a real catalogue
def test_output_exists(tiny, capsys):
    if "--overwrite" not in build_parser()._subparsers._group_actions[0].choices["crossmatch"].format_help():
        pytest.skip("crossmatch refuses an existing output once --overwrite lands (helper safeio's change)")
    out = tiny["root"] / "taken.parquet"
    out.write_bytes(b"somebody's file")
    assert_one_line(*run(capsys, *crossmatch(tiny, "--plain", output=str(out))), str(out))
    assert out.read_bytes() == b"somebody's file"


@pytest.mark.slow  # runs a crossmatch on an in-process Dask cluster
def test_empty_crossmatch_as_hats_is_one_line_and_leaves_nothing(tiny, capsys):
    out = tiny["root"] / "matches"
    assert_one_line(*run(capsys, *crossmatch(tiny, "--plain", "-q", output=str(out))), "empty",
                    "no HATS catalogue")
    assert not out.exists()  # no hists/, no done
    assert_one_line(*run(capsys, *crossmatch(tiny, "--plain", "-q", with_=str(tiny["far"]), output=str(out))),
                    "no sky in common")
    assert not out.exists()


def test_internal_errors_keep_their_traceback(monkeypatch, capsys, tmp_path):
    """A bug is not dressed as a user mistake: it propagates (Python prints it, exit 1)."""
    import tmass_lake.cli.lake as cli_lake

    def broken(ns):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(cli_lake, "cmd_info", broken)
    with pytest.raises(ZeroDivisionError):
        main(["info", str(tmp_path)])
    proc = subprocess.run([sys.executable, "-c", "import sys; from tmass_lake.cli import main; "
                           "import tmass_lake.cli.lake as m; m.cmd_info = lambda ns: 1 / 0; "
                           f"sys.exit(main(['info', {str(tmp_path)!r}]))"], capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "ZeroDivisionError" in proc.stderr


# --- conventions and help -----------------------------------------------------------------------

def subcommands() -> dict[str, argparse.ArgumentParser]:
    p = build_parser()
    found = {}
    for name, sub in p._subparsers._group_actions[0].choices.items():
        found[name] = sub
        if sub._subparsers is not None:
            found |= {f"{name} {n}": s for n, s in sub._subparsers._group_actions[0].choices.items()}
    return found


def test_help_imports_nothing_heavy():
    code = ("import sys; from tmass_lake.cli import build_parser; "
            "build_parser().parse_args(['crossmatch', '--lake', 'L', '--table', 'T', '--with', 'W', "
            "'--output', 'O']); "
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]", proc.stdout
    proc = subprocess.run([sys.executable, "-m", "tmass_lake", "crossmatch", "--help"], capture_output=True,
                          text=True, check=True)
    assert "--radius" in proc.stdout


def test_version_and_verbose_quiet_after_the_subcommand(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("tmass-lake ")
    for name, sub in subcommands().items():
        if name == "schema":
            continue
        flags = {o for a in sub._actions for o in a.option_strings}
        assert {"-v", "--verbose", "-q", "--quiet"} <= flags, name
    ns = build_parser().parse_args(["build", "6x", "--input", "x", "--output", "y", "-v", "-q"])
    assert ns.verbose and ns.quiet
    ns = build_parser().parse_args(["-v", "info", "lake"])
    assert ns.verbose and not hasattr(ns, "quiet")


def test_help_reads_well():
    for name, sub in subcommands().items():
        text = sub.format_help()
        assert sub.description, f"{name}: no description"
        assert "PARAM_" not in text and "param_" not in text, name
        for action in sub._actions:
            if action.option_strings or action.dest not in ("run", "command", "schema_command"):
                assert action.help, f"{name}: {action.option_strings or action.dest} has no help"
    helps = subcommands()
    assert "lightcurves" not in helps["crossmatch"].format_help()
    assert "{auto,bulk,ipac,votable,csv,parquet}" in helps["build"].format_help()
    assert "{inner,left}" in helps["crossmatch"].format_help()
    for name in ("build", "crossmatch", "lightcurves"):
        assert "--dashboard" in helps[name].format_help() and "--workers" in helps[name].format_help()


def test_parser_lists_equal_the_code_they_mirror():
    """The parsers cannot import the readers or the pipelines (heavy): their copies stay equal."""
    assert parsers.INPUT_FORMATS == FORMATS
    assert parsers.packaged(parsers.PIPELINE_PACKAGE, ".toml") == family_names()
    assert subcommands()["inspect"].get_default("sample") == SAMPLE_LINES
    assert set(parsers.PRODUCTS) <= set(PRODUCT_ALIASES.values()) | {"survey"}
    assert set(parsers.REFERENCES) == set(PROFILES)


def test_cluster_choice_by_size_and_flags():
    assert choose_cluster(data_bytes=10 * 2**20).kind == "threads"
    assert choose_cluster(data_bytes=SMALL_BYTES * 4).kind == "processes"
    assert choose_cluster(data_bytes=None).kind == "processes"
    assert choose_cluster(workers=3, data_bytes=1).kind == "processes"
    assert choose_cluster(workers=3, data_bytes=1).workers == 3
    assert choose_cluster("threads", data_bytes=SMALL_BYTES * 4).kind == "threads"
    assert choose_cluster("processes", 2, data_bytes=1).kind == "processes"
    picked = choose_cluster("tcp://10.0.0.1:8786", data_bytes=1)
    assert picked.kind == "address" and picked.address == "tcp://10.0.0.1:8786"


def test_did_you_mean():
    assert did_you_mean("pt_src_6x", ["pt_src_6x2", "cf_info"]) == " (did you mean 'pt_src_6x2'?)"
    assert "has: a, b" in did_you_mean("zzz", ["b", "a"])
    assert did_you_mean("x", []) == ""


# --- the cluster, the dashboard and the single-table build's index --------------------------------

@pytest.mark.slow  # starts an in-process cluster and fetches its dashboard
def test_dashboard_is_served_on_the_local_cluster():
    for address in ("127.0.0.1:0", ":0"):
        with dask_client(workers=1, processes=False, dashboard=address) as client:
            link = dashboard_url(client, address)
            assert link.startswith("http://127.0.0.1:" if address.startswith("127") else "http://")
            with urllib.request.urlopen(link, timeout=30) as page:
                assert page.status == 200


@pytest.mark.slow  # builds a table (on threads: small inputs)
def test_single_table_build_indexes_its_key_by_default(tiny_inputs, tmp_path, capsys):
    out = tmp_path / "pt"
    assert main(["build", "--table", "pt_src_6x2", "--input", str(tiny_inputs[0]), "--output", str(out),
                 "-q"]) == 0
    assert "pt_src_6x2" in capsys.readouterr().out
    props = (out / "collection.properties").read_text()
    assert "cntr" in props and (out / "pt_src_6x2_cntr_index").is_dir()
    assert lsdb.open_catalog(out).id_search(values={"cntr": 1}).compute()["cntr"].tolist() == [1]
    bare = tmp_path / "bare"
    assert main(["build", "--table", "pt_src_6x2", "--input", str(tiny_inputs[0]), "--output", str(bare),
                 "--no-index", "-q"]) == 0
    assert not list(bare.glob("*_index"))
    assert not (out / "README.md").exists()  # hats' summaries only on request
    summarised = tmp_path / "summarised"
    assert main(["build", "--table", "pt_src_6x2", "--input", str(tiny_inputs[0]), "--output",
                 str(summarised), "--catalog-summaries", "-q"]) == 0
    for catalog in (summarised, summarised / "pt_src_6x2_cntr_index"):
        assert (catalog / "README.md").read_text().lstrip().startswith("#"), catalog


@pytest.mark.slow  # runs tasks on an in-process cluster
def test_progress_bars_stay_out_of_logs_and_short_stages(capsys):
    """Bars are for a terminal and for stages that last: none in a log, none for a quick stage."""
    with dask_client(workers=1, processes=False) as client:
        assert run_tasks(client, lambda i: i * 2, list(range(5)), "map pt_src_c", progress=True) == [
            0, 2, 4, 6, 8]
    captured = capsys.readouterr()
    assert "map pt_src_c" not in captured.err + captured.out
