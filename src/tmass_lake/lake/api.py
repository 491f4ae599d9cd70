"""``open_lake``: the tables of a tmass-lake root as lsdb catalogues.

A lake root holds one HATS collection per table (``LAKE/<table>/collection.properties``, main
catalogue ``LAKE/<table>/<table>/``, margin ``LAKE/<table>/<table>_10arcsec/``), optionally
plain Parquet tables without positions (``LAKE/<table>/**/*.parquet``, e.g. link tables) and
optionally a ``manifest.json`` naming tables and where they are::

    {"tables": {"pt_src_c": {"path": "pt_src_c"}, "cf_link": {"path": "cf_link", "format": "parquet"}}}

(``tables`` may also be a list of names; paths are relative to the root or absolute URLs.)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import dask.dataframe as dd
import lsdb
import pyarrow.dataset as pads
from hats.catalog.dataset.collection_properties import CollectionProperties
from upath import UPath

from tmass_lake.lake.crossmatch import PROFILES, ReferenceProfile, crossmatch, detect_profile
from tmass_lake.lake.lightcurves import light_curves
from tmass_lake.schema import TableSchema, list_tables, load_schema
from tmass_lake.storage import filesystem, join

log = logging.getLogger(__name__)

SIX_X_SUFFIX = "_cat"
"""``lake["pt_src_6x2_cat"]`` is pt_src_6x2 restricted to 6x Catalog rows (``cat == "1"``)."""
SIX_X_TABLES = {"point": "pt_src_6x2", "extended": "ext_src_6x2"}
REFERENCE_DIRS = ("", "reference")


@dataclass(frozen=True)
class TableEntry:
    """Where one lake table lives and how it is stored (``hats`` or ``parquet``)."""

    name: str
    url: str
    format: str
    schema: str | None = None  # schema name when it differs (derived tables: their source's)


class Lake:
    """A tmass-lake root: ``lake.tables``, ``lake["pt_src_c"]``, crossmatches and light curves."""

    def __init__(self, url: str, storage_options: dict | None = None) -> None:
        self.url = url.rstrip("/")
        self.storage_options = dict(storage_options or {})
        self._fs, self._root = filesystem(self.url, self.storage_options)
        if not self._fs.isdir(self._root):
            raise FileNotFoundError(f"no lake at {url}")

    def __repr__(self) -> str:
        return f"Lake({self.url!r}, tables={self.tables})"

    # -- discovery -----------------------------------------------------------------------
    def _abs(self, path: str) -> str:
        return path if "://" in path or path.startswith("/") else join(self.url, path)

    @cached_property
    def manifest(self) -> dict:
        """The root ``manifest.json`` (empty if absent)."""
        path = join(self._root, "manifest.json")
        if not self._fs.exists(path):
            return {}
        with self._fs.open(path, "r") as f:
            return json.load(f)

    @cached_property
    def _entries(self) -> dict[str, TableEntry]:
        entries: dict[str, TableEntry] = {}
        listed = self.manifest.get("tables", {})
        items = listed.items() if isinstance(listed, dict) else ((n, {}) for n in listed)
        for name, spec in items:
            spec = spec if isinstance(spec, dict) else {"path": spec}
            url = self._abs(spec.get("path") or spec.get("url") or name)
            fmt = spec.get("format") or self._detect_format(url)
            schema = spec.get("schema")
            if fmt:
                entries[name] = TableEntry(name, url, fmt, schema.get("name") if isinstance(schema, dict)
                                           else schema)
        for info in self._fs.ls(self._root, detail=True):
            if info["type"] != "directory" and not (info.get("islink") and self._fs.isdir(info["name"])):
                continue
            name = info["name"].rstrip("/").rsplit("/", 1)[-1]
            if name in entries or name.startswith((".", "_")):
                continue
            url = join(self.url, name)
            fmt = self._detect_format(url, known_table=name in set(list_tables()))
            if fmt:
                entries[name] = TableEntry(name, url, fmt)
        return dict(sorted(entries.items()))

    def _detect_format(self, url: str, known_table: bool = True) -> str | None:
        fs, path = filesystem(url, self.storage_options)
        if fs.exists(join(path, "collection.properties")) or fs.exists(join(path, "hats.properties")):
            return "hats"
        if known_table and fs.isdir(path) and self._parquet_files_under(url):
            return "parquet"
        return None

    def parquet_files(self, name: str) -> list[str]:
        """The data files of a plain Parquet table (e.g. a link table)."""
        return self._parquet_files_under(self.entry(name).url)

    def _parquet_files_under(self, url: str) -> list[str]:
        fs, path = filesystem(url, self.storage_options)
        return sorted(p for p in fs.glob(join(path, "**/*.parquet"))
                      if not any(part.startswith("_") for part in p[len(path):].split("/")))

    @property
    def tables(self) -> list[str]:
        """Every table in the lake (HATS collections and plain Parquet tables), sorted."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._entries or self._six_x_base(name) is not None)

    def __iter__(self) -> Iterator[str]:
        return iter(self.tables)

    def entry(self, name: str) -> TableEntry:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"no table {name!r} in {self.url} (has: {', '.join(self.tables)})") from None

    def schema(self, name: str) -> TableSchema:
        """The table's documented schema (units, descriptions, provenance)."""
        base = self._six_x_base(name)
        if base is None and name in self._entries:
            base = self._entries[name].schema
        return load_schema(base or name)

    # -- opening -------------------------------------------------------------------------
    def __getitem__(self, name: str) -> lsdb.Catalog | dd.DataFrame:
        return self.open(name)

    def open(self, name: str, *, columns: list[str] | str | None = None,
             filters: list | None = None, search_filter: Any = None, margin: bool = True,
             **kwargs: Any) -> lsdb.Catalog | dd.DataFrame:
        """Open a table lazily: an lsdb catalogue (with its margin) or, for Parquet tables, Dask.

        ``columns`` and ``filters`` are pushed down to the Parquet reads (``columns="all"``
        loads every column); ``search_filter`` is any lsdb search (``lsdb.ConeSearch``...).
        ``pt_src_6x2_cat``/``ext_src_6x2_cat`` give the 6x Catalog rows (``cat == "1"``).
        """
        base = self._six_x_base(name)
        if base is not None:
            return self.six_x_catalog(base, columns=columns, filters=filters,
                                      search_filter=search_filter, margin=margin, **kwargs)
        entry = self.entry(name)
        if entry.format == "parquet":
            return dd.read_parquet(self.parquet_files(name), columns=columns, filters=filters,
                                   storage_options=self.storage_options or None, **kwargs)
        opts = {"columns": columns, "filters": filters, "search_filter": search_filter, **kwargs}
        opts = {k: v for k, v in opts.items() if v is not None}
        if self.storage_options:
            opts["storage_options"] = self.storage_options
        if not margin:
            return lsdb.open_catalog(self.main_catalog_url(name), **opts)
        return lsdb.open_catalog(entry.url, **opts)

    def main_catalog_url(self, name: str) -> str:
        """URL of a table's main HATS catalogue (inside its collection)."""
        entry = self.entry(name)
        root = UPath(entry.url, **self.storage_options)
        if (root / "collection.properties").exists():
            props = CollectionProperties.read_from_dir(root)
            return join(entry.url, props.hats_primary_table_url)
        return entry.url

    def index_url(self, name: str, column: str) -> str | None:
        """URL of the collection's index catalog on ``column`` (``None``: no such index)."""
        entry = self.entry(name)
        root = UPath(entry.url, **self.storage_options)
        if entry.format != "hats" or not (root / "collection.properties").exists():
            return None
        path = (CollectionProperties.read_from_dir(root).all_indexes or {}).get(column)
        return join(entry.url, path) if path else None

    def _six_x_base(self, name: str) -> str | None:
        if name.endswith(SIX_X_SUFFIX) and name not in self._entries:
            base = name[: -len(SIX_X_SUFFIX)]
            if base in SIX_X_TABLES.values():
                return base
        return None

    def six_x_catalog(self, kind: str = "point", **kwargs: Any) -> lsdb.Catalog:
        """The 6x Catalog: 6x detections flagged ``cat == "1"`` (one per 6x Catalog source).

        ``kind`` is ``"point"``/``"extended"`` or a table name; the filter is pushed down to
        Parquet, margins included. Other keywords as :meth:`open`.
        """
        table = SIX_X_TABLES.get(kind, kind)
        if table not in SIX_X_TABLES.values():
            raise ValueError(f"6x catalogues are {sorted(SIX_X_TABLES)}; got {kind!r}")
        filters = list(kwargs.pop("filters", None) or [])
        filters.append(("cat", "==", "1"))
        columns = kwargs.pop("columns", None)
        if isinstance(columns, list) and "cat" not in columns:
            columns = [*columns, "cat"]
        cat = self.open(table, columns=columns, filters=filters, **kwargs)
        return cat.rename_catalog(f"{table}{SIX_X_SUFFIX}")

    def parquet_dataset(self, name: str) -> pads.Dataset:
        """A plain Parquet table (e.g. a link table) as a pyarrow dataset."""
        entry = self.entry(name)
        if entry.format != "parquet":
            raise TypeError(f"{name} is a HATS catalogue; use lake[{name!r}]")
        fs, _ = filesystem(entry.url, self.storage_options)
        return pads.dataset(self.parquet_files(name), filesystem=fs, format="parquet")

    # -- references ----------------------------------------------------------------------
    def reference_url(self, name_or_url: str) -> str:
        """A reference catalogue URL: a path/URL as is; ``gaia_dr3``/``allwise`` from the lake
        (``LAKE/<name>`` or ``LAKE/reference/<name>``) or else the public LSDB copy."""
        if "/" in name_or_url or "://" in name_or_url:
            return name_or_url
        for sub in REFERENCE_DIRS:
            url = join(self.url, sub, name_or_url) if sub else join(self.url, name_or_url)
            if self._detect_format(url, known_table=False) == "hats":
                return url
        profile = PROFILES.get(name_or_url)
        if profile and profile.url:
            return profile.url
        raise KeyError(f"unknown reference catalogue {name_or_url!r}: give a path or URL")

    def open_reference(self, name_or_url: str, *, columns: list[str] | None = None,
                       reference: ReferenceProfile | str | None = None,
                       storage_options: dict | None = None, **kwargs: Any) -> lsdb.Catalog:
        """Open a reference catalogue with the astrometry columns the epoch-aware match needs."""
        return open_reference(self.reference_url(name_or_url), columns=columns, reference=reference,
                              storage_options=storage_options, name=name_or_url, **kwargs)

    # -- analysis ------------------------------------------------------------------------
    def crossmatch(self, table: str, other: str | lsdb.Catalog, *, radius_arcsec: float = 1.0,
                   epoch_aware: bool = True, columns: list[str] | None = None,
                   other_columns: list[str] | None = None, search_filter: Any = None,
                   reference: ReferenceProfile | str | None = None, **kwargs: Any) -> lsdb.Catalog:
        """Crossmatch a lake table with Gaia DR3/AllWISE/any HATS catalogue (see ``crossmatch``)."""
        left = self.open(table, columns=columns, search_filter=search_filter)
        if isinstance(other, str):
            right = self.open_reference(other, columns=other_columns, reference=reference)
            reference = reference or (other if "/" not in other else None)
        else:
            right = other
        return crossmatch(left, right, radius_arcsec=radius_arcsec, epoch_aware=epoch_aware,
                          reference=reference, **kwargs)

    def light_curves(self, product: str = "calibration", **kwargs: Any) -> lsdb.Catalog:
        """Merged sources of a product with their detections nested (see ``lightcurves``)."""
        return light_curves(self, product, **kwargs)


def open_reference(url: str, *, columns: list[str] | None = None,
                   reference: ReferenceProfile | str | None = None, storage_options: dict | None = None,
                   name: str | None = None, **kwargs: Any) -> lsdb.Catalog:
    """Open a reference HATS catalogue (collection with margin, or catalogue) for crossmatching.

    Loads the catalogue's default columns (or ``columns``) plus the position, proper-motion
    and epoch columns of its :class:`ReferenceProfile`.
    """
    opts = {"storage_options": storage_options} if storage_options else {}
    cat = lsdb.open_catalog(url, columns=columns, **opts, **kwargs)
    profile = reference if isinstance(reference, ReferenceProfile) else detect_profile(cat, reference or name)
    want = [c for c in profile.columns if c in cat.all_columns and c not in cat.columns]
    if want:
        cat = lsdb.open_catalog(url, columns=[*cat.columns, *want], **opts, **kwargs)
    return cat


def open_lake(url: str, **storage_options: Any) -> Lake:
    """Open a tmass-lake root (local path or fsspec URL; ``storage_options`` for the filesystem)."""
    return Lake(url, storage_options)
