"""Every subcommand's flags, help and argument checks: the light half of the command line.

This module imports nothing heavy (no Dask, lsdb, hats, pyarrow), so that ``tmass-lake --help``
and a mistyped flag answer at once. Each subcommand names its implementation
(``run="tmass_lake.cli.query:cmd_crossmatch"``), which :func:`tmass_lake.cli.main` imports only
when that command runs.
"""

from __future__ import annotations

import argparse
from importlib.metadata import PackageNotFoundError, version
from importlib.resources import files
from typing import NoReturn

INPUT_FORMATS = ("auto", "bulk", "ipac", "votable", "csv", "parquet")
"""``build --format`` choices (the readers' formats, kept equal by tests/test_cli.py)."""
ALL = "all"
PIPELINE_PACKAGE = "tmass_lake.pipelines"
SCHEMA_PACKAGE = "tmass_lake.schemas"
PRODUCTS = ("survey", "6x", "calibration", "calibration_sc")
REFERENCES = ("gaia_dr3", "allwise")


class Parser(argparse.ArgumentParser):
    """An argument parser whose mistakes are one line (``tmass-lake CMD: error: ...``), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def packaged(package: str, suffix: str) -> list[str]:
    """Names of the files ending in ``suffix`` shipped in ``package`` (families, schemas)."""
    return sorted(p.name[: -len(suffix)] for p in files(package).iterdir() if p.name.endswith(suffix))


def positive(kind: type) -> object:
    """An argparse type: a number of ``kind`` greater than zero."""
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be greater than 0")
        return value
    parse.__name__ = f"positive {kind.__name__}"
    return parse


def package_version() -> str:
    try:
        return version("tmass-lake")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


# --- flags several subcommands share ----------------------------------------------------------

def common_flags() -> argparse.ArgumentParser:
    """``-v``/``-q``, accepted before and after the subcommand."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="say more: the log (INFO), and tracebacks of internal errors")
    p.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                   help="no progress bars or stage lines: only results, warnings and errors")
    return p


def add_storage_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage-option", action="append", metavar="KEY=VALUE",
                   help="fsspec option for every URL (repeatable; JSON values allowed); credentials "
                        "are better left to the environment (AWS_PROFILE, ...)")


def add_cluster(p: argparse.ArgumentParser, *, memory: bool = True) -> None:
    g = p.add_argument_group("Dask cluster",
                             "Small work runs on threads in this process, larger work on a local "
                             "cluster of one worker process per core; these flags decide instead.")
    g.add_argument("--scheduler", metavar="ADDRESS|processes|threads",
                   help="an existing dask.distributed scheduler (tcp://HOST:8786), or the kind of "
                        "local cluster (default: chosen by the size of the data)")
    g.add_argument("--workers", type=positive(int), metavar="N",
                   help="local workers (processes, or threads with --scheduler threads; default: cores)")
    if memory:
        g.add_argument("--memory-limit", default="4GiB", metavar="SIZE",
                       help="memory per local worker (default 4GiB)")
    g.add_argument("--dashboard", nargs="?", const=":8787", default=None, metavar="ADDRESS",
                   help="serve Dask's dashboard on the local cluster (default address :8787; :0 for "
                        "any free port) and print its URL")


PARAMETER_FLAGS = {  # flag -> (BuildParameters field, type, metavar, help)
    "--format": ("input_format", str, None, "input format (default auto: each file as it looks)"),
    "--pixel-threshold": ("pixel_threshold", int, "ROWS", "rows per partition at most (default 1,000,000)"),
    "--byte-threshold": ("byte_threshold", int, "BYTES",
                         "in-memory bytes per partition at most (default 512 MiB)"),
    "--lowest-order": ("lowest_order", int, "ORDER", "coarsest HEALPix order of a partition (default 0)"),
    "--highest-order": ("highest_order", int, "ORDER", "finest HEALPix order of a partition (default 10)"),
    "--margin-arcsec": ("margin_arcsec", float, "ARCSEC", "margin cache radius (default 10)"),
    "--run-bytes": ("run_bytes", int, "BYTES", "spill-run size (default: from the workers' memory limit)"),
    "--max-line-bytes": ("max_line_bytes", int, "BYTES", "a longer input line is quarantined by its first "
                         "bytes and length, never held whole (default 16 MiB)"),
    "--compression-level": ("compression_level", int, "LEVEL", "zstd level of data files (default 3)"),
    "--where": ("where", str, "ADQL", "TAP input: ADQL condition the harvested rows meet"),
    "--tap-key": ("tap_key", str, "COLUMN",
                  "TAP input: integer column to split the harvest on (default: the key)"),
    "--tap-table": ("tap_table", str, "SCHEMA.NAME",
                    "TAP input: the service's full table name (default: found by the table's name)"),
    "--tap-chunk-rows": ("tap_chunk_rows", int, "ROWS",
                         "TAP input: rows per chunk query (default 1,000,000)"),
    "--tap-concurrency": ("tap_concurrency", int, "N",
                          "TAP input: queries in flight on the service (default 4)"),
    "--tap-sync-rows": ("tap_sync_rows", int, "ROWS",
                        "TAP input: larger chunks run as async jobs (default 100,000)"),
    "--tap-retries": ("tap_retries", int, "N", "TAP input: retries of a failing query (default 5)"),
    "--tap-backoff": ("tap_backoff", float, "SECONDS", "TAP input: first wait between retries (default 1)"),
    "--tap-timeout": ("tap_timeout", float, "SECONDS", "TAP input: wait for one answer (default 3600)"),
}


def add_build_parameters(p: argparse.ArgumentParser) -> None:
    """The build parameters as flags; a flag not given leaves the pipeline's or default value."""
    g = p.add_argument_group("build parameters", "A flag given overrides the pipeline's value.")
    for flag, (dest, kind, metavar, help_) in PARAMETER_FLAGS.items():
        extra = {"choices": INPUT_FORMATS} if dest == "input_format" else {"metavar": metavar}
        g.add_argument(flag, dest=f"param_{dest}", type=kind, default=None, help=help_, **extra)
    g.add_argument("--allow-duplicate-content", dest="param_allow_duplicate_content",
                   action="store_const", const=True, default=None,
                   help="build inputs even when two have the same bytes")
    g.add_argument("--strict-layout", dest="param_strict_layout", action="store_const", const=True,
                   default=None, help="inputs with a header must have exactly the schema's columns "
                                      "(default: their own layout, drift reported)")


# --- the subcommands --------------------------------------------------------------------------

def add_command(sub: argparse._SubParsersAction, name: str, run: str, help_: str,
                description: str) -> argparse.ArgumentParser:
    """A subcommand that runs ``run`` (``module:function``), with ``-v``/``-q``."""
    p = sub.add_parser(name, help=help_, description=description, parents=[common_flags()])
    p.set_defaults(run=run)
    return p


def register_mock(sub: argparse._SubParsersAction) -> None:
    m = add_command(sub, "mock", "tmass_lake.cli.mock:cmd_mock",
                    "write a deterministic mock Extended Mission in IRSA's format",
                    "Write mock 2MASS Extended Mission working databases as IRSA bulk files "
                    "(OUT/irsa/<table>/*.gz), their truth and the mock Gaia DR3 and AllWISE "
                    "reference catalogues; the same seed and scale give the same bytes.")
    m.add_argument("out", metavar="OUT", help="output directory or URL")
    m.add_argument("--scale", type=positive(float), default=1.0,
                   help="1.0 ~ 1.1 million working-database rows, 2.1 million in all (default 1)")
    m.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    m.add_argument("--tables", nargs="*", choices=packaged(SCHEMA_PACKAGE, ".yaml"), default=None,
                   metavar="TABLE", help="only these tables (default: all but fp_psc and fp_xsc)")
    m.add_argument("--workers", type=positive(int), default=None, metavar="N",
                   help="local worker processes (default: cores)")
    m.add_argument("--overwrite", action="store_true",
                   help="replace an existing mock at OUT whole (without it an existing, non-empty OUT is "
                        "refused; a directory tmass-lake did not write is never removed)")
    add_storage_option(m)


def register_demo(sub: argparse._SubParsersAction) -> None:
    d = add_command(sub, "demo", "tmass_lake.cli.mock:cmd_demo",
                    "mock data, a whole lake, a crossmatch and light curves, end to end",
                    "Generate the mock, build every pipeline into OUT/lake, crossmatch the 6x "
                    "detections with the mock Gaia DR3, build calibration light curves, plot one, "
                    "and print a summary. OUT must be missing, empty, or a previous demo's output: a "
                    "previous demo's mock/, lake/ and light-curve plot are replaced; a directory "
                    "holding anything else (anything the demo did not write) is refused and nothing "
                    "in it is touched.")
    d.add_argument("out", nargs="?", default="demo-output", metavar="OUT",
                   help="output directory (default demo-output); refused if it holds files the demo "
                        "did not write")
    d.add_argument("--scale", type=positive(float), default=0.05,
                   help="mock size, 1.0 ~ 2.1 million rows (default 0.05)")
    d.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    d.add_argument("--workers", type=positive(int), default=None, metavar="N",
                   help="local worker processes (default: cores)")
    d.add_argument("--dashboard", nargs="?", const=":8787", default=None, metavar="ADDRESS",
                   help="serve Dask's dashboard (default address :8787) and print its URL")


def register_build(sub: argparse._SubParsersAction) -> None:
    families = [ALL, *packaged(PIPELINE_PACKAGE, ".toml")]
    b = add_command(sub, "build", "tmass_lake.cli.build:cmd_build",
                    "convert IRSA inputs into HATS: a table, a family, or every family",
                    "Build one table (--table NAME) or pipelines (a family name, 'all', or pipeline "
                    "files) into a lake. Every input row ends in the lake or its quarantine; "
                    "--resume continues an interrupted build.")
    b.add_argument("pipeline", nargs="?", metavar="PIPELINE",
                   help=f"{', '.join(families)}, a pipeline .toml file or a folder of them")
    b.add_argument("--table", metavar="NAME",
                   help="single-table build: IRSA table name or a schema YAML file")
    b.add_argument("--input", required=True, nargs="+", metavar="URL",
                   help="--table: files, globs or directories; pipelines: input roots (fsspec URLs)")
    b.add_argument("--output", required=True, metavar="URL", help="collection (--table) or lake URL")
    b.add_argument("--index", nargs="+", metavar="COLUMN",
                   help="--table: index the catalog on these columns (default: the table's key, as a "
                        "lake build does)")
    b.add_argument("--no-index", action="store_true", help="--table: write no index")
    b.add_argument("--tables", nargs="+", metavar="NAME", help="pipelines: build only these tables")
    b.add_argument("--rebuild", nargs="+", metavar="NAME", help="pipelines: rebuild these built tables")
    b.add_argument("--tmp-dir", metavar="URL", help="scratch space, any fsspec URL every worker reaches "
                                                    "(default: OUTPUT/_build)")
    b.add_argument("--resume", action="store_true", help="continue an interrupted build")
    b.add_argument("--catalog-summaries", action="store_true",
                   help="also write hats' catalog summaries (README.md, index.html) of every collection, "
                        "margin and index (~10 s per collection)")
    add_build_parameters(b)
    add_cluster(b)
    add_storage_option(b)


def register_inspect(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "inspect", "tmass_lake.cli.inspect:cmd_inspect",
                    "profile input files and line them up with a schema",
                    "Report what input files look like: for headerless bulk files the field counts "
                    "and, per position, type, range and a sample, lined up with a schema; for files "
                    "with a header, how their names match it.")
    p.add_argument("files", nargs="+", metavar="FILE", help="input files, globs or directories (fsspec URLs)")
    p.add_argument("--table", metavar="NAME",
                   help="IRSA table name or schema YAML file to line the files up with")
    p.add_argument("--write-schema", metavar="OUT.yaml", help="write the proposed layout as a schema file "
                   "(an existing file is refused unless --overwrite; an input file always)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --write-schema file")
    p.add_argument("--sample", type=positive(int), default=20_000, metavar="LINES",
                   help="lines read from each bulk file (default 20,000)")
    add_storage_option(p)


def register_schema(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("schema", help="table schemas: pull one from a TAP service",
                       description="Table schemas: 'tmass-lake schema pull' reads a table's layout "
                                   "from a TAP service.", parents=[common_flags()])
    ssub = s.add_subparsers(dest="schema_command", required=True, metavar="ACTION")
    p = add_command(ssub, "pull", "tmass_lake.cli.schema:cmd_pull",
                    "a table's columns from a TAP service's TAP_SCHEMA, merged with ours",
                    "Read TAP_SCHEMA.columns of a table (order, types, units, UCDs, descriptions, "
                    "principal/indexed flags), merge it with our schema (the service's layout; our "
                    "names, aliases, types and words where a column matches by name or alias; each "
                    "column says where each fact came from) and print the drift between them.")
    p.add_argument("--tap", required=True, metavar="URL", help="the service (tap+https://HOST/PATH)")
    p.add_argument("--table", required=True, metavar="NAME",
                   help="IRSA table name (or our schema YAML to compare with)")
    p.add_argument("--tap-table", metavar="SCHEMA.NAME",
                   help="the service's full name of the table (default: found by --table's name)")
    p.add_argument("--output", metavar="YAML", help="write the merged schema here (e.g. schemas/NAME.yaml)")
    p.add_argument("--report", metavar="JSON", help="write the drift report here")


def register_lake(sub: argparse._SubParsersAction) -> None:
    i = add_command(sub, "info", "tmass_lake.cli.lake:cmd_info", "print a lake's manifest",
                    "Print what a lake's manifest.json says: its pipelines, one line per table "
                    "(rows, quarantined, partitions, schema, indexes), totals and tool versions.")
    i.add_argument("lake", metavar="LAKE", help="lake URL")
    i.add_argument("--json", action="store_true", help="the whole manifest as JSON")
    add_storage_option(i)
    v = add_command(sub, "verify", "tmass_lake.cli.verify:cmd_verify",
                    "re-run a lake's validations against its manifest",
                    "Re-check every table of a lake: HATS strict validation, and the rows of the data "
                    "files, _metadata, margins, indexes and quarantine against the manifest. Exit "
                    "status 1 if any table fails.")
    v.add_argument("lake", metavar="LAKE", help="lake URL")
    add_storage_option(v)


def output_flags(p: argparse.ArgumentParser, default_format: str) -> None:
    p.add_argument("--format", choices=["hats", "parquet"], default=None,
                   help=f"output format (default: {default_format})")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing OUTPUT whole (without it an existing OUTPUT is refused; a "
                        "directory tmass-lake did not write is never removed)")
    add_cluster(p)
    add_storage_option(p)


def register_query(sub: argparse._SubParsersAction) -> None:
    x = add_command(sub, "crossmatch", "tmass_lake.cli.query:cmd_crossmatch",
                    "epoch-aware crossmatch of a lake table with Gaia DR3, AllWISE or any HATS catalogue",
                    "Match a lake table's detections with a reference catalogue, moving the "
                    "reference stars by their proper motions to each detection's epoch (--plain: "
                    "lsdb's positional match), and write the matches.")
    x.add_argument("--lake", required=True, metavar="URL", help="lake root URL")
    x.add_argument("--table", required=True, metavar="NAME",
                   help="lake table, e.g. pt_src_6x2 or pt_src_6x2_cat (the 6x Catalog rows)")
    x.add_argument("--with", dest="with_", required=True, metavar="REFERENCE",
                   help=f"reference catalogue: {' or '.join(REFERENCES)} (the lake's copy, else the "
                        "public LSDB copy over the network) or a path/URL")
    x.add_argument("--radius", type=positive(float), default=1.0, metavar="ARCSEC",
                   help="match radius, arcsec (default 1)")
    x.add_argument("--output", required=True, metavar="URL",
                   help="HATS catalogue directory, .parquet file, or Parquet directory (--format parquet)")
    x.add_argument("--plain", action="store_true", help="positional match only (lsdb's default)")
    x.add_argument("--columns", nargs="+", metavar="COLUMN", help="2MASS columns to keep (default: all)")
    x.add_argument("--n-neighbors", type=positive(int), default=1, metavar="N",
                   help="reference matches kept per detection, nearest first (default 1)")
    x.add_argument("--how", choices=["inner", "left"], default="inner",
                   help="inner: matched detections only; left: unmatched ones too (default inner)")
    x.add_argument("--max-pm", type=positive(float), default=None, metavar="MAS_PER_YR",
                   help="fastest motion (mas/yr) to allow for (default: the reference's statistics); "
                        "stars faster than the margin covers are gathered before the match")
    output_flags(x, "parquet for a .parquet OUTPUT, else hats")

    lc = add_command(sub, "lightcurves", "tmass_lake.cli.query:cmd_lightcurves",
                     "merged sources with their detections nested, plus statistics",
                     "Write a product's merged sources, each with its detections nested and its "
                     "variability and motion statistics, read from the lake's stored light-curve "
                     "collection or joined on the fly.")
    lc.add_argument("--lake", required=True, metavar="URL", help="lake root URL")
    lc.add_argument("--product", default="calibration", metavar="|".join(PRODUCTS),
                    help="which merged sources (or an alias: cal, sc...; default calibration)")
    lc.add_argument("--kind", choices=["point", "extended"], default="point",
                    help="point or extended sources (default point)")
    lc.add_argument("--output", required=True, metavar="URL",
                    help="Parquet directory or .parquet file (or HATS with --format hats)")
    lc.add_argument("--links", choices=["auto", "table", "detections"], default="auto",
                    help="membership from the link table or the detections' gcntr (default auto: the "
                         "table if stored)")
    lc.add_argument("--cone", nargs=3, type=float, metavar=("RA", "DEC", "ARCSEC"),
                    help="only merged sources in this cone")
    lc.add_argument("--no-repair", action="store_true",
                    help="skip the planning pass that restores groups spread beyond the margins")
    lc.add_argument("--join", action="store_true",
                    help="join on the fly even when the lake stores the product's light-curve collection")
    lc.add_argument("--plot", type=int, metavar="GCNTR", help="also draw this source's light curve")
    lc.add_argument("--plot-file", metavar="PNG",
                    help="PNG path (default: OUTPUT_lightcurve_<gcntr>.png, next to OUTPUT)")
    output_flags(lc, "parquet")


REGISTER = (register_mock, register_demo, register_build, register_inspect, register_schema,
            register_lake, register_query)


def build_parser() -> argparse.ArgumentParser:
    """The whole ``tmass-lake`` parser (cheap: no command's implementation is imported)."""
    p = Parser(prog="tmass-lake", parents=[common_flags()],
               description="The 2MASS Extended Mission working databases as a HATS data lake on Dask.",
               epilog="Run 'tmass-lake COMMAND --help' for a command's flags.")
    p.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in REGISTER:
        register(sub)
    return p

