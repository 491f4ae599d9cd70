"""One table build, start to finish, and the frame every build of an output runs in.

:func:`build_session` holds the output for one build: the lock, the refusal to write into an
output holding something else, the claimed scratch space and the resume plan; the scratch
space is removed when the build succeeds. :func:`build_table` runs a positional table
(catalog, margin, indexes: one HATS collection) or a table without positions (plain Parquet)
inside it and writes ``build_report.json``.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator

from dask.distributed import Client
from hats.pixel_math import HealpixPixel

from tmass_lake.convert.collection import build_collection
from tmass_lake.convert.harvest import harvest_inputs
from tmass_lake.convert.index import IndexArguments, build_indexes
from tmass_lake.convert.lock import LOCK_FILE, BuildLock
from tmass_lake.convert.parameters import TableArguments, run_bytes_for
from tmass_lake.convert.parquet_table import build_parquet_table
from tmass_lake.convert.resume import ResumePlan
from tmass_lake.convert.scratch import Scratch
from tmass_lake.convert.writer import write_collection_properties
from tmass_lake.errors import BuildError
from tmass_lake.storage import filesystem, join, url_of, write_json

REPORT_FILE = "build_report.json"


def _entries(url: str, storage_options: dict) -> list[str]:
    fs, root = filesystem(url, storage_options)
    try:
        return [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False)]
    except FileNotFoundError:
        return []


FINISHED_MARKS = {"collection.properties", "hats.properties", "table.properties"}
"""Files a finished build leaves at the top of its output (a collection, a catalog, a Parquet table)."""


def _exists(url: str, storage_options: dict) -> bool:
    fs, path = filesystem(url, storage_options)
    return fs.exists(path)


@contextlib.contextmanager
def build_session(output: str, scratch: str, fingerprint: dict, *, resume: bool,
                  storage_options: dict) -> Iterator[ResumePlan]:
    """Hold ``output`` for one build and give its resume plan; clean the scratch space on success.

    A new build (no ``resume``) needs an empty or missing output: anything there (an earlier
    build, an interrupted one, unrelated files) is left alone and the build refused.
    """
    with BuildLock(output, storage_options, resume=resume):
        scratch_name = scratch[len(output) + 1:] if scratch.startswith(output + "/") else None
        found = [e for e in _entries(output, storage_options) if e not in (LOCK_FILE, scratch_name)]
        if found and not resume:
            fs, root = filesystem(output, storage_options)
            held = f"{url_of(fs, root)} is not empty (it holds {', '.join(sorted(found)[:4])}" \
                   f"{', ...' if len(found) > 4 else ''})"
            if set(found) & FINISHED_MARKS:
                raise BuildError(f"{held}: it is a finished build; choose a new output, or remove it to "
                                 "build again (lakes: --rebuild TABLE)")
            raise BuildError(f"{held}: choose a new output, or pass --resume to continue an interrupted "
                             "build there")
        if resume and set(found) & FINISHED_MARKS and not _exists(scratch, storage_options):
            fs, root = filesystem(output, storage_options)
            raise BuildError(f"{url_of(fs, root)} is a finished build: there is nothing to resume; choose a "
                             "new output, or remove it to build again")
        space = Scratch(scratch, output, storage_options).claim()
        yield ResumePlan(join(scratch, "plan"), fingerprint, resume=resume, storage_options=storage_options)
        space.remove()


def fingerprint(args: TableArguments) -> dict:
    """What a resumed build must share with the one it continues."""
    return {"table": args.table, "output": args.output, "inputs": list(args.inputs),
            "columns": [f"{c.name}:{c.arrow}" for c in args.schema.columns],
            "parameters": args.params.partitioning(), "indexes": list(args.indexes)}


def worker_memory(client: Client) -> int | None:
    """The smallest memory limit among the cluster's workers (``None``: unlimited or unknown)."""
    limits = [w.get("memory_limit") or 0 for w in client.scheduler_info().get("workers", {}).values()]
    return min(limits) if limits and min(limits) > 0 else None


def write_report(output: str, report: dict, storage_options: dict) -> None:
    fs, root = filesystem(output, storage_options)
    write_json(fs, join(root, REPORT_FILE), report)


def read_report(output: str, storage_options: dict) -> dict | None:
    fs, root = filesystem(join(output, REPORT_FILE), storage_options)
    if not fs.exists(root):
        return None
    with fs.open(root, "rt") as f:
        return json.load(f)


def _finished(args: TableArguments) -> dict | None:
    """The report of a finished build of the same inputs and parameters in ``args.output`` (its
    scratch gone: nothing left to resume), or None."""
    report = read_report(args.output, args.storage_options)
    if report is None or _exists(args.scratch, args.storage_options):
        return None
    same = ([i.get("path") for i in report.get("inputs", [])] == list(args.inputs)
            and report.get("parameters") == args.params.as_dict())
    return report if same else None


def build_table(args: TableArguments, client: Client, *, index_rows_per_file: int = 5_000_000) -> dict:
    """Convert one table (a TAP input harvested first; indexed); returns the build report, also
    ``build_report.json``."""
    started = time.time()
    if args.params.run_bytes is None:
        args = args.with_params(run_bytes=run_bytes_for(worker_memory(client)))
    so = args.storage_options
    if args.resume and (done := _finished(args)) is not None:
        return done | {"already_complete": True}
    with build_session(args.output, args.scratch, fingerprint(args), resume=args.resume,
                       storage_options=so) as plan:
        args, tap = harvest_inputs(args, plan, client)
        if not args.schema.positional:
            report = build_parquet_table(args, plan, client)
        else:
            report = build_collection(args, plan, client)
            indexes = {}
            if args.indexes:
                clock = time.time()
                indexes = build_indexes(
                    IndexArguments(collection=args.output, catalog=args.table, columns=args.indexes,
                                   scratch=args.path("index"), storage_options=so,
                                   rows_per_file=index_rows_per_file,
                                   compression_level=args.params.compression_level, progress=args.progress),
                    [HealpixPixel(*p) for p in report["pixels"]], args.schema.arrow_schema(), plan,
                    client)
                report["stage_seconds"]["index"] = round(time.time() - clock, 3)
            report.pop("pixels", None)
            report["indexes"] = indexes
            write_collection_properties(
                args.output, name=args.table, title=args.schema.title,
                margins=[report["margin"]] if report["margin"] else [],
                indexes={c: i["path"] for c, i in indexes.items()}, default_index=args.schema.key_column,
                storage_options=so)
        report = {"table": args.table, "kind": "collection" if args.schema.positional else "parquet",
                  **report, "parameters": args.params.as_dict(), "seconds": round(time.time() - started, 3)}
        if tap:
            report["tap"] = tap
        write_report(args.output, report, so)
    return report
