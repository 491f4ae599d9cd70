"""VOTables, as IRSA's TAP service returns query results (TABLEDATA or BINARY2 serialisation).

Read with astropy's VOTable parser: each FIELD's name, datatype, unit, UCD and description
describe the column; names are matched to the table schema (:mod:`tmass_lake.readers.matching`).
Empty cells and empty strings are null. A value astropy cannot read (TABLEDATA text that is not
a number of the FIELD's datatype) is not silently blanked: the table is then read again as text
and that row quarantined. In the quarantine, ``line`` is the row number (1 = first row).

:func:`parse_votable` turns VOTable bytes or an astropy table into one :class:`ParsedBlock`
(what a TAP client holds after a query); :func:`read_votable` reads a file.
"""

from __future__ import annotations

import io
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from astropy.io import votable
from astropy.io.votable.exceptions import VOWarning
from astropy.io.votable.tree import TableElement, VOTableFile
from astropy.table import Table

from tmass_lake.errors import InputError
from tmass_lake.readers.blocks import (
    DEFAULT_BLOCK_BYTES,
    FileDigest,
    ParsedBlock,
    open_input,
    read_at_most,
)
from tmass_lake.readers.matching import InputColumn, match_columns, row_text, typed_block
from tmass_lake.readers.values import shown
from tmass_lake.schema import TableSchema

VOTABLE_TYPES = {
    "boolean": pa.bool_(), "bit": pa.bool_(), "unsignedByte": pa.int16(), "short": pa.int16(),
    "int": pa.int32(), "long": pa.int64(), "float": pa.float32(), "double": pa.float64(),
    "char": pa.string(), "unicodeChar": pa.string(),
}
"""VOTable datatypes as Arrow types (complex numbers and arrays are kept as their text)."""
_VALUE_WARNINGS = ("W30", "W49", "E02", "E10")  # a cell astropy could not read (and would blank)
MAX_VOTABLE_BYTES = 256 << 20
"""Largest VOTable file read (decompressed): a VOTable is parsed whole, in memory."""
_DECLARATIONS = (b"<!DOCTYPE", b"<!ENTITY")


def refuse_declarations(data: bytes, path: str) -> None:
    """Refuse XML with a document type or entity declarations: VOTables need none, and expanding
    entities (internal ones nest exponentially, external ones name other files) is never safe."""
    for mark in _DECLARATIONS:
        at = data.find(mark)
        if at >= 0:
            line = data.count(b"\n", 0, at) + 1
            raise InputError(path, f"declares {mark.decode()[2:]} (XML entities): refused, a VOTable needs "
                                   "none and they are never expanded", line=line)


class _BadValue(Exception):
    """A cell astropy could not read as its FIELD's datatype."""


def _arrow_type(datatype: str, arraysize: str | None) -> pa.DataType:
    if arraysize and datatype not in ("char", "unicodeChar"):
        return pa.string()
    return VOTABLE_TYPES.get(datatype, pa.string())


def _column(values: np.ndarray, mask: np.ndarray | None, t: pa.DataType) -> pa.Array:
    """One column of astropy's (masked) array as Arrow; empty strings and arrays' text as such."""
    mask = None if mask is None or not np.any(mask) else np.asarray(mask, bool)
    if values.ndim > 1 or (values.dtype == object and not pa.types.is_string(t)):
        text = [" ".join(map(str, np.ravel(v))) for v in values]
        return pa.array(text, pa.string(), mask=mask)
    if pa.types.is_string(t):
        arr = pa.array([v.decode() if isinstance(v, bytes) else v for v in values], pa.string(), mask=mask)
        return pc.if_else(pc.equal(arr, ""), pa.scalar(None, pa.string()), arr)
    return pa.array(np.asarray(values), mask=mask).cast(t)


def _from_astropy(table: Table) -> tuple[list[InputColumn], pa.Table]:
    """Input columns and their typed values from an astropy table (as ``to_table`` gives it)."""
    columns, arrays = [], []
    for col in table.itercols():
        meta = col.meta or {}
        datatype = meta.get("datatype") or ""
        t = (_arrow_type(datatype, meta.get("arraysize")) if datatype else
             pa.string() if col.dtype.kind in "USO" else pa.from_numpy_dtype(col.dtype))
        unit = str(col.unit) if col.unit else None
        columns.append(InputColumn(col.name, t, datatype or str(col.dtype), unit, meta.get("ucd"),
                                   col.description or ""))
        arrays.append(_column(np.asarray(col), getattr(col, "mask", None), t))
    return columns, pa.table(dict(zip([c.name for c in columns], arrays, strict=True)))


def _from_element(element: TableElement) -> tuple[list[InputColumn], pa.Table]:
    """Input columns (from the FIELDs) and their typed values from a parsed VOTable table."""
    columns, arrays = [], []
    data = element.array
    for f, key in zip(element.fields, data.dtype.names or (), strict=True):
        t = _arrow_type(f.datatype, f.arraysize)
        columns.append(InputColumn(f.name, t, f.datatype, str(f.unit) if f.unit else None, f.ucd,
                                   f.description or ""))
        arrays.append(_column(np.asarray(data[key].data), np.ma.getmaskarray(data[key]), t))
    names = [c.name for c in columns]
    return columns, pa.Table.from_arrays(arrays, names=names) if arrays else pa.table({})


def _first_table(doc: VOTableFile, path: str) -> TableElement:
    for info in doc.iter_info():
        if info.name == "QUERY_STATUS" and info.value == "ERROR":
            raise InputError(path, f"is a failed query's answer: {(info.content or '').strip()}")
    try:
        return doc.get_first_table()
    except IndexError:
        raise InputError(path, "is a VOTable without a TABLE") from None


def _parse(data: bytes, path: str) -> TableElement:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", VOWarning)
        try:
            doc = votable.parse(io.BytesIO(data), verify="warn")
        except ValueError as e:
            if " (in row " in str(e):
                raise _BadValue(str(e)) from e
            raise InputError(path, f"cannot be read as a VOTable: {e}") from e
        except ET.ParseError as e:
            raise InputError(path, f"is not well-formed XML: {e}") from e
    bad = [w for w in caught if type(w.message).__name__ in _VALUE_WARNINGS]
    if bad:
        raise _BadValue(str(bad[0].message))
    return _first_table(doc, path)


def _text_cells(data: bytes) -> tuple[list[InputColumn], pa.Table, dict[int, str]]:
    """The first TABLE's FIELDs and its TABLEDATA cells as text (to find unreadable cells' rows),
    and the rows whose cell count is not the FIELD count."""
    columns: list[InputColumn] = []
    rows: list[list[str | None]] = []
    row: list[str | None] = []
    in_table = False
    for event, el in _events(data):
        tag = el.tag.rsplit("}", 1)[-1]
        if event == "start":
            if tag == "TABLE":
                if in_table:
                    break
                in_table = True
            elif tag == "TR":
                row = []
            continue
        if tag == "FIELD" and in_table:
            desc = next((c.text or "" for c in el if c.tag.rsplit("}", 1)[-1] == "DESCRIPTION"), "")
            dt = el.get("datatype", "char")
            columns.append(InputColumn(el.get("name", ""), _arrow_type(dt, el.get("arraysize")), dt,
                                       el.get("unit"), el.get("ucd"), desc.strip()))
        elif tag == "TD":
            row.append(el.text.strip() if el.text and el.text.strip() else None)
        elif tag == "TR":
            rows.append(row)
            el.clear()
        elif tag == "TABLE":
            break
    names = [c.name for c in columns]
    bad = {i: f"{len(r)} cells where the table has {len(names)} FIELDs: {shown(' | '.join(map(str, r)))}"
           for i, r in enumerate(rows) if len(r) != len(names)}
    cells = [r if len(r) == len(names) else [None] * len(names) for r in rows]
    table = pa.table({n: pa.array([r[k] for r in cells], pa.string()) for k, n in enumerate(names)})
    return columns, table, bad


def _events(data: bytes) -> Iterator[tuple[str, ET.Element]]:
    try:
        yield from ET.iterparse(io.BytesIO(data), events=("start", "end"))
    except ET.ParseError as e:
        raise _NotXML(str(e)) from e


class _NotXML(Exception):
    """XML that does not parse (found while looking for a bad cell's row)."""


def parse_votable(source: bytes | Table | TableElement, schema: TableSchema | None, *,
                  path: str = "<votable>", first_line: int = 1,
                  source_name: str | None = None) -> ParsedBlock:
    """A VOTable (its bytes, or a table astropy already holds) on ``schema`` as one :class:`ParsedBlock`.

    Columns match the schema by name or alias; rows whose values break the schema are in the
    block's quarantine with their row number (counted from ``first_line``: a TAP chunk's answers
    continue each other); ``block.layout`` says what matched (the drift) and where the layout came
    from (``source_name``, default ``votable header``).
    """
    bad: dict[int, str] = {}
    if isinstance(source, Table):
        columns, table = _from_astropy(source)
    elif isinstance(source, TableElement):
        columns, table = _from_element(source)
    else:
        refuse_declarations(source, path)
        try:
            columns, table = _from_element(_parse(source, path))
        except _BadValue as e:
            try:
                columns, table, bad = _text_cells(source)  # TABLEDATA: find the rows, keep the rest
            except _NotXML as x:
                raise InputError(path, f"is not well-formed XML: {x} (after: {str(e)[:200]})") from None
    layout = match_columns(path, "votable", columns, schema, source=source_name)
    n = table.num_rows
    keep = np.array([i not in bad for i in range(n)], bool)
    return typed_block(path, first_line, n, table.filter(pa.array(keep)), np.flatnonzero(keep), bad, layout,
                       schema, row_text(table))


def read_votable(
    path: str,
    schema: TableSchema | None = None,
    *,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    storage_options: dict | None = None,
    digest: FileDigest | None = None,
    max_bytes: int = MAX_VOTABLE_BYTES,
) -> Iterator[ParsedBlock]:
    """Read a VOTable file (any fsspec URL, compressed or not) as one typed block.

    It is parsed whole, so a file of more than ``max_bytes`` (decompressed) is refused before
    it is held: memory stays bounded.
    """
    with open_input(path, storage_options, digest) as stream:
        data = read_at_most(path, stream, max_bytes, storage_options)
    if data is None:
        raise InputError(path, f"is a VOTable of more than {max_bytes / 2**20:,.0f} MiB (decompressed): "
                               "refused, a VOTable is parsed whole in memory; split it, or convert it to "
                               "Parquet (read in bounded batches)")
    if not data.strip():
        raise InputError(path, "is empty")
    yield parse_votable(data, schema, path=path)
