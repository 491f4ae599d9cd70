"""``open_lake``: the tables of a tmass-lake root as lsdb catalogues.

A lake root holds one HATS collection per table (``LAKE/<table>/collection.properties``, main
catalogue ``LAKE/<table>/<table>/``, margin ``LAKE/<table>/<table>_10arcsec/``), optionally
plain Parquet tables without positions (``LAKE/<table>/**/*.parquet``, e.g. link tables) and
optionally a ``manifest.json`` naming tables and where they are::

    {"tables": {"pt_src_c": {"path": "pt_src_c"}, "cf_link": {"path": "cf_link", "format": "parquet"}}}

(``tables`` may also be a list of names; paths are relative to the root and stay inside it.)

Only finished tables are served: a collection or catalogue whose ``collection.properties`` or
``hats.properties`` is written, a Parquet table whose ``table.properties`` is (each is written
last by the build), and whose manifest entry, if any, says ``built``. A table directory without
them (a build killed during reduce, a rebuild in progress) is listed in :attr:`Lake.unfinished`
and opening it raises :class:`UnfinishedTableError`.
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

from tmass_lake.errors import (
    NOT_FINISHED,
    ManifestError,
    NotALakeError,
    NotInLakeError,
    UnfinishedTableError,
    did_you_mean,
)
from tmass_lake.lake.crossmatch import PROFILES, ReferenceProfile, crossmatch, detect_profile
from tmass_lake.lake.lightcurves import light_curves
from tmass_lake.schema import TableSchema, light_curve_collection, list_tables, load_schema
from tmass_lake.storage import filesystem, forget_listings, inside, join, url_of

log = logging.getLogger(__name__)

SIX_X_SUFFIX = "_cat"
"""``lake["pt_src_6x2_cat"]`` is pt_src_6x2 restricted to 6x Catalog rows (``cat == "1"``)."""
SIX_X_TABLES = {"point": "pt_src_6x2", "extended": "ext_src_6x2"}
REFERENCE_DIRS = ("", "reference")
MANIFEST = "manifest.json"
HATS_MARKS = ("collection.properties", "hats.properties")
PARQUET_MARK = "table.properties"
"""The files a build writes last: a directory without one is not a finished table."""
@dataclass(frozen=True)
class TableEntry:
    """Where one lake table lives and how it is stored.

    Parameters
    ----------
    name : str
        The table's name in the lake (``pt_src_c``, ``cf_link``...).
    url : str
        Where the table is: the HATS collection (or catalogue) or the Parquet dataset directory.
    format : str
        ``"hats"`` (a collection or catalogue) or ``"parquet"`` (a plain Parquet table).
    schema : str or None, optional
        The schema's name when it differs from ``name`` (derived tables take their source's).
    """

    name: str
    url: str
    format: str
    schema: str | None = None  # schema name when it differs (derived tables: their source's)


class Lake:
    """A tmass-lake root: ``lake.tables``, ``lake["pt_src_c"]``, crossmatches and light curves.

    Tables are found in the root's ``manifest.json`` (when there is one) and as the directories
    holding a HATS collection or catalogue (or, for a table our schemas know, Parquet files).
    ``lake[name]`` is :meth:`open` with its defaults: an ``lsdb.Catalog`` (with its margin) for a
    HATS table, and a ``dask.dataframe.DataFrame`` for a plain Parquet table (link tables such as
    ``cf_link`` have no positions, so no catalogue: filter and join them as Dask frames, or read
    them with :meth:`parquet_dataset`). ``name in lake`` and ``iter(lake)`` go over the table
    names. Usually made by :func:`open_lake`.

    Parameters
    ----------
    url : str
        The lake's root: a local path or an fsspec URL (``s3://bucket/lake``).
    storage_options : dict or None, optional
        fsspec options of the lake's filesystem (credentials, endpoint...), passed on to every
        read.

    Attributes
    ----------
    unfinished : dict of str to str
        Tables present but not served, by name, with why (``"build not finished — `--resume` or
        rebuild"``: a directory without the properties its build writes last).

    Raises
    ------
    NotALakeError
        If there is no directory at ``url``, or it holds no lake (no manifest, no table, no build
        records); a ``FileNotFoundError``.
    ManifestError
        If ``manifest.json`` is not a JSON object or an entry's path leads outside the lake.

    See Also
    --------
    open_lake : The usual way to make a ``Lake``.

    Examples
    --------
    >>> lake = Lake("s3://bucket/lake", {"anon": True})  # doctest: +SKIP
    >>> lake.tables  # doctest: +SKIP
    ['cf_info', 'cf_lightcurves', 'cf_link', 'pt_src_c', ...]
    >>> cone = lake.open("pt_src_c", search_filter=lsdb.ConeSearch(83.8, -5.4, 60))  # doctest: +SKIP
    """

    def __init__(self, url: str, storage_options: dict | None = None) -> None:
        self.url = url.rstrip("/")
        self.storage_options = dict(storage_options or {})
        self._fs, self._root = filesystem(self.url, self.storage_options)
        forget_listings(self._fs, self._root)  # listings cached before the last build wrote are stale
        if not self._fs.isdir(self._root):
            raise NotALakeError(f"no lake at {url}: no such directory")
        entries, self.unfinished = self._discover()
        self._entries: dict[str, TableEntry] = entries
        if not (entries or self.unfinished or self.manifest
                or any(self._fs.isdir(join(self._root, d)) for d in ("_lake", "reference"))):
            raise NotALakeError(f"{url} is not a tmass-lake lake: it has no {MANIFEST}, no table and no "
                                "build records")

    def __repr__(self) -> str:
        return f"Lake({self.url!r}, tables={self.tables})"

    # -- discovery -----------------------------------------------------------------------
    @cached_property
    def manifest(self) -> dict:
        """The root ``manifest.json`` as a dict (empty if the lake has none)."""
        path = join(self._root, MANIFEST)
        if not self._fs.exists(path):
            return {}
        with self._fs.open(path, "r") as f:
            try:
                manifest = json.load(f)
            except ValueError as e:
                raise ManifestError(f"{join(self.url, MANIFEST)}: not JSON ({e})") from None
        if not isinstance(manifest, dict):
            raise ManifestError(f"{join(self.url, MANIFEST)}: not a manifest (a JSON object)")
        return manifest

    def _state(self, url: str) -> str | None:
        """``"hats"``, ``"parquet"`` (finished), ``"unfinished"`` (a directory with something in it
        but no properties written), or None (nothing there)."""
        fs, path = filesystem(url, self.storage_options)
        forget_listings(fs, path)  # an object store's cached listing may predate the build's last files
        try:
            names = {p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)}
        except (FileNotFoundError, NotADirectoryError):
            return None
        if names & set(HATS_MARKS):
            return "hats"
        if PARQUET_MARK in names:
            return "parquet"
        return "unfinished" if names else None

    def _discover(self) -> tuple[dict[str, TableEntry], dict[str, str]]:
        """The finished tables (manifest entries first, then the root's directories) and, by name,
        why each other table directory is not served."""
        entries: dict[str, TableEntry] = {}
        unfinished: dict[str, str] = {}
        listed = self.manifest.get("tables", {})
        if not isinstance(listed, dict | list):
            raise ManifestError(f"{join(self.url, MANIFEST)}: 'tables' is {type(listed).__name__}, not an "
                                "object or a list")
        items = listed.items() if isinstance(listed, dict) else ((n, {}) for n in listed)
        for name, spec in items:
            spec = spec if isinstance(spec, dict) else {"path": spec}
            path = spec.get("path") or spec.get("url") or name
            url = inside(self.url, path)
            if url is None:
                raise ManifestError(f"{join(self.url, MANIFEST)}: table {name!r} has path {path!r}, which "
                                    "leads outside the lake: refused")
            state = self._state(url)
            schema = spec.get("schema")
            schema = schema.get("name") if isinstance(schema, dict) else schema
            if state is None:
                unfinished[name] = f"listed in {MANIFEST} but not in the lake"
            elif state == "unfinished" or spec.get("status", "built") != "built":
                unfinished[name] = NOT_FINISHED
            else:
                entries[name] = TableEntry(name, url, state, schema)
        known = self._known_names()
        for info in self._fs.ls(self._root, detail=True):
            if info["type"] != "directory" and not (info.get("islink") and self._fs.isdir(info["name"])):
                continue
            name = info["name"].rstrip("/").rsplit("/", 1)[-1]
            if name in entries or name in unfinished or name.startswith((".", "_")):
                continue
            url = join(self.url, name)
            state = self._state(url)
            if state in ("hats", "parquet"):
                entries[name] = TableEntry(name, url, state)
            elif state == "unfinished" and name in known:
                unfinished[name] = NOT_FINISHED
        return dict(sorted(entries.items())), dict(sorted(unfinished.items()))

    @staticmethod
    def _known_names() -> set[str]:
        """Table names the lake build writes: the schemas' tables, 6x catalogs, light curves."""
        tables = set(list_tables())
        return (tables | {f"{t}{SIX_X_SUFFIX}" for t in SIX_X_TABLES.values()}
                | {light_curve_collection(t) for t in tables if t.endswith("_info")})

    def parquet_files(self, name: str) -> list[str]:
        """The data files of a plain Parquet table (e.g. a link table).

        Parameters
        ----------
        name : str
            A table of the lake stored as Parquet.

        Returns
        -------
        list of str
            The URLs of its ``*.parquet`` files (protocol included), sorted: those under its
            ``dataset/`` when it has one (not its ``quarantine/``), leaving out any under a
            directory whose name starts with ``_`` (``_metadata``...).

        Raises
        ------
        KeyError
            If the lake has no table ``name``.
        """
        url = self.entry(name).url
        fs, path = filesystem(join(url, "dataset"), self.storage_options)
        return self._parquet_files_under(join(url, "dataset") if fs.isdir(path) else url)

    def _parquet_files_under(self, url: str) -> list[str]:
        fs, path = filesystem(url, self.storage_options)
        return sorted(url_of(fs, p) for p in fs.glob(join(path, "**/*.parquet"))
                      if not any(part.startswith("_") for part in p[len(path):].split("/")))

    @property
    def tables(self) -> list[str]:
        """Every finished table in the lake (HATS collections and plain Parquet tables), sorted.

        Tables whose build did not finish are in :attr:`unfinished` instead, never here.
        """
        return list(self._entries)

    def names(self) -> list[str]:
        """The names ``lake[...]`` takes.

        Returns
        -------
        list of str
            :attr:`tables` and the 6x Catalog views of the 6x tables the lake has
            (``pt_src_6x2_cat``...), sorted.
        """
        views = [t + SIX_X_SUFFIX for t in SIX_X_TABLES.values() if t in self._entries]
        return sorted({*self.tables, *views})

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str) or name in self.unfinished:
            return False
        base = self._six_x_base(name)
        return name in self._entries or (base is not None and base in self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self.tables)

    def entry(self, name: str) -> TableEntry:
        """Where a table is and how it is stored.

        Parameters
        ----------
        name : str
            A table of the lake.

        Returns
        -------
        TableEntry
            Its URL, format (``hats`` or ``parquet``) and schema name.

        Raises
        ------
        KeyError
            If the lake has no table ``name`` (the message lists the tables it has).
        UnfinishedTableError
            If the table's build did not finish (see :attr:`unfinished`).
        """
        if name in self.unfinished:
            raise UnfinishedTableError(f"{name}: {self.unfinished[name]}")
        try:
            return self._entries[name]
        except KeyError:
            raise NotInLakeError(f"no table {name!r} in {self.url}"
                                 + did_you_mean(name, self.names())) from None

    def schema(self, name: str) -> TableSchema:
        """A table's documented schema (units, descriptions, provenance).

        Parameters
        ----------
        name : str
            A table name: one of the lake's, or a schema name (``pt_src_6x2_cat`` gives
            ``pt_src_6x2``'s; a derived table its source's).

        Returns
        -------
        TableSchema
            The schema loaded from the package's ``schemas/<table>.yaml``.

        Raises
        ------
        UnknownTableError
            If there is no schema of that name.
        """
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

        Parameters
        ----------
        name : str
            A table of the lake; ``pt_src_6x2_cat``/``ext_src_6x2_cat`` give the 6x Catalog rows
            (``cat == "1"``, see :meth:`six_x_catalog`).
        columns : list of str or str or None, optional
            Columns to load, pushed down to the Parquet reads; ``None`` or ``"all"`` loads every
            column (plain ``lsdb.open_catalog`` loads only the catalogue's ``hats_cols_default``).
        filters : list or None, optional
            pyarrow filters (``[("j_m", "<", 12.0)]``), pushed down to the Parquet reads.
        search_filter : lsdb search or None, optional
            Any lsdb search (``lsdb.ConeSearch``, ``lsdb.BoxSearch``...), applied when opening
            (HATS tables only).
        margin : bool, default True
            Open the collection with its margin catalogue; ``False`` opens the main catalogue
            alone.
        **kwargs
            Passed to :func:`lsdb.open_catalog` (HATS) or :func:`dask.dataframe.read_parquet`
            (Parquet tables).

        Returns
        -------
        lsdb.Catalog or dask.dataframe.DataFrame
            The lazy catalogue of a HATS table, or the lazy frame of a Parquet table.

        Raises
        ------
        KeyError
            If the lake has no table ``name``.

        Examples
        --------
        >>> bright = lake.open("pt_src_c", columns=["cntr", "ra", "dec", "jdate", "k_m"],
        ...                    filters=[("k_m", "<", 10.0)])  # doctest: +SKIP
        >>> links = lake.open("cf_link").compute()  # doctest: +SKIP
        """
        if name in self.unfinished:
            raise UnfinishedTableError(f"{name}: {self.unfinished[name]}")
        base = self._six_x_base(name)
        if base is not None:
            return self.six_x_catalog(base, columns=columns, filters=filters,
                                      search_filter=search_filter, margin=margin, **kwargs)
        entry = self.entry(name)
        if entry.format == "parquet":
            return dd.read_parquet(self.parquet_files(name), columns=columns, filters=filters,
                                   storage_options=self.storage_options or None, **kwargs)
        opts = {"columns": "all" if columns is None else columns, "filters": filters,
                "search_filter": search_filter, **kwargs}
        opts = {k: v for k, v in opts.items() if v is not None}
        if self.storage_options:
            opts["storage_options"] = self.storage_options
        if not margin:
            return lsdb.open_catalog(self.main_catalog_url(name), **opts)
        return lsdb.open_catalog(entry.url, **opts)

    def main_catalog_url(self, name: str) -> str:
        """URL of a table's main HATS catalogue (inside its collection).

        Parameters
        ----------
        name : str
            A table of the lake.

        Returns
        -------
        str
            The main catalogue of the table's collection (``LAKE/<table>/<table>``), or the
            table's own URL when it is a catalogue (or Parquet table) rather than a collection.

        Raises
        ------
        KeyError
            If the lake has no table ``name``.
        """
        entry = self.entry(name)
        root = UPath(entry.url, **self.storage_options)
        if (root / "collection.properties").exists():
            props = CollectionProperties.read_from_dir(root)
            return join(entry.url, props.hats_primary_table_url)
        return entry.url

    def index_url(self, name: str, column: str) -> str | None:
        """URL of a collection's index catalog on a column.

        Parameters
        ----------
        name : str
            A table of the lake.
        column : str
            The indexed column (``cntr``, ``gcntr``...).

        Returns
        -------
        str or None
            The index catalog's URL, or ``None`` when the table is not a HATS collection or its
            ``collection.properties`` lists no index on ``column``.

        Raises
        ------
        KeyError
            If the lake has no table ``name``.
        """
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

        The filter is pushed down to Parquet, margins included; ``cat`` is added to a list of
        ``columns`` that lacks it.

        Parameters
        ----------
        kind : str, default "point"
            ``"point"`` or ``"extended"``, or the table name (``pt_src_6x2``, ``ext_src_6x2``).
        **kwargs
            As :meth:`open` (``columns``, ``filters``, ``search_filter``, ``margin``...);
            ``filters`` are combined with ``cat == "1"``.

        Returns
        -------
        lsdb.Catalog
            The filtered catalogue, named ``pt_src_6x2_cat`` or ``ext_src_6x2_cat``.

        Raises
        ------
        ValueError
            If ``kind`` names no 6x table.
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
        """A plain Parquet table (e.g. a link table) as a pyarrow dataset.

        Parameters
        ----------
        name : str
            A Parquet table of the lake.

        Returns
        -------
        pyarrow.dataset.Dataset
            The dataset of its data files, on the lake's filesystem.

        Raises
        ------
        KeyError
            If the lake has no table ``name``.
        TypeError
            If the table is a HATS catalogue (open it with ``lake[name]``).
        """
        entry = self.entry(name)
        if entry.format != "parquet":
            raise TypeError(f"{name} is a HATS catalogue; use lake[{name!r}]")
        fs, _ = filesystem(entry.url, self.storage_options)
        paths = [filesystem(url, self.storage_options)[1] for url in self.parquet_files(name)]
        return pads.dataset(paths, filesystem=fs, format="parquet")

    # -- references ----------------------------------------------------------------------
    def reference_url(self, name_or_url: str) -> str:
        """Where a reference catalogue is.

        Parameters
        ----------
        name_or_url : str
            A path or URL (anything with a ``/``), returned as is; or a name (``gaia_dr3``,
            ``allwise``), looked for as a HATS catalogue at ``LAKE/<name>`` then
            ``LAKE/reference/<name>``, and else the public LSDB copy of a known reference (read
            over the network; logged at INFO).

        Returns
        -------
        str
            The catalogue's URL.

        Raises
        ------
        KeyError
            If a name is neither in the lake nor a known reference.
        """
        if "/" in name_or_url or "://" in name_or_url:
            return name_or_url
        for sub in REFERENCE_DIRS:
            url = join(self.url, sub, name_or_url) if sub else join(self.url, name_or_url)
            if self._state(url) == "hats":
                return url
        profile = PROFILES.get(name_or_url)
        if profile and profile.url:
            log.info("%s: no copy in %s; reading the public LSDB copy at %s", name_or_url, self.url,
                     profile.url)
            return profile.url
        raise NotInLakeError(f"unknown reference catalogue {name_or_url!r}: give a path or URL"
                             + did_you_mean(name_or_url, PROFILES))

    def open_reference(self, name_or_url: str, *, columns: list[str] | None = None,
                       reference: ReferenceProfile | str | None = None,
                       storage_options: dict | None = None, **kwargs: Any) -> lsdb.Catalog:
        """Open a reference catalogue with the astrometry columns the epoch-aware match needs.

        Parameters
        ----------
        name_or_url : str
            A reference name (``gaia_dr3``, ``allwise``) or path/URL, as :meth:`reference_url`.
        columns : list of str or None, optional
            Columns to load besides the astrometry ones (default: the catalogue's default
            columns).
        reference : ReferenceProfile or str or None, optional
            Where the catalogue keeps its positions, proper motions and epoch (a profile, or
            ``"gaia_dr3"``/``"allwise"``); ``None`` recognises it by name or columns.
        storage_options : dict or None, optional
            fsspec options of the reference's filesystem (not the lake's).
        **kwargs
            Passed to :func:`lsdb.open_catalog` (``search_filter``...).

        Returns
        -------
        lsdb.Catalog
            The reference catalogue (with its margin when it is a collection).

        Raises
        ------
        KeyError
            If a name is neither in the lake nor a known reference.
        ValueError
            If ``reference`` is ``None`` and the catalogue's astrometry columns cannot be told.
        """
        return open_reference(self.reference_url(name_or_url), columns=columns, reference=reference,
                              storage_options=storage_options, name=name_or_url, **kwargs)

    # -- analysis ------------------------------------------------------------------------
    def crossmatch(self, table: str, other: str | lsdb.Catalog, *, radius_arcsec: float = 1.0,
                   epoch_aware: bool = True, columns: list[str] | None = None,
                   other_columns: list[str] | None = None, search_filter: Any = None,
                   reference: ReferenceProfile | str | None = None, **kwargs: Any) -> lsdb.Catalog:
        """Crossmatch a lake table with Gaia DR3, AllWISE or any HATS catalogue.

        Parameters
        ----------
        table : str
            The lake table on the left (2MASS detections with ``jdate``: ``pt_src_c``...).
        other : str or lsdb.Catalog
            The reference: a name or URL (opened by :meth:`open_reference`) or an opened
            catalogue.
        radius_arcsec : float, default 1.0
            Match radius in arcseconds, at each detection's epoch when ``epoch_aware``.
        epoch_aware : bool, default True
            Move the reference stars by their proper motions to each detection's epoch
            (:class:`~tmass_lake.lake.crossmatch.EpochCrossmatch`); ``False`` is lsdb's plain
            positional match.
        columns : list of str or None, optional
            Columns of ``table`` to load (default: its default columns).
        other_columns : list of str or None, optional
            Columns of the reference to load besides its astrometry (when ``other`` is a name or
            URL).
        search_filter : lsdb search or None, optional
            Restricts ``table`` (``lsdb.ConeSearch``...).
        reference : ReferenceProfile or str or None, optional
            The reference's astrometry columns; ``None`` takes ``other``'s name, or recognises the
            catalogue by its columns.
        **kwargs
            Passed to :func:`~tmass_lake.lake.crossmatch.crossmatch` (``n_neighbors``, ``how``,
            ``suffixes``, ``fast_movers``, ``margin_policy``...).

        Returns
        -------
        lsdb.Catalog
            The lazy matches, as :func:`~tmass_lake.lake.crossmatch.crossmatch` returns them.

        Examples
        --------
        >>> matches = lake.crossmatch("pt_src_c", "gaia_dr3", radius_arcsec=1.0,
        ...                           columns=["cntr", "ra", "dec", "jdate", "k_m"])  # doctest: +SKIP
        >>> found = matches.compute()  # doctest: +SKIP
        >>> found[["cntr_2mass", "source_id_gaia_dr3", "_dist_arcsec", "_dt_yr"]]  # doctest: +SKIP
        """
        left = self.open(table, columns=columns, search_filter=search_filter)
        if isinstance(other, str):
            right = self.open_reference(other, columns=other_columns, reference=reference)
            reference = reference or (other if "/" not in other else None)
        else:
            right = other
        return crossmatch(left, right, radius_arcsec=radius_arcsec, epoch_aware=epoch_aware,
                          reference=reference, **kwargs)

    def light_curves(self, product: str = "calibration", **kwargs: Any) -> lsdb.Catalog:
        """Merged sources of a product with their detections nested.

        Parameters
        ----------
        product : str, default "calibration"
            ``survey``, ``6x``, ``calibration`` or ``calibration_sc`` (or an alias: ``cal``,
            ``sc``...).
        **kwargs
            As :func:`~tmass_lake.lake.lightcurves.light_curves` (``kind``, ``detection_columns``,
            ``search_filter``, ``stats``...).

        Returns
        -------
        lsdb.Catalog
            One row per merged source with its detections nested, as
            :func:`~tmass_lake.lake.lightcurves.light_curves` returns it.

        Examples
        --------
        >>> curves = lake.light_curves("calibration")  # doctest: +SKIP
        >>> curves.query("is_variable").compute()  # doctest: +SKIP
        """
        return light_curves(self, product, **kwargs)


def open_reference(url: str, *, columns: list[str] | None = None,
                   reference: ReferenceProfile | str | None = None, storage_options: dict | None = None,
                   name: str | None = None, **kwargs: Any) -> lsdb.Catalog:
    """Open a reference HATS catalogue (collection with margin, or catalogue) for crossmatching.

    Loads the catalogue's default columns (or ``columns``) plus the position, proper-motion
    and epoch columns of its :class:`~tmass_lake.lake.crossmatch.ReferenceProfile`.

    Parameters
    ----------
    url : str
        The catalogue's path or URL.
    columns : list of str or None, optional
        Columns to load besides the astrometry ones (default: the catalogue's default columns).
    reference : ReferenceProfile or str or None, optional
        Where the catalogue keeps its astrometry (a profile, or ``"gaia_dr3"``/``"allwise"``);
        ``None`` recognises it by ``name`` or by its columns.
    storage_options : dict or None, optional
        fsspec options of the catalogue's filesystem.
    name : str or None, optional
        A name to recognise the profile by (``gaia_dr3``, ``allwise``).
    **kwargs
        Passed to :func:`lsdb.open_catalog` (``search_filter``...).

    Returns
    -------
    lsdb.Catalog
        The lazy catalogue with the astrometry columns loaded.

    Raises
    ------
    ValueError
        If ``reference`` is ``None`` and the astrometry columns cannot be told.

    Examples
    --------
    >>> gaia = open_reference("https://data.lsdb.io/hats/gaia_dr3", columns=["phot_g_mean_mag"],
    ...                       reference="gaia_dr3")  # doctest: +SKIP
    """
    opts = {"storage_options": storage_options} if storage_options else {}
    cat = lsdb.open_catalog(url, columns=columns, **opts, **kwargs)
    profile = reference if isinstance(reference, ReferenceProfile) else detect_profile(cat, reference or name)
    want = [c for c in profile.columns if c in cat.all_columns and c not in cat.columns]
    if want:
        cat = lsdb.open_catalog(url, columns=[*cat.columns, *want], **opts, **kwargs)
    return cat


def open_lake(url: str, **storage_options: Any) -> Lake:
    """Open a tmass-lake root.

    Parameters
    ----------
    url : str
        The lake's root: a local path or an fsspec URL (``s3://bucket/lake``).
    **storage_options
        fsspec options of its filesystem (``anon=True``, ``endpoint_url=...``).

    Returns
    -------
    Lake
        The lake; tables are opened lazily, when asked for.

    Raises
    ------
    NotALakeError
        If there is no directory at ``url``, or it holds no lake (no manifest, no table, no build
        records); a ``FileNotFoundError``.
    ManifestError
        If ``manifest.json`` is not a JSON object or an entry's path leads outside the lake.

    Examples
    --------
    >>> from tmass_lake import open_lake
    >>> lake = open_lake("s3://bucket/lake", anon=True)  # doctest: +SKIP
    >>> lake["pt_src_c"]  # doctest: +SKIP
    """
    return Lake(url, storage_options)
