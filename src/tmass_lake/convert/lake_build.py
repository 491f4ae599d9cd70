"""The whole Extended Mission in one lake: pipelines, one Dask client, completion records, a manifest.

Layout of the lake::

    LAKE/<table>/          a HATS collection (positional tables: catalog, margin, indexes)
                           or a plain Parquet dataset (tables without positions)
    LAKE/<x>_lightcurves/  light curves of each merged-source table <x>_info (a HATS collection)
    LAKE/manifest.json     every table: schema, counts, inputs with sha256, tools, parameters
    LAKE/report/           report.txt, report.json, sky coverage and partition-order PNGs
    LAKE/_lake/            completion records: one per built table and per pipeline
    LAKE/_build/           scratch while a build runs (or under --tmp-dir)

An input root may be a TAP service (``tap+https://irsa.ipac.caltech.edu/TAP``): each table it
serves is harvested from it (:mod:`~tmass_lake.convert.harvest`), the others are skipped.
Building into an existing lake adds what is missing: a table already built from the same inputs
(same size and mtime/ETag) and parameters is up to date and skipped; one whose inputs or
parameters changed is an error naming what changed, until ``--rebuild TABLE`` rebuilds it, and
with it, in the same run, what derives from it (6x catalogs, light-curve collections, the
manifest): each derived table records the build id of every lake table it was made from, and is
rebuilt when one of them was. ``--resume`` continues tables whose build was interrupted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from dask.distributed import Client

from tmass_lake.convert.derive import DeriveArguments, derive_catalog
from tmass_lake.convert.lightcurves import LightCurveArguments, build_light_curves
from tmass_lake.convert.lock import BuildLock
from tmass_lake.convert.manifest import table_entry, write_manifest
from tmass_lake.convert.parameters import scratch_url, table_arguments
from tmass_lake.convert.pipelines import DerivedSpec, LightCurveSpec, Pipeline, TableSpec
from tmass_lake.convert.report import write_lake_report, write_lake_summaries
from tmass_lake.convert.resume import Records
from tmass_lake.convert.scratch import remove_inside
from tmass_lake.convert.table import build_table
from tmass_lake.errors import BuildError, did_you_mean
from tmass_lake.lake.lightcurves import info_tables
from tmass_lake.readers import inputs_under_root, is_tap
from tmass_lake.readers.tap import served_table
from tmass_lake.schema import load_schema
from tmass_lake.storage import filesystem, identity, join

log = logging.getLogger(__name__)

STATE_DIR = "_lake"


class LakeError(BuildError):
    """The lake cannot be built as asked; the message says why."""


@dataclass(frozen=True)
class LakeArguments:
    """A lake build: which pipelines, from which input roots, into which lake."""

    pipelines: tuple[Pipeline, ...]
    input_roots: tuple[str, ...]
    output: str
    tmp_dir: str | None = None
    storage_options: dict = field(default_factory=dict)
    resume: bool = False
    rebuild: tuple[str, ...] = ()
    progress: bool = True
    tables: tuple[str, ...] | None = None  # restrict the build to these names
    report_plots: bool = True
    catalog_summaries: bool = False  # hats' README.md/index.html per collection: ~10 s each, on request
    index_rows_per_file: int = 5_000_000
    echo: Callable[[str], None] = print

    def __post_init__(self) -> None:
        if not self.input_roots:
            raise LakeError("no input root")
        known = {n for p in self.pipelines for n in p.names}
        for what, names in (("tables", self.tables or ()), ("--rebuild", self.rebuild)):
            unknown = sorted(set(names) - known)
            if unknown:
                raise LakeError(f"{what}: {', '.join(unknown)} in no pipeline given"
                                + did_you_mean(unknown[0], known))

    def wanted(self, name: str) -> bool:
        return self.tables is None or name in self.tables

    @property
    def scratch(self) -> str:
        return scratch_url(self.output, self.tmp_dir)


def resolve_inputs(spec: TableSpec, roots: tuple[str, ...], storage_options: dict) -> list[str]:
    """Input files of a table: each pattern under each root, inside that root; a TAP root serving
    the table is its input (the harvest splits it into chunks)."""
    found = []
    for root in roots:
        if is_tap(root):
            found += [root] if served_table(root, spec.name) else []
            continue
        found += [f for pattern in spec.patterns() for f in inputs_under_root(root, pattern, storage_options)]
    return list(dict.fromkeys(found))


def input_identities(inputs: list[str], storage_options: dict) -> list[dict]:
    out = []
    for url in inputs:
        if is_tap(url):  # a service has no size or mtime; its rows are checked chunk by chunk
            out.append({"path": url})
            continue
        fs, path = filesystem(url, storage_options)
        out.append({"path": url, **identity(fs, path)})
    return out


def _changes(before: dict, now: dict) -> list[str]:
    """What differs between two fingerprints, in words."""
    old_p, new_p = before.get("parameters", {}), now.get("parameters", {})
    out = [f"parameter {k}" for k in sorted(set(old_p) | set(new_p)) if old_p.get(k) != new_p.get(k)]
    old = {i["path"]: i for i in before.get("inputs", [])}
    new = {i["path"]: i for i in now.get("inputs", [])}
    out += [f"input {p} is new" for p in sorted(set(new) - set(old))]
    out += [f"input {p} is gone" for p in sorted(set(old) - set(new))]
    out += [f"input {p} changed" for p in sorted(set(old) & set(new)) if old[p] != new[p]]
    for key in sorted((set(before) | set(now)) - {"parameters", "inputs"}):
        if before.get(key) != now.get(key):
            out.append(key)
    return out


class LakeBuild:
    """One run of :func:`build_lake`: the state, the client, what was built and skipped."""

    def __init__(self, args: LakeArguments, client: Client):
        self.args, self.client = args, client
        self.state = Records(join(args.output, STATE_DIR), args.storage_options)
        self.skipped: dict[str, str] = {}
        self.no_input: list[str] = []
        self.built: set[str] = set()

    def _up_to_date(self, name: str, fingerprint: dict, head: str, follows_sources: bool = False,
                    sources: dict[str, str] | None = None) -> bool:
        """Whether ``name`` is built from exactly this; refuse a changed one unless rebuilding it (or,
        ``follows_sources``: a collection made only from lake tables, rebuild it when they changed).
        ``sources``: the build ids of the lake tables ``name`` is made from; it is rebuilt when
        it was made from other builds of them (one was rebuilt)."""
        entry = self.state.get("tables", name)
        if entry is None:
            return False
        changed = _changes(entry.get("fingerprint", {}), fingerprint)
        made_from = entry.get("sources") or {}
        stale = sorted(t for t, build in (sources or {}).items() if made_from.get(t) != build)
        if name in self.args.rebuild or stale or (changed and follows_sources):
            why = (f" ({', '.join(changed)} changed)" if changed and follows_sources or not stale
                   else f" ({', '.join(stale)} rebuilt)")
            self.args.echo(f"{head}: rebuilding" + ("" if name in self.args.rebuild else why))
            remove_inside(join(self.args.output, name), self.args.output, self.args.storage_options)
            return False
        if changed:
            raise LakeError(f"{name} in {self.args.output} was built from other inputs or parameters "
                            f"({'; '.join(changed[:3])}{'; ...' if len(changed) > 3 else ''}): "
                            f"pass --rebuild {name} to rebuild it")
        self.args.echo(f"{head}: up to date, skipped")
        return True

    def table(self, spec: TableSpec, inputs: list[str], head: str) -> None:
        args = self.args
        if not inputs:
            self.no_input.append(spec.name)
            self.skipped[spec.name] = f"no input files match {spec.patterns()} under {list(args.input_roots)}"
            return
        fingerprint = {"schema": spec.schema, "parameters": spec.parameters(),
                       "inputs": input_identities(inputs, args.storage_options)}
        if self._up_to_date(spec.name, fingerprint, head):
            return
        schema = spec.load_schema()
        kind = "collection" if schema.positional else "parquet"
        source = inputs[0] if is_tap(inputs[0]) else f"{len(inputs)} file(s)"
        log.info("%s: building %s from %s", head, kind, source)  # the result is its line
        started = time.time()
        table_args = table_arguments(
            schema, inputs, join(args.output, spec.name), params=spec.params, tmp_dir=args.scratch,
            indexes=spec.indexes, storage_options=args.storage_options, resume=args.resume,
            progress=args.progress)
        try:
            report = build_table(table_args, self.client, index_rows_per_file=args.index_rows_per_file)
        except BuildError as e:
            raise LakeError(f"{spec.name}: {e}") from e
        entry = table_entry(report, name=spec.name, family=spec.family, schema=schema,
                            parameters=spec.parameters(), fingerprint=fingerprint,
                            seconds=time.time() - started)
        self.state.put("tables", spec.name, entry)
        self.built.add(spec.name)
        layout = (f"{entry['partitions']} partition(s), {len(entry.get('indexes') or {})} index(es)"
                  if kind == "collection" else f"{entry['partitions']} file(s)")
        args.echo(f"{head}: {kind} from {source}: {entry['rows']:,} rows, {entry['rows_quarantined']:,} "
                  f"quarantined, {layout} ({entry['lake_seconds']:.1f} s)")

    def derived(self, spec: DerivedSpec, head: str) -> None:
        args = self.args
        source = self.state.get("tables", spec.source)
        if source is None or source.get("type") != "collection":
            self.skipped[spec.name] = f"its source {spec.source} is not built"
            args.echo(f"{head}: source {spec.source} not built, skipped")
            return
        fingerprint = {"source": source.get("fingerprint"), "where": [spec.column, spec.equals],
                       "parameters": {"indexes": list(spec.indexes)}}
        sources = {spec.source: source.get("build_id", "")}
        if self._up_to_date(spec.name, fingerprint, head, sources=sources):
            return
        log.info("%s: deriving from %s where %s == %r", head, spec.source, spec.column, spec.equals)
        started = time.time()
        schema = load_schema(source["schema"]["name"])
        output = join(args.output, spec.name)
        derive_args = DeriveArguments(
            name=spec.name, title=spec.title, schema=schema, source=join(args.output, spec.source),
            output=output, scratch=scratch_url(output, args.scratch), column=spec.column, value=spec.equals,
            indexes=spec.indexes, storage_options=args.storage_options,
            compression_level=source["parameters"].get("compression_level", 3), resume=args.resume,
            progress=args.progress)
        try:
            report = derive_catalog(derive_args, self.client, index_rows_per_file=args.index_rows_per_file)
        except BuildError as e:
            raise LakeError(f"{spec.name}: {e}") from e
        report["title"] = spec.title
        report["columns"] = source.get("columns")  # the source's columns, input-only ones included
        entry = table_entry(report, name=spec.name, family=spec.family, schema=schema,
                            parameters={"source": spec.source, "where": report["where"],
                                        "indexes": list(spec.indexes)},
                            fingerprint=fingerprint, seconds=time.time() - started,
                            derived_from={"table": spec.source,
                                          "where": {"column": spec.column, "equals": spec.equals}},
                            sources=sources)
        self.state.put("tables", spec.name, entry)
        self.built.add(spec.name)
        args.echo(f"{head}: derived from {spec.source} where {spec.column} == {spec.equals!r}: "
                  f"{entry['rows']:,} rows in {entry['partitions']} partition(s) "
                  f"({entry['lake_seconds']:.1f} s)")


    def lightcurves(self, spec: LightCurveSpec, head: str) -> None:
        args = self.args
        tables = info_tables(spec.info)
        built = {t: self.state.get("tables", t) for t in (tables.info, tables.detections, tables.link) if t}
        missing = [t for t in (tables.info, tables.detections) if built.get(t) is None]
        if missing:
            self.skipped[spec.name] = f"{' and '.join(missing)} not built"
            args.echo(f"{head}: {' and '.join(missing)} not built, skipped")
            return
        fingerprint = {t: e.get("fingerprint") for t, e in built.items() if e is not None}
        sources = {t: e.get("build_id", "") for t, e in built.items() if e is not None}
        if self._up_to_date(spec.name, fingerprint, head, follows_sources=True, sources=sources):
            return
        log.info("%s: nesting %s under %s", head, tables.detections, tables.info)
        started = time.time()
        output = join(args.output, spec.name)
        lc_args = LightCurveArguments(
            info=spec.info, lake=args.output, output=output, scratch=scratch_url(output, args.scratch),
            name=spec.name, storage_options=args.storage_options, resume=args.resume, progress=args.progress,
            compression_level=built[tables.info]["parameters"].get("compression_level", 3),
            index_rows_per_file=args.index_rows_per_file)
        try:
            report = build_light_curves(lc_args, self.client)
        except BuildError as e:
            raise LakeError(f"{spec.name}: {e}") from e
        entry = table_entry(report, name=spec.name, family=spec.family, schema=load_schema(tables.info),
                            parameters={"links": report["link_table"]}, fingerprint=fingerprint,
                            seconds=time.time() - started,
                            derived_from={"table": tables.info, "detections": tables.detections,
                                          "links": report["link_table"]}, sources=sources)
        entry |= {"detections": report["detections"], "links_missing": report["links_missing"]}
        self.state.put("tables", spec.name, entry)
        self.built.add(spec.name)
        lost = f", {report['links_missing']:,} links without a detection" if report["links_missing"] else ""
        args.echo(f"{head}: {tables.detections} nested under {tables.info}: {entry['rows']:,} light curves, "
                  f"{report['detections']:,} detections{lost} ({entry['lake_seconds']:.1f} s)")


def _joined(spec: LightCurveSpec) -> tuple[str | None, ...]:
    """The lake tables a light-curve collection is made from."""
    tables = info_tables(spec.info)
    return tables.info, tables.detections, tables.link


def build_lake(args: LakeArguments, client: Client) -> dict:
    """Build every table of the pipelines into the lake; returns the manifest."""
    started = time.time()
    run = LakeBuild(args, client)
    echo = args.echo
    specs = [t for p in args.pipelines for t in p.tables if args.wanted(t.name)]
    rebuilt = set(args.rebuild)  # what derives from a rebuilt table is rebuilt with it, --tables or not
    derived = [d for p in args.pipelines for d in p.derived if args.wanted(d.name) or d.source in rebuilt]
    rebuilt |= {d.name for d in derived if d.source in rebuilt}
    curves = [c for p in args.pipelines for c in p.lightcurves
              if args.wanted(c.name) or rebuilt & {t for t in _joined(c) if t}]
    total = len(specs) + len(derived) + len(curves)
    # every table's inputs first: a pattern or link leading out of its root stops the build before it writes
    inputs = {spec.name: resolve_inputs(spec, args.input_roots, args.storage_options) for spec in specs}
    with BuildLock(args.output, args.storage_options, resume=args.resume):
        for p in args.pipelines:
            run.state.put("pipelines", p.name, {
                "name": p.name, "description": p.description, "file": p.path, "sha256": p.sha256,
                "tables": [t.name for t in p.tables], "derived": [d.name for d in p.derived],
                "lightcurves": [c.name for c in p.lightcurves]})
        for n, spec in enumerate(specs, start=1):
            run.table(spec, inputs[spec.name], f"[{n}/{total}] {spec.name}")
        for n, spec in enumerate(derived, start=len(specs) + 1):
            run.derived(spec, f"[{n}/{total}] {spec.name}")
        for n, spec in enumerate(curves, start=len(specs) + len(derived) + 1):
            run.lightcurves(spec, f"[{n}/{total}] {spec.name}")
        if run.no_input:
            echo(f"no input files for {len(run.no_input)} table(s) under {', '.join(args.input_roots)}, "
                 f"skipped: {', '.join(run.no_input)}")
        summary = {"pipelines": [p.path for p in args.pipelines], "input_roots": list(args.input_roots),
                   "tables": list(args.tables) if args.tables else None, "resume": args.resume,
                   "rebuild": list(args.rebuild), "built": sorted(run.built),
                   "workers": len(client.scheduler_info().get("workers", {})),
                   "seconds": round(time.time() - started, 3)}
        manifest = write_manifest(args.output, run.state.all("tables"), run.state.all("pipelines"),
                                  run.skipped, summary, args.storage_options)
        write_lake_report(args.output, manifest, args.storage_options, plots=args.report_plots, client=client,
                          replot=run.built, echo=echo if args.progress else None)
        if args.catalog_summaries:
            write_lake_summaries(args.output, manifest, client, args.storage_options,
                                 echo=echo if args.progress else None)
        fs, scratch = filesystem(args.scratch, args.storage_options)
        if fs.exists(scratch) and not fs.ls(scratch):
            fs.rm(scratch, recursive=True)
    totals = manifest["totals"]
    echo(f"{args.output}: a lake of {totals['tables']} tables, {totals['rows']:,} rows "
         f"({time.time() - started:.1f} s); manifest.json and report/ written")
    return manifest
