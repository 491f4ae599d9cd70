"""Finish stage: HATS metadata for the main and margin catalogs, the collection, the report."""

from __future__ import annotations

import json
from importlib.metadata import version

import numpy as np
from hats.catalog import PartitionInfo, TableProperties
from hats.catalog.dataset.collection_properties import CollectionProperties
from hats.io import paths
from hats.io.file_io import write_fits_image
from hats.io.parquet_metadata import write_parquet_metadata
from hats.io.skymap import write_skymap
from hats.pixel_math import HealpixPixel
from upath import UPath

from tmass_lake.build.arguments import HISTOGRAM_ORDER, BuildArguments
from tmass_lake.build.map import HEALPIX_COLUMN
from tmass_lake.schema import TableSchema
from tmass_lake.storage import filesystem, join, write_text

BUILDER = f"tmass-lake v{version('tmass-lake')}"
JD_MJD = 2400000.5


def upath(url: str, storage_options: dict) -> UPath:
    return UPath(url, **storage_options)


def observation_properties(schema: TableSchema) -> dict:
    """IVOA ``obs_*`` description keys for a 2MASS table."""
    return {
        "obs_title": schema.title,
        "obs_description": f"{schema.title}, converted from IRSA's distribution by tmass-lake. "
                           f"Layout: {schema.layout_status}. {schema.layout_note}",
        "obs_regime": "Infrared",
        "obs_ack": "This publication makes use of data products from the Two Micron All Sky "
                   "Survey, a joint project of UMass and IPAC/Caltech, funded by NASA and NSF.",
        "bib_reference": "2006AJ....131.1163S",
        "em_min": "1.1e-6",
        "em_max": "2.4e-6",
        "prov_progenitor": "IRSA 2MASS Extended Mission " + schema.table,
    }


def write_hats_metadata(url: str, pixels: list[HealpixPixel], properties: dict,
                        storage_options: dict, expected_rows: int) -> None:
    """partition_info.csv, _metadata/_common_metadata (checked against the rows written)."""
    root = upath(url, storage_options)
    info = PartitionInfo.from_healpix(pixels)
    info.write_to_file(paths.get_partition_info_pointer(root))
    written = write_parquet_metadata(root)
    if written != expected_rows:
        raise AssertionError(f"{url}: metadata counts {written} rows, expected {expected_rows}")
    props = TableProperties(**(TableProperties.new_provenance_dict(root, builder=BUILDER) | properties
                               | {"hats_order": info.get_highest_order(),
                                  "moc_sky_fraction": f"{info.calculate_fractional_coverage():0.5f}"}))
    props.to_properties_file(root)


def finish_build(args: BuildArguments, catalog_url: str, margin_url: str, margin_name: str,
                 records: list[dict], histogram: np.ndarray, threshold: int) -> dict:
    """Write the catalogs' metadata and the collection properties; return totals."""
    schema = args.schema
    pixels = [HealpixPixel(r["order"], r["pixel"]) for r in records]
    rows = sum(r["rows"] for r in records)
    so = args.storage_options
    root = upath(catalog_url, so)
    write_fits_image(histogram, paths.get_point_map_file_pointer(root))
    write_skymap(histogram=histogram, catalog_dir=root, orders=[2, 4, 6])
    base = {
        "ra_column": schema.ra_column, "dec_column": schema.dec_column,
        "hats_col_healpix": HEALPIX_COLUMN, "hats_col_healpix_order": 29,
        "hats_npix_suffix": ".parquet",
    }
    write_hats_metadata(catalog_url, pixels, base | observation_properties(schema) | {
        "catalog_name": schema.table, "catalog_type": "object", "total_rows": rows,
        "hats_cols_sort": HEALPIX_COLUMN, "hats_max_rows": threshold,
        "hats_skymap_order": HISTOGRAM_ORDER, "hats_skymap_alt_orders": [2, 4, 6],
    }, so, rows)
    margin_records = [r for r in records if r["margin_rows"]]
    margin_rows = sum(r["margin_rows"] for r in margin_records)
    if margin_records:
        write_hats_metadata(margin_url, [HealpixPixel(r["order"], r["pixel"]) for r in margin_records],
                            base | {"catalog_name": margin_name, "catalog_type": "margin",
                                    "total_rows": margin_rows, "primary_catalog": schema.table,
                                    "margin_threshold": args.margin_arcsec}, so, margin_rows)
    return {"rows": rows, "margin_rows": margin_rows, "partitions": len(records),
            "bytes": sum(r["bytes"] for r in records),
            "margin_bytes": sum(r["margin_bytes"] for r in records),
            "has_margin": bool(margin_records)}


def write_collection_properties(args: BuildArguments, margins: list[str], indexes: dict[str, str]) -> None:
    """``collection.properties``: the main catalog, its margin and its index catalogs."""
    props = CollectionProperties(
        obs_collection=args.table, hats_primary_table_url=args.table,
        all_margins=margins or None, default_margin=margins[0] if margins else None,
        all_indexes=indexes or None, default_index=next(iter(indexes), None) if indexes else None,
        obs_title=args.schema.title, hats_builder=BUILDER,
    )
    props.to_properties_file(upath(args.output, args.storage_options))


def write_report(args: BuildArguments, report: dict) -> None:
    fs, root = filesystem(args.output, args.storage_options)
    write_text(fs, join(root, "build_report.json"), json.dumps(report, indent=2, default=str))
