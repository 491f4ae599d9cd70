"""The ``tmass-lake`` command line: every subcommand and its flag helpers.

A mistake the user can fix (bad input, a taken output, a changed file) is one line on stderr and
exit status 2; ``--verbose`` adds the log.
"""

from __future__ import annotations

import argparse
import logging
import sys

from tmass_lake.cli import build, inspect, lake, mock, query, schema
from tmass_lake.errors import UserError
from tmass_lake.storage import StorageError

COMMANDS = (mock, build, inspect, schema, lake, query)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tmass-lake",
        description="The 2MASS Extended Mission working databases as a HATS data lake on Dask.",
        epilog="Run 'tmass-lake COMMAND --help' for a command's flags.")
    p.add_argument("-v", "--verbose", action="store_true", help="log what happens (INFO level)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if ns.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not ns.verbose:
        logging.getLogger("distributed").setLevel(logging.WARNING)
    try:
        return ns.func(ns)
    except (UserError, StorageError, argparse.ArgumentTypeError) as e:
        print(f"tmass-lake: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tmass-lake: interrupted (a build continues with --resume)", file=sys.stderr)
        return 130

