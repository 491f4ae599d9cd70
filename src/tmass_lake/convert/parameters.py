"""Every build's parameters, decided in one place.

The command line, the pipeline files, the Python API and the benchmarks all describe a build
the same way: :func:`resolve_parameters` layers explicitly given values (later layers win; a
``None`` value means "not given") over the defaults of :class:`BuildParameters`, and
:func:`table_arguments` places a table's output and scratch space. Scratch always lives where
every worker can reach it: under the output (``OUTPUT/_build``), or under ``--tmp-dir`` (any
fsspec URL) in a subdirectory named after the output, so two outputs never share one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import numbers
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, fields, replace
from typing import Any

from tmass_lake.errors import UserError
from tmass_lake.readers import AUTO, FORMATS
from tmass_lake.readers.blocks import DEFAULT_MAX_LINE_BYTES
from tmass_lake.readers.tap import TapOptions, is_tap
from tmass_lake.schema import TableSchema, check_table_name
from tmass_lake.storage import join

HISTOGRAM_ORDER = 10
"""Order of the fine HEALPix histogram the map stage counts rows in (and the deepest partition)."""
MIN_RUN_BYTES, MAX_RUN_BYTES = 16 << 20, 256 << 20
DEFAULT_MEMORY_BYTES = 4 << 30
MAX_MARGIN_ARCSEC = 3600.0
"""The widest margin cache allowed (one degree; 2MASS needs ~10")."""
ZSTD_LEVELS = (1, 22)


@dataclass(frozen=True)
class BuildParameters:
    """The knobs of a table build (positional tables use them all; Parquet tables the first)."""

    input_format: str = AUTO
    """A reader (``bulk``, ``ipac``, ``votable``, ``csv``, ``parquet``) or ``auto``: each file as it looks."""
    pixel_threshold: int = 1_000_000
    byte_threshold: int = 512 << 20
    lowest_order: int = 0
    highest_order: int = HISTOGRAM_ORDER
    margin_arcsec: float = 10.0
    run_bytes: int | None = None
    """Spill-run size; ``None``: from the workers' memory limit (:func:`run_bytes_for`)."""
    block_bytes: int = 16 << 20
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    """A longer input line is quarantined by its first bytes and length, never held whole."""
    compression_level: int = 3
    """zstd level of the data files: 3, from ``benchmarks/bench_compression.py`` (README, Benchmarks).
    hats' default 15 costs ~11x the write CPU for ~10% fewer bytes, 9 ~2.6x for ~2.4%, and 1 saves
    ~14% of it for ~1% more; reading a partition (local or S3) takes about as long at each level."""
    allow_duplicate_content: bool = False
    strict_layout: bool = False
    """Inputs with a header: documented columns they lack, or columns the schema does not list, are
    an error (``--strict-layout``), not drift."""
    where: str | None = None
    """TAP inputs: an ADQL condition the harvested rows must meet (``--where``)."""
    tap_key: str | None = None
    """TAP inputs: the integer column the harvest is split on (default: the schema's key column)."""
    tap_table: str | None = None
    """TAP inputs: the service's full name of the table (``SCHEMA.NAME``; default: found by name)."""
    tap_chunk_rows: int = 1_000_000
    """TAP inputs: rows per harvest chunk (one query, one Dask task) at most."""
    tap_concurrency: int = 4
    """TAP inputs: queries in flight on one service at most, over the whole cluster."""
    tap_sync_rows: int = 100_000
    """TAP inputs: chunks of up to this many rows run as sync queries, larger ones as async jobs."""
    tap_retries: int = 5
    """TAP inputs: attempts after the first for a query failing with a 5xx, timeout or lost connection."""
    tap_backoff: float = 1.0
    """TAP inputs: first wait between attempts, in seconds (doubled each time, at most 60 s)."""
    tap_timeout: float = 3600.0
    """TAP inputs: seconds to wait for one query's answer (an async job included)."""

    def __post_init__(self) -> None:
        for f in fields(self):
            _check_kind(f.name, getattr(self, f.name))
        if self.input_format not in FORMATS:
            raise UserError(f"input format must be one of {', '.join(FORMATS)}, not {self.input_format!r}")
        if not 0 <= self.lowest_order <= self.highest_order <= HISTOGRAM_ORDER:
            raise UserError(f"orders must satisfy 0 <= lowest ({self.lowest_order}) <= highest "
                            f"({self.highest_order}) <= {HISTOGRAM_ORDER}")
        for name in ("pixel_threshold", "byte_threshold", "block_bytes", "max_line_bytes", "tap_chunk_rows",
                     "tap_concurrency", "tap_sync_rows"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be positive, not {getattr(self, name)}")
        if self.run_bytes is not None and self.run_bytes < 1:
            raise UserError(f"run_bytes must be positive, not {self.run_bytes}")
        if not 0 < self.margin_arcsec <= MAX_MARGIN_ARCSEC:
            raise UserError(f"margin_arcsec must be a number of arcseconds > 0 and <= {MAX_MARGIN_ARCSEC:g}, "
                            f"not {self.margin_arcsec}")
        if not ZSTD_LEVELS[0] <= self.compression_level <= ZSTD_LEVELS[1]:
            low, high = ZSTD_LEVELS
            raise UserError(f"compression_level must be a zstd level from {low} to {high}, "
                            f"not {self.compression_level}")
        if self.tap_retries < 0 or self.tap_backoff < 0 or self.tap_timeout <= 0:
            raise UserError("tap_retries and tap_backoff must be >= 0 and tap_timeout positive")

    def partitioning(self) -> dict[str, Any]:
        """What a resumed build must share with the interrupted one (the rest may change)."""
        keep = ("input_format", "pixel_threshold", "byte_threshold", "lowest_order", "highest_order",
                "margin_arcsec", "compression_level", "max_line_bytes", "where", "tap_key", "tap_table",
                "tap_chunk_rows")
        return {k: getattr(self, k) for k in keep}

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PARAMETER_NAMES = tuple(f.name for f in fields(BuildParameters))
_KINDS: dict[str, type] = {name: int for name in PARAMETER_NAMES} | {
    "input_format": str, "margin_arcsec": float, "allow_duplicate_content": bool, "strict_layout": bool,
    "where": str, "tap_key": str, "tap_table": str, "tap_backoff": float, "tap_timeout": float}


def resolve_parameters(*layers: Mapping[str, Any], where: str = "build parameters") -> BuildParameters:
    """The defaults overridden by each layer in turn; unknown names and bad values name ``where``."""
    values: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if key not in PARAMETER_NAMES:
                raise UserError(f"{where}: unknown parameter {key!r} (known: {', '.join(PARAMETER_NAMES)})")
            if value is not None:
                values[key] = _coerce(key, value, where)
    try:
        return BuildParameters(**values)
    except UserError as e:
        raise UserError(f"{where}: {e}") from None


_ALLOWED = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}


def _check_kind(key: str, value: Any) -> None:
    """Refuse a value of the wrong type: a bool is not a number, NaN and infinities are no number."""
    kind = _KINDS[key]
    if value is None and dataclasses.fields(BuildParameters)[PARAMETER_NAMES.index(key)].default is None:
        return
    ok = {bool: lambda v: isinstance(v, bool),
          int: lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool),
          float: lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v),
          str: lambda v: isinstance(v, str)}[kind](value)
    if not ok:
        raise UserError(f"{key} must be {_ALLOWED[kind]}, not {_shown(value)}")


def _shown(value: Any) -> str:
    text = str(value).lower() if isinstance(value, bool) else repr(value)
    return text if len(text) <= 40 else text[:40] + "..."


def _coerce(key: str, value: Any, where: str) -> Any:
    """``value`` as ``key``'s type: an integral float is an integer, an integer a float; nothing else."""
    kind = _KINDS[key]
    if kind is int and isinstance(value, float) and not isinstance(value, bool) and value.is_integer() \
            and math.isfinite(value):
        value = int(value)
    elif kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    try:
        _check_kind(key, value)
    except UserError as e:
        raise UserError(f"{where}: {e}") from None
    return value


def tap_options(params: BuildParameters, limiter: AbstractContextManager | None = None) -> TapOptions:
    """How a build talks to a TAP service (``limiter``: held around each query, e.g. a Dask semaphore)."""
    return TapOptions(retries=params.tap_retries, backoff=params.tap_backoff, timeout=params.tap_timeout,
                      sync_rows=params.tap_sync_rows, limiter=limiter)


def run_bytes_for(memory_limit: int | None) -> int:
    """Spill-run size for a worker memory budget: a run is sorted in memory at ~3x its size."""
    budget = memory_limit or DEFAULT_MEMORY_BYTES
    return int(max(MIN_RUN_BYTES, min(MAX_RUN_BYTES, budget // 12)))  # an integer, as the parameter must be


def scratch_url(output: str, tmp_dir: str | None = None) -> str:
    """Scratch space of a build into ``output``: ``OUTPUT/_build``, or a subdirectory of ``tmp_dir``."""
    if not tmp_dir:
        return join(output, "_build")
    name = output.rstrip("/").rsplit("/", 1)[-1] or "output"
    return join(tmp_dir, f"{name}-{hashlib.sha1(output.encode()).hexdigest()[:12]}")


@dataclass(frozen=True)
class TableArguments:
    """One table build: the table, its inputs, where it goes, how; what every stage takes."""

    schema: TableSchema
    inputs: tuple[str, ...]
    output: str
    scratch: str
    params: BuildParameters = field(default_factory=BuildParameters)
    indexes: tuple[str, ...] = ()
    storage_options: dict = field(default_factory=dict)
    resume: bool = False
    progress: bool = True
    tap: TapOptions | None = None
    """TAP chunks among the inputs: how to query their service (set by the harvest stage)."""

    def __post_init__(self) -> None:
        check_table_name(self.schema.table)
        if not self.inputs:
            raise UserError(f"{self.table}: no input files")
        if len(set(self.inputs)) != len(self.inputs):
            dup = sorted({p for p in self.inputs if self.inputs.count(p) > 1})
            raise UserError(f"{self.table}: input files listed more than once: {', '.join(dup)}")
        if self.params.where and not any(is_tap(u) for u in self.inputs):
            raise UserError(f"{self.table}: --where selects rows on a TAP service, but the inputs are files")
        missing = [c for c in self.indexes if c not in self.schema.names]
        if missing:
            raise UserError(f"{self.table}: index column(s) {', '.join(missing)} not in its schema")
        if self.indexes and not self.schema.positional:
            raise UserError(f"{self.table} has no positions, so no HATS catalog to index")

    @property
    def table(self) -> str:
        return self.schema.table

    def input_key(self, index: int) -> str:
        """A stable, file-name-safe key for one input (its position and a hash of its URL)."""
        digest = hashlib.sha1(self.inputs[index].encode()).hexdigest()[:10]
        return f"{index:05d}_{digest}"

    def path(self, *parts: str) -> str:
        """A URL under the scratch space."""
        return join(self.scratch, *parts)

    def with_params(self, **changes: Any) -> TableArguments:
        return replace(self, params=replace(self.params, **changes))


def table_arguments(schema: TableSchema, inputs: list[str] | tuple[str, ...], output: str, *,
                    params: BuildParameters | None = None, tmp_dir: str | None = None,
                    indexes: tuple[str, ...] | list[str] = (), storage_options: dict | None = None,
                    resume: bool = False, progress: bool = True) -> TableArguments:
    """The arguments of one table build, its scratch space placed by :func:`scratch_url`."""
    output = output.rstrip("/")
    return TableArguments(schema=schema, inputs=tuple(inputs), output=output,
                          scratch=scratch_url(output, tmp_dir), params=params or BuildParameters(),
                          indexes=tuple(indexes), storage_options=dict(storage_options or {}),
                          resume=resume, progress=progress)
