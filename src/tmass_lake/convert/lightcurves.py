"""Light-curve collections: each product's merged sources with their detections nested, stored.

For every merged-source table in the lake (``cf_info``, ``sixxf_info``, ``ecf_info``...) the
lake build writes ``cf_lightcurves`` (:func:`~tmass_lake.schema.light_curve_collection`): one
row per merged source (``gcntr, ra, dec, napp``), the statistics of
:mod:`tmass_lake.lake.stats`, and a nested column ``detections`` stored as a struct of lists
(one list per detection column, sorted by epoch) holding every link exactly once. It is what
``lake.light_curves(product)`` computes on the fly, written once, so reads run at Parquet speed
and sub-columns filter cheaply (the layout of IRSA's ZTF light-curve collection and Rubin's
DiaObject collection). A HATS collection like the others, written through
:mod:`~tmass_lake.convert.writer`: main catalog partitioned like the information table,
margin, ``gcntr`` index, VOParquet metadata.

Partition task: the information partition, and the candidate members from the detection
partitions overlapping it plus their margins (``gcntr`` filter pushed down to Parquet), are
finished by :meth:`~tmass_lake.lake.lightcurves.LightCurveJob.finish`, the code of the
on-the-fly join (exact links, groups spread beyond the margin restored, statistics, nesting).
Margin task: the rows of the information table's margin, read back from the written partitions
that hold them. Every step is recorded in the build's JSON resume plan.

Where the lake's link table has ``ngrp`` (Expl. Suppl. A6.3c: the number of groups each WDB
extraction is associated with), :func:`check_ngrp` first checks that every detection appears in
exactly ``ngrp`` groups (a grouped count on the cluster); a difference fails the build naming
the detection.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

import dask
import dask.dataframe as dd
import hats
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from dask.distributed import Client
from hats.pixel_math import HealpixPixel

from tmass_lake.convert.index import IndexArguments, build_indexes
from tmass_lake.convert.map import FINE_SHIFT
from tmass_lake.convert.resume import record_of
from tmass_lake.convert.table import build_session, write_report
from tmass_lake.convert.tasks import run_pixel_tasks
from tmass_lake.convert.writer import (
    HEALPIX_COLUMN,
    finish_catalog,
    finish_margin,
    margin_name,
    observation_properties,
    pixel_file,
    positional_properties,
    upath,
    write_collection_properties,
    write_partition,
)
from tmass_lake.errors import BuildError
from tmass_lake.lake.api import Lake, open_lake
from tmass_lake.lake.lightcurves import (
    EXTENDED_COLUMNS,
    POINT_COLUMNS,
    STORED_LINKS,
    STORED_THRESHOLDS,
    LightCurveJob,
    ProductTables,
    info_tables,
    light_curve_job,
    source_columns_for,
)
from tmass_lake.lake.stats import STAT_COLUMNS
from tmass_lake.schema import load_schema
from tmass_lake.storage import filesystem, join, retrying

INDEX_COLUMN = "gcntr"
MARGIN_RECORD = record_of(order=int, pixel=int, rows=int, bytes=int)
LIGHT_CURVE_RECORD = record_of(order=int, pixel=int, rows=int, bytes=int, detections=int, hist=list)
"""What the resume records of a margin and of a main partition hold."""


@dataclass(frozen=True)
class LightCurveArguments:
    """A light-curve collection: which merged-source table of which lake, written where."""

    info: str  # the merged-source table (cf_info...), built in the lake
    lake: str  # the lake URL
    output: str  # URL of the collection (LAKE/cf_lightcurves)
    scratch: str
    name: str  # the collection's name (cf_lightcurves)
    storage_options: dict = field(default_factory=dict)
    compression_level: int = 3
    resume: bool = False
    progress: bool = True
    index_rows_per_file: int = 5_000_000


@dataclass(frozen=True)
class _Task:
    """What every partition task needs."""

    job: LightCurveJob
    info_catalog: str
    output: str  # URL of the main catalog
    source_columns: tuple[str, ...]
    schema: pa.Schema
    storage_options: dict
    compression_level: int


def _read(url: str, storage_options: dict, columns: list[str] | None = None, flt=None) -> pa.Table:
    fs, path = filesystem(url, storage_options)
    return retrying(lambda: pq.read_table(path, columns=columns, filters=flt, filesystem=fs),
                    what=f"reading {url}")


def _arrow(job: LightCurveJob, base: pd.DataFrame, group: np.ndarray, flat: pa.Table) -> pa.Table:
    out, nested = job.finish(base, group, flat)
    table = pa.Table.from_pandas(out.reset_index(), preserve_index=False)
    return table.append_column(job.nested, nested)


def collection_schema(job: LightCurveJob, tables: ProductTables, source_columns: list[str]) -> pa.Schema:
    """The collection's Arrow schema, every field with its unit, UCD and description."""
    info, det = load_schema(tables.info).arrow_schema(), load_schema(tables.detections).arrow_schema()
    base = info.empty_table().select(source_columns).to_pandas(types_mapper=pd.ArrowDtype)
    base.index = pd.Index(np.zeros(0, np.int64), name=HEALPIX_COLUMN)
    flat = det.empty_table().select(list(job.det_columns))
    shape = _arrow(job, base, np.zeros(0, np.int64), flat).schema
    fields = []
    for f in shape:
        if f.name in info.names:
            f = f.with_metadata(info.field(f.name).metadata)
        elif f.name in STAT_COLUMNS:
            f = f.with_metadata(STAT_COLUMNS[f.name])
        elif f.name == job.nested:
            children = [c.with_metadata(det.field(c.name).metadata) for c in f.type]
            link = f"every link of {tables.link}" if job.links.table else "members by their gcntr"
            f = pa.field(f.name, pa.struct(children), metadata={
                "description": f"the member detections in {tables.detections} ({link}, exactly once), "
                               "sorted by jdate: one list per column"})
        fields.append(f)
    return pa.schema(fields, metadata={"table": tables.collection, "merged_sources": tables.info,
                                       "detections": tables.detections, "links": tables.link or ""})


def partition_task(task: _Task, pixel: HealpixPixel) -> dict:
    """Write one partition: the merged sources of the information partition, their light curves."""
    so = task.storage_options
    info = _read(pixel_file(task.info_catalog, pixel), so, [HEALPIX_COLUMN, *task.source_columns])
    base = info.to_pandas(types_mapper=pd.ArrowDtype).set_index(HEALPIX_COLUMN)
    gcntr = base["gcntr"].to_numpy(dtype=np.int64)
    flat = task.job.source.near(pixel, gcntr)
    group = pd.Index(gcntr).get_indexer(flat.column("gcntr").to_numpy())
    table = _arrow(task.job, base, group, flat).cast(task.schema)
    lengths = pc.list_value_length(table.column(task.job.nested).combine_chunks().field(0))
    nbytes = write_partition(table, pixel_file(task.output, pixel), compression_level=task.compression_level,
                             storage_options=so)
    fine, counts = np.unique(table.column(HEALPIX_COLUMN).to_numpy() >> FINE_SHIFT, return_counts=True)
    return {"order": pixel.order, "pixel": pixel.pixel, "rows": table.num_rows, "bytes": nbytes,
            "detections": int(pc.sum(lengths).as_py() or 0), "hist": [fine.tolist(), counts.tolist()]}


def margin_task(task: _Task, info_margin: str, margin_out: str, pixels: list[HealpixPixel],
                pixel: HealpixPixel) -> dict:
    """Write the margin of one partition: the rows of the information margin there, with their light
    curves read back from the written partitions that hold them."""
    so = task.storage_options
    near = _read(pixel_file(info_margin, pixel), so, [HEALPIX_COLUMN, "gcntr"])
    lo = np.array([p.pixel << (2 * (29 - p.order)) for p in pixels], np.int64)
    order = np.argsort(lo)
    owner = order[np.searchsorted(lo[order], near.column(HEALPIX_COLUMN).to_numpy(), side="right") - 1]
    gcntr = near.column("gcntr").to_numpy()
    parts = [_read(pixel_file(task.output, pixels[i]), so, flt=pc.field("gcntr").isin(gcntr[owner == i]))
             for i in np.unique(owner)]
    table = pa.concat_tables(parts) if parts else task.schema.empty_table()
    table = table.take(pc.sort_indices(table, [(HEALPIX_COLUMN, "ascending")])).cast(task.schema)
    if table.num_rows != near.num_rows:
        raise BuildError(f"margin of {pixel}: {near.num_rows} merged sources, {table.num_rows} light curves")
    rec = {"order": pixel.order, "pixel": pixel.pixel, "rows": table.num_rows, "bytes": 0}
    if table.num_rows:
        rec["bytes"] = write_partition(table, pixel_file(margin_out, pixel),
                                       compression_level=task.compression_level, storage_options=so)
    return rec


def _properties(tables: ProductTables, job: LightCurveJob, main: hats.catalog.Catalog) -> dict:
    """The main catalog's ``hats.properties`` (without counts): title, description, how it was joined."""
    info = load_schema(tables.info)
    title = f"{info.title.replace(' Information Table', '')} Light Curves"
    link = f"every link of {tables.link}" if job.links.table else f"the gcntr of {tables.detections}"
    progenitor = ", ".join(t for t in (tables.info, tables.detections, job.links.table and tables.link) if t)
    return positional_properties(main.catalog_info.ra_column, main.catalog_info.dec_column) | \
        observation_properties(info, title=title, progenitor=progenitor, description=(
            f"{title}: one row per merged source of {tables.info} with its light-curve statistics and its "
            f"detections in {tables.detections} nested ({link}, exactly once; sorted by epoch), built by "
            "tmass-lake.")) | {
        "catalog_type": "object", "hats_cols_sort": HEALPIX_COLUMN,
        "hats_max_rows": main.catalog_info.hats_max_rows,
        STORED_LINKS: "table" if job.links.table else "detections",
        STORED_THRESHOLDS: json.dumps(asdict(job.thresholds)),
    }


NGRP = "ngrp"
NGRP_EXAMPLES = 5


def check_ngrp(link: str, files: list[str], storage_options: dict, member: str) -> dict:
    """Every detection (``member``: ``cntr``) of a link table in exactly ``ngrp`` groups: its rows there.

    Runs on the current Dask client. Returns ``{"checked": detections with an ngrp, "differences":
    0}``, or ``{"checked": False}`` when the table has no ``ngrp`` (an input without it); a
    detection whose groups differ from its ``ngrp`` is a :class:`BuildError` naming it (the first
    few, and how many), and so is a link table without its keys (``gcntr``, ``member``).
    """
    fs, _ = filesystem(files[0], storage_options) if files else (None, None)
    data = {f: m.schema.to_arrow_schema().names for f in files
            if (m := pq.read_metadata(filesystem(f, storage_options)[1], filesystem=fs)).num_rows}
    if not data:
        return {"checked": False}
    keyed = [f for f, names in data.items() if {"gcntr", member} <= set(names)]  # not the quarantine's
    if not keyed:
        lost = [c for c in ("gcntr", member) if c not in next(iter(data.values()))]
        raise BuildError(f"{link} has no column {', '.join(lost)}: the light curves need its link keys")
    if any(NGRP not in data[f] for f in keyed):
        return {"checked": False}
    files = keyed
    ddf = dd.read_parquet(list(files), columns=["gcntr", member, NGRP], storage_options=storage_options)
    agg = ddf.groupby(member).agg(groups=("gcntr", "count"), lo=(NGRP, "min"), hi=(NGRP, "max"),
                                  split_out=max(1, ddf.npartitions))
    agg = agg[agg.lo.notnull()]
    bad = agg[(agg.groups != agg.lo) | (agg.lo != agg.hi)]
    checked, differences, examples = dask.compute(agg.shape[0], bad.shape[0],
                                                  bad.head(NGRP_EXAMPLES, npartitions=-1, compute=False))
    if differences:
        said = "; ".join(f"{member} {k} is in {int(r.groups)} group(s) but its ngrp is "
                         + (f"{int(r.lo)}" if r.lo == r.hi else f"{int(r.lo)} to {int(r.hi)}")
                         for k, r in examples.sort_index().iterrows())
        more = f" (and {differences - len(examples)} more)" if differences > len(examples) else ""
        raise BuildError(f"{link}: {said}{more}: links are missing or extra")
    return {"checked": int(checked), "differences": 0}


def built_columns(lake: Lake, name: str) -> set[str] | None:
    """The columns a lake's table was built with (its manifest entry: a projection lacks the absent
    documented ones), or ``None`` when the manifest does not say."""
    columns = ((lake.manifest.get("tables", {}).get(name) or {}).get("schema") or {}).get("columns")
    return {c["name"] for c in columns} if columns else None


def check_built_columns(name: str, lake: Lake, tables: ProductTables) -> tuple[list[str], list[str]]:
    """The detection and merged-source columns the light curves nest and keep: the defaults a
    projection of the tables has. What they cannot do without (the detections' key, ``jdate`` and
    ``gcntr``; the sources' ``gcntr``) is a :class:`BuildError` naming it."""
    det, info = built_columns(lake, tables.detections), built_columns(lake, tables.info)
    needs = {tables.detections: (det, [tables.key, "jdate", "gcntr"]), tables.info: (info, ["gcntr"])}
    for table, (have, need) in needs.items():
        if have is not None and (lost := [c for c in need if c not in have]):
            raise BuildError(f"{name}: {table} in {lake.url} has no column {', '.join(lost)}: the light "
                             "curves need it")
    default = POINT_COLUMNS if tables.kind == "point" else EXTENDED_COLUMNS
    return ([c for c in default if det is None or c in det],
            [c for c in source_columns_for(tables) if info is None or c in info])


def build_light_curves(args: LightCurveArguments, client: Client) -> dict:
    """Write the light-curve collection of ``args.info`` (catalog, margin, index); returns its report."""
    started = time.time()
    so = args.storage_options
    lake = open_lake(args.lake, **so)
    tables = info_tables(args.info)
    missing = [t for t in (tables.info, tables.detections) if t not in lake.tables]
    if missing:
        raise BuildError(f"{args.name} needs {' and '.join(missing)} in {args.lake}")
    det_cols, src_cols = check_built_columns(args.name, lake, tables)
    det_url = lake.entry(tables.detections).url
    det_margin = hats.read_hats(upath(det_url, so)).default_margin
    job = light_curve_job(lake, tables, detection_columns=det_cols,
                          margin_url=join(det_url, det_margin) if det_margin else None)
    info_url = lake.entry(tables.info).url
    info = hats.read_hats(upath(info_url, so))
    main = info.main_catalog
    pixels = list(main.get_healpix_pixels())
    schema = collection_schema(job, tables, src_cols)
    info_rows = int(main.catalog_info.total_rows)
    link_rows = lake.parquet_dataset(tables.link).count_rows() if job.links.table else None
    ngrp = check_ngrp(tables.link, list(job.links.files), so, job.links.column) if job.links.table else None
    task = _Task(job, join(info_url, main.catalog_name), join(args.output, args.name), tuple(src_cols),
                 schema, so, args.compression_level)
    fingerprint = {"name": args.name, "info": tables.info, "info_rows": info_rows,
                   "detections": tables.detections, "links": tables.link if job.links.table else None,
                   "link_rows": link_rows, "columns": schema.names}
    stages: dict[str, float] = {}
    clock = time.time()
    with build_session(args.output, args.scratch, fingerprint, resume=args.resume,
                       storage_options=so) as plan:
        records = run_pixel_tasks(client, lambda p: partition_task(task, p), pixels, plan, "lightcurves",
                                  args.name, args.progress, parse=LIGHT_CURVE_RECORD)
        rows = sum(r["rows"] for r in records)
        if rows != info_rows:
            raise BuildError(f"{args.name}: {rows} light curves for the {info_rows} rows of {tables.info}")
        props = _properties(tables, job, main)
        hist = tuple(np.concatenate([np.asarray(r["hist"][i], np.int64) for r in records]) for i in (0, 1))
        finish_catalog(task.output, props | {"catalog_name": args.name, "total_rows": rows},
                       expected_rows=rows, storage_options=so, pixels=pixels, histogram=hist,
                       schema=task.schema, id_columns=(INDEX_COLUMN,))
        stages["lightcurves"], clock = time.time() - clock, time.time()

        margin, margin_rows, arcsec = None, 0, 0.0
        if info.default_margin:  # the information margin's sources, their light curves read back
            info_margin = hats.read_hats(info.default_margin_catalog_dir)
            arcsec = float(info_margin.catalog_info.margin_threshold)
            margin = margin_name(args.name, arcsec)
            margin_in, margin_out = join(info_url, info.default_margin), join(args.output, margin)
            written = [r for r in run_pixel_tasks(
                client, lambda p: margin_task(task, margin_in, margin_out, pixels, p),
                list(info_margin.get_healpix_pixels()), plan, "lightcurve-margin", f"{args.name} margin",
                args.progress, parse=MARGIN_RECORD) if r["rows"]]
            margin_rows = sum(r["rows"] for r in written)
            finish_margin(margin_out, task.output, threshold_arcsec=arcsec, rows=margin_rows,
                          pixels=[HealpixPixel(r["order"], r["pixel"]) for r in written],
                          ra_column=props["ra_column"], dec_column=props["dec_column"], storage_options=so)
        stages["margin"], clock = time.time() - clock, time.time()

        indexes = build_indexes(
            IndexArguments(collection=args.output, catalog=args.name, columns=(INDEX_COLUMN,),
                           scratch=join(args.scratch, "index"), storage_options=so,
                           rows_per_file=args.index_rows_per_file, compression_level=args.compression_level,
                           progress=args.progress), pixels, schema, plan, client)
        write_collection_properties(args.output, name=args.name, title=props["obs_title"],
                                    margins=[margin] if margin else [], default_index=INDEX_COLUMN,
                                    indexes={c: i["path"] for c, i in indexes.items()}, storage_options=so)
        stages["index"] = time.time() - clock
        n_det = sum(r["detections"] for r in records)
        report = {
            "table": args.name, "kind": "lightcurves", "title": props["obs_title"],
            "merged_sources": tables.info, "detections_table": tables.detections,
            "link_table": tables.link if job.links.table else None,
            "lines_read": info_rows, "rows_written": rows, "rows_quarantined": 0, "detections": n_det,
            "links": link_rows, "links_missing": None if link_rows is None else link_rows - n_det,
            "ngrp_check": ngrp,
            "partitions": len(records), "bytes": sum(r["bytes"] for r in records), "catalog": args.name,
            "margin": margin, "margin_rows": margin_rows, "margin_arcsec": arcsec, "indexes": indexes,
            "inputs": [], "stage_seconds": {k: round(v, 3) for k, v in stages.items()},
            "seconds": round(time.time() - started, 3),
        }
        write_report(args.output, report, so)
    return report
