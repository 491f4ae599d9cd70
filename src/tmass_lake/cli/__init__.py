"""The ``tmass-lake`` command line: every subcommand and its flag helpers.

A mistake the user can fix (bad input, a taken output, a changed file, a mistyped name) is one
line on stderr and exit status 2; an internal error keeps its traceback and exits 1;
``--verbose`` adds the log.

The parsers (:mod:`tmass_lake.cli.parsers`) import nothing heavy; the module implementing a
subcommand (:mod:`~tmass_lake.cli.build`, :mod:`~tmass_lake.cli.query`...) is imported only when
it runs, so ``--help`` and argument errors answer in a fraction of a second.
"""

from __future__ import annotations

import argparse
import logging
import sys
from importlib import import_module

from tmass_lake.cli.parsers import build_parser
from tmass_lake.errors import UserError

__all__ = ["build_parser", "main"]


def user_errors() -> tuple[type[BaseException], ...]:
    """The exceptions printed as one line (exit 2): ours and the storage layer's."""
    storage = import_module("tmass_lake.storage")  # fsspec: loaded once a command runs
    return UserError, storage.StorageError, argparse.ArgumentTypeError


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    ns.verbose = getattr(ns, "verbose", False)
    ns.quiet = getattr(ns, "quiet", False) and not ns.verbose
    logging.basicConfig(level=logging.INFO if ns.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    module, _, function = ns.run.partition(":")
    try:
        run = getattr(import_module(module), function)
        if not ns.verbose:  # after the import: importing distributed sets its own level (INFO)
            logging.getLogger("distributed").setLevel(logging.WARNING)
        return run(ns)
    except user_errors() as e:
        print(f"tmass-lake: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tmass-lake: interrupted (a build continues with --resume)", file=sys.stderr)
        return 130
