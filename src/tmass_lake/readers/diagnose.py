"""Layout diagnosis of headerless bulk files: what each position holds, and a schema for it.

Bulk files carry no names, so they are read by position against a schema. When a real dump's
layout differs from the (often inferred) schema, :func:`diagnose` reads a sample and says, per
position, the inferred type, value range and a sample value, and how the positions line up with
the schema's columns: types, documented widths and scales, and ranges (RA in [0, 360), Dec in
[-90, 90], Julian dates near 2.45e6, magnitudes, never-null columns, flag strings no wider than
documented). Positions are aligned with
the documented columns in order (a sequence alignment, so one inserted or missing column does
not shift everything after it). :func:`proposed_schema` writes the result as a schema file:
documented columns where they line up, ``col_N`` with inferred types elsewhere.
"""

from __future__ import annotations

import io
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath

import numpy as np

from tmass_lake.readers.blocks import iter_line_blocks, open_input
from tmass_lake.readers.bulk import NULL
from tmass_lake.schema import Column, TableSchema

SAMPLE_LINES = 20_000
_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(nan|inf)", re.IGNORECASE)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_INT_RANGES = {"int16": (-(2**15), 2**15 - 1), "int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}
_JD = (2.4e6, 2.5e6)
_MAG = (-5.0, 30.0)  # magnitudes (UCD phot.mag), typically 3..25
GAP = 0.3
"""What leaving a position or a documented column unmatched costs in :func:`align`."""


@dataclass
class Position:
    """What the sampled values at one position of a line look like."""

    index: int
    values: int = 0
    nulls: int = 0
    kind: str = "empty"
    """``int``, ``float``, ``date``, ``string``, or ``empty`` (every value null)."""
    low: float | str | None = None
    high: float | str | None = None
    decimals: int = 0
    width: int = 0
    sample: str = ""
    median: float = np.nan

    @property
    def arrow(self) -> str:
        """The storage type the values need."""
        if self.kind == "int":
            fits = (t for t, (lo, hi) in _INT_RANGES.items() if lo <= self.low and self.high <= hi)
            return next(fits, "string")
        if self.kind == "float":
            big = max(abs(self.low), abs(self.high)) if np.isfinite([self.low, self.high]).all() else 0
            digits = len(str(int(big))) + self.decimals  # float32 keeps 6 significant digits exactly
            return "float64" if digits > 6 else "float32"
        return "date32" if self.kind == "date" else "string"

    @property
    def documented_type(self) -> str:
        """The type as the schema files write one (``12.4f``, ``5d``), marked as inferred."""
        if self.kind == "int":
            return f"inferred: {self.width}d"
        if self.kind == "float":
            return f"inferred: {self.width}.{self.decimals}f"
        if self.kind == "date":
            return "inferred: yyyy-mm-dd"
        return f"inferred: text, up to {self.width} characters in the sample"

    def described(self) -> str:
        if self.kind == "empty":
            return "always null"
        if self.kind in ("int", "float"):
            return f"{self.low:g} .. {self.high:g}"
        return f"{self.low!r} .. {self.high!r}" + (f" ({self.width} chars)" if self.kind == "string" else "")


def profile(index: int, texts: list[str | None]) -> Position:
    """A position's type, range, width and a sample from its sampled texts (``None``: null)."""
    p = Position(index, values=len(texts))
    present = [t for t in texts if t is not None]
    p.nulls = len(texts) - len(present)
    if not present:
        return p
    p.sample = present[0]
    p.width = max(len(t) for t in present)
    if all(_INT.fullmatch(t) for t in present):
        nums = [int(t) for t in present]
        p.kind, p.low, p.high, p.median = "int", min(nums), max(nums), float(np.median(nums))
    elif all(_FLOAT.fullmatch(t) for t in present):
        nums = np.array([float(t) for t in present])
        finite = nums[np.isfinite(nums)]
        p.kind = "float"
        if len(finite):
            p.low, p.high, p.median = float(finite.min()), float(finite.max()), float(np.median(finite))
        else:
            p.low, p.high = np.nan, np.nan
        p.decimals = max(len(t.split(".", 1)[1]) if "." in t and "e" not in t.lower() else 0 for t in present)
    elif all(_DATE.fullmatch(t) for t in present):
        p.kind, p.low, p.high = "date", min(present), max(present)
    else:
        p.kind, p.low, p.high = "string", min(present), max(present)
    return p


def _within(p: Position, lo: float, hi: float, closed: bool = True) -> bool:
    return p.kind in ("int", "float") and lo <= p.low and (p.high <= hi if closed else p.high < hi)


def fit(col: Column, p: Position, schema: TableSchema) -> tuple[float, str]:
    """How well position ``p`` fits documented column ``col``: a score (0: it does not) and why."""
    if p.nulls and not col.nullable:
        return 0.0, f"{col.name} is never null, {p.nulls} sampled values are"
    if p.kind == "empty":
        return 0.25, "always null in the sample"
    t = col.arrow
    score = 1.0
    if t.startswith("int"):
        if p.kind != "int":
            return 0.0, f"{col.name} is an integer, values are {p.kind}"
        lo, hi = _INT_RANGES.get(t, _INT_RANGES["int64"])
        if not lo <= p.low <= p.high <= hi:
            return 0.0, f"{col.name} is {t}, values reach {p.low}..{p.high}"
    elif t.startswith("float"):
        if p.kind not in ("int", "float"):
            return 0.0, f"{col.name} is a number, values are {p.kind}"
        if col.scale is not None and p.decimals > col.scale:
            return 0.0, f"{col.name} has {col.scale} decimals, values {p.decimals}"
        score = 1.0 if p.kind == "float" else 0.5  # whole numbers fit, an integer column fits better
    elif t == "date32":
        if p.kind != "date":
            return 0.0, f"{col.name} is a date, values are {p.kind}"
        score = 2.0
    elif t == "string":
        if col.width is not None and p.width > col.width:
            return 0.0, f"{col.name} is {col.width} characters wide, values up to {p.width}"
        score = 1.5 if p.kind == "string" else 0.5
    julian = col.name == schema.epoch_column or re.search(r"(^|_)j?jd(ate)?$", col.name) is not None
    if col.name == schema.ra_column:
        if not _within(p, 0.0, 360.0, closed=False):
            return 0.0, f"{col.name} (RA) lies in [0, 360), values {p.described()}"
        score += 2
    elif col.name == schema.dec_column:
        if not _within(p, -90.0, 90.0):
            return 0.0, f"{col.name} (Dec) lies in [-90, 90], values {p.described()}"
        score += 2
    elif julian and t.startswith("float"):
        if not _within(p, *_JD):
            return 0.0, f"{col.name} is a Julian date (~2.45e6), values {p.described()}"
        score += 2
    elif _within(p, *_JD) and p.kind == "float":
        return 0.0, f"values {p.described()} look like Julian dates, {col.name} is not one"
    elif (col.ucd or "").startswith("phot.mag") and t.startswith("float"):
        if not (_within(p, *_MAG) and 3.0 <= p.median <= 25.0):
            return 0.0, f"{col.name} is a magnitude, values {p.described()} (median {p.median:g})"
        score += 0.5
    elif (col.ucd or "").startswith("stat.error;phot.mag") and t.startswith("float"):
        if not (_within(p, 0.0, np.inf) and p.median < 2.0):
            return 0.0, f"{col.name} is a magnitude error, values {p.described()} (median {p.median:g})"
        score += 0.5
    return score, "lines up"


def align(positions: list[Position], schema: TableSchema) -> list[Column | None]:
    """The documented column at each position (``None``: none fits), keeping the schema's order.

    A sequence alignment maximising the summed fit less a cost per position or column left
    unmatched: positions and columns are matched in order, so an inserted, dropped or moved
    column costs only itself, and where the values cannot tell columns apart the layout that
    leaves fewer of them unmatched (the schema's own order) wins.
    """
    cols = list(schema.columns)
    n, m = len(positions), len(cols)
    score = np.array([[fit(c, p, schema)[0] for c in cols] for p in positions]).reshape(n, m)
    score[np.eye(n, m, dtype=bool) & (score > 0)] += 0.01  # a tie goes to the column's own position
    best = np.zeros((n + 1, m + 1))
    best[:, 0] = -GAP * np.arange(n + 1)
    best[0, :] = -GAP * np.arange(m + 1)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            s = score[i - 1, j - 1]
            best[i, j] = max(best[i - 1, j] - GAP, best[i, j - 1] - GAP,
                             best[i - 1, j - 1] + s if s > 0 else -np.inf)
    out: list[Column | None] = [None] * n
    i, j = n, m
    while i and j:
        s = score[i - 1, j - 1]
        if np.isclose(best[i, j], best[i - 1, j] - GAP):  # on a tie, unmatched positions go last
            i -= 1
        elif s > 0 and np.isclose(best[i, j], best[i - 1, j - 1] + s):
            out[i - 1] = cols[j - 1]
            i, j = i - 1, j - 1
        else:
            j -= 1
    return out


@dataclass
class Diagnosis:
    """What :func:`diagnose` found in a sample of bulk files."""

    files: list[str]
    lines: int
    field_counts: Counter
    positions: list[Position]
    schema: TableSchema | None = None
    aligned: list[Column | None] = field(default_factory=list)

    @property
    def fields(self) -> int:
        """The field count most sampled lines have (the layout described)."""
        return self.field_counts.most_common(1)[0][0] if self.field_counts else 0

    @property
    def unplaced(self) -> list[str]:
        placed = {c.name for c in self.aligned if c is not None}
        return [c.name for c in self.schema.columns if c.name not in placed] if self.schema else []

    def name(self, i: int) -> str:
        c = self.aligned[i] if self.aligned else None
        return c.name if c is not None else f"col_{i + 1}"


SAMPLE_MAX_LINE_BYTES = 1 << 20
"""A longer line is left out of ``inspect``'s sample (read past, never held)."""
SAMPLE_MAX_BYTES = 256 << 20
"""``inspect`` reads at most this much (decompressed) of each file, whatever its lines."""


class _AtMost(io.RawIOBase):
    """The first ``budget`` bytes of a stream, then its end."""

    def __init__(self, stream: io.IOBase, budget: int):
        self.stream, self.left = stream, budget

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        size = self.left if size is None or size < 0 else min(size, self.left)
        data = self.stream.read(size) if size else b""
        self.left -= len(data)
        return data


def sample_lines(path: str, n: int, storage_options: dict | None = None, *,
                 max_line_bytes: int = SAMPLE_MAX_LINE_BYTES, max_bytes: int = SAMPLE_MAX_BYTES) -> list[str]:
    """The first ``n`` lines of a (compressed or not) file, as text, read in bounded memory: a line
    longer than ``max_line_bytes`` comes back blank, and no more than ``max_bytes`` is read."""
    out: list[str] = []
    with open_input(path, storage_options) as raw:
        stream = _AtMost(raw, max_bytes)
        for block in iter_line_blocks(path, stream, min(4 << 20, max_line_bytes), storage_options,
                                      max_line_bytes=max_line_bytes):
            want = n - len(out)
            parts = block.split(b"\n", want)  # never more than the lines still wanted
            whole = parts[:want] if len(parts) > want else parts[:-1]
            out.extend(p.decode("utf-8", "replace") for p in whole)
            if len(out) >= n:
                break
    return out[:n]


def diagnose(paths: list[str], schema: TableSchema | None = None, *, sample: int = SAMPLE_LINES,
             storage_options: dict | None = None) -> Diagnosis:
    """Profile the first ``sample`` lines of each file; line the positions up with ``schema``."""
    lines = [line for p in paths for line in sample_lines(p, sample, storage_options) if line.strip()]
    split = [line.split("|") for line in lines]
    counts = Counter(len(f) for f in split)
    width = counts.most_common(1)[0][0] if counts else 0
    rows = [f for f in split if len(f) == width]
    positions = [profile(i, [None if r[i] == NULL else r[i].rstrip() for r in rows]) for i in range(width)]
    d = Diagnosis(list(paths), len(lines), counts, positions, schema)
    if schema is not None:
        d.aligned = align(positions, schema)
    return d


def format_diagnosis(d: Diagnosis) -> str:
    """The report ``tmass-lake inspect`` prints."""
    out = [f"{len(d.files)} file(s), {d.lines:,} lines sampled: " + ", ".join(d.files)]
    out.append("fields per line: " + ", ".join(f"{n} ({c:,} lines)" for n, c in d.field_counts.most_common()))
    s = d.schema
    if s is not None:
        lined = sum(c is not None for c in d.aligned)
        out.append(f"against {s.table} ({len(s.columns)} columns, layout {s.layout_status}): {lined} of "
                   f"{len(d.positions)} positions line up"
                   + (f"; not found: {', '.join(d.unplaced)}" if d.unplaced else ""))
    out.append("")
    out.append(f"{'pos':>4}  {'type':<8} {'nulls':>6}  {'range':<34} {'sample':<18} column")
    for i, p in enumerate(d.positions):
        note = d.name(i)
        if s is not None and d.aligned[i] is None and i < len(s.columns):
            note += f"  ({s.columns[i].name} here by position: {fit(s.columns[i], p, s)[1]})"
        nulls = f"{100 * p.nulls / max(p.values, 1):.0f}%"
        out.append(f"{i + 1:>4}  {p.arrow:<8} {nulls:>6}  {p.described()[:34]:<34} {p.sample[:18]:<18} "
                   f"{note}")
    return "\n".join(out)


def proposed_schema(d: Diagnosis, table: str | None = None) -> dict:
    """A schema file (as a dict, for YAML) for the sampled layout: documented columns where they
    line up, ``col_N`` with the inferred type elsewhere; ``layout_status: inferred from FILE``."""
    s = d.schema
    first = PurePosixPath(d.files[0]).name if d.files else "?"
    columns = []
    for i, p in enumerate(d.positions):
        c = d.aligned[i] if d.aligned else None
        if c is not None:
            entry = asdict(c) | {"aliases": list(c.aliases)}
            entry["source"] = f"{c.source}; position {i + 1} of {first} (tmass-lake inspect)"
            if not entry["aliases"]:
                del entry["aliases"]
        else:
            entry = {"name": f"col_{i + 1}", "type": p.documented_type, "arrow": p.arrow, "unit": None,
                     "ucd": None, "description": f"position {i + 1}, not a documented column: values "
                                                 f"{p.described()}, e.g. {p.sample!r}",
                     "nullable": True, "provenance": "inferred",
                     "source": f"tmass-lake inspect of {first}: {p.values:,} sampled values"}
        columns.append(entry)
    names = {c["name"] for c in columns}

    def kept(name: str | None) -> str | None:
        return name if name in names else None

    lined = sum(c is not None for c in d.aligned) if d.aligned else 0
    note = (f"Proposed by tmass-lake inspect from {d.lines:,} sampled lines of {', '.join(d.files)} "
            f"({d.fields} fields per line): {lined} positions line up with documented columns of "
            f"{s.table if s else 'no schema'}, {len(d.positions) - lined} are col_N with inferred types."
            + (f" Not found: {', '.join(d.unplaced)}." if d.unplaced else "") + " Review before use.")
    return {
        "table": table or (s.table if s else "inferred"), "title": s.title if s else f"Layout of {first}",
        "product": s.product if s else "", "kind": s.kind if s else "inferred",
        "layout_status": f"inferred from {first}", "layout_note": note,
        "rows": s.rows if s else None, "rows_source": s.rows_source if s else None,
        "irsa_key": s.irsa_key if s else None, "irsa_columns": s.irsa_columns if s else None,
        "default_constraint": s.default_constraint if s else None,
        "documentation": s.documentation if s else None,
        "key_column": kept(s.key_column) if s else None, "ra_column": kept(s.ra_column) if s else None,
        "dec_column": kept(s.dec_column) if s else None, "epoch_column": kept(s.epoch_column) if s else None,
        "sources": [*(s.sources if s else ()), f"tmass-lake inspect of {', '.join(d.files)}"],
        "links": dict(s.links) if s and s.links else {},
        "columns": columns,
    }
