"""The lake card: ``LAKE/report/index.html`` and a page per table, plain HTML and CSS.

Written from Python with every value HTML-escaped; no script, nothing fetched from the network,
only relative links to the report's own PNGs and pages, so the directory can be copied or
served anywhere. What a page shows comes from :class:`TableCard` (built by the report from the
manifest, each table's ``_common_metadata`` and its skymap).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape

CSS_FILE = "card.css"
INDEX = "index.html"
TABLE_DIR = "tables"

CSS = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 0; color: #1d2330; background: #f6f7f9; }
header { background: #1f3b63; color: #fff; padding: 14px 28px; }
header a { color: #cfe0ff; } header h1 { margin: 0; font-size: 22px; }
main { padding: 14px 28px 40px; max-width: 1250px; }
h2 { margin-top: 28px; border-bottom: 1px solid #d5d9e0; padding-bottom: 4px; }
table { border-collapse: collapse; background: #fff; font-size: 13px; }
th, td { border: 1px solid #d5d9e0; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #e8ecf2; position: sticky; top: 0; }
td.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr:nth-child(even) td { background: #fafbfc; }
.status-documented { color: #176b2c; } .status-partial, .status-inferred { color: #8a5a00; }
.status-incomplete { color: #a3201b; }
.badge { display: inline-block; padding: 0 6px; border-radius: 8px; background: #e8ecf2; font-size: 12px; }
pre { background: #10161f; color: #e6edf3; padding: 10px 14px; overflow-x: auto; border-radius: 6px;
      user-select: all; }
figure { margin: 10px 0; } figure img { max-width: 100%; border: 1px solid #d5d9e0; background: #fff; }
figcaption { font-size: 13px; color: #4a5363; }
.note { color: #4a5363; font-size: 13px; max-width: 1000px; }
nav.toc a { margin-right: 12px; }
"""


@dataclass(frozen=True)
class ColumnCard:
    """One column of a table page."""

    name: str
    type: str
    unit: str = ""
    ucd: str = ""
    description: str = ""
    provenance: str = ""
    source: str = ""
    drift: str = ""


@dataclass(frozen=True)
class Field:
    """A connected patch of sky holding a table's rows (a calibration field, a 6x region...)."""

    ra: float
    dec: float
    width_deg: float
    height_deg: float
    rows: int


@dataclass(frozen=True)
class Plot:
    """A PNG of the report and what it shows."""

    file: str
    caption: str


@dataclass
class TableCard:
    """Everything a table's page (and its row on the index) shows."""

    name: str
    family: str
    type: str
    title: str
    rows: int
    rows_quarantined: int
    partitions: int
    bytes: int
    layout_status: str
    layout_source: str
    status: str
    open_code: str
    columns: list[ColumnCard] = field(default_factory=list)
    drift: str = ""
    orders: dict[str, int] = field(default_factory=dict)
    partition_rows: tuple[int, int, int] | None = None  # min, median, max rows per partition
    max_rows: int | None = None  # the pixel threshold of the build
    fields: list[Field] = field(default_factory=list)
    sky_fraction: float | None = None
    plots: list[Plot] = field(default_factory=list)
    derived_from: str = ""
    indexes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LakeCard:
    """The index page: the lake's tables, totals, what was skipped and the headline plots."""

    lake: str
    updated: str
    tables: list[TableCard]
    totals: dict
    skipped: dict[str, str]
    tools: dict[str, str]
    plots: list[Plot]


def _e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def _n(value: int | None) -> str:
    return "" if value is None else f"{value:,}"


def _mib(n: int) -> str:
    return f"{n / 2**20:,.2f}"


def _row(*cells: object, numeric: bool = False) -> str:
    cls = ' class="n"' if numeric else ""
    return "<tr>" + "".join(f"<td{cls}>{_e(c)}</td>" for c in cells) + "</tr>"


def _page(title: str, body: str, css: str, home: str | None) -> str:
    back = f' · <a href="{_e(home)}">all tables</a>' if home else ""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{_e(title)}</title><link rel="stylesheet" href="{_e(css)}"></head>\n'
            f'<body><header><h1>{_e(title)}</h1><div>2MASS Extended Mission data lake (tmass-lake){back}'
            f'</div></header>\n<main>\n{body}\n</main></body></html>\n')


def _status(status: str) -> str:
    word = status.split()[0] if status else ""
    return f'<span class="status-{_e(word)}">{_e(status)}</span>'


def _figure(plot: Plot, prefix: str = "") -> str:
    return (f'<figure><img src="{_e(prefix + plot.file)}" alt="{_e(plot.caption)}">'
            f'<figcaption>{_e(plot.caption)}</figcaption></figure>')


def table_page(card: TableCard) -> str:
    """A table's page: facts, how to open it, coverage, partitions, light curve, columns."""
    facts = [("family", card.family), ("type", card.type), ("rows", _n(card.rows)),
             ("rows quarantined", _n(card.rows_quarantined)), ("partitions", _n(card.partitions)),
             ("data", f"{_mib(card.bytes)} MiB"), ("status", card.status)]
    if card.derived_from:
        facts.append(("derived from", card.derived_from))
    if card.indexes:
        facts.append(("indexes", ", ".join(card.indexes)))
    body = [f"<p>{_e(card.title)}</p>", "<table>"]
    body += [f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in facts]
    body.append(f"<tr><th>layout</th><td>{_status(card.layout_status)}</td></tr>")
    body.append(f'<tr><th>layout source</th><td class="note">{_e(card.layout_source)}</td></tr>')
    if card.drift:
        body.append(f'<tr><th>input columns</th><td class="note">{_e(card.drift)}</td></tr>')
    body.append("</table>")
    body.append('<h2 id="open">Open it</h2><pre><code>' + _e(card.open_code) + "</code></pre>")
    if card.fields or card.sky_fraction is not None:
        body.append('<h2 id="coverage">Coverage</h2>')
        if card.sky_fraction is not None:
            body.append(f'<p class="note">Rows cover {card.sky_fraction:.3%} of the sky '
                        f'(HEALPix order-6 cells with rows){_fields_note(card)}.</p>')
        if card.fields:
            body.append("<table><tr><th>#</th><th>RA (deg)</th><th>Dec (deg)</th><th>extent (deg)</th>"
                        "<th>rows</th></tr>")
            body += [_row(i, f"{f.ra:.3f}", f"{f.dec:+.3f}", f"{f.width_deg:.2f} × {f.height_deg:.2f}",
                          _n(f.rows), numeric=True) for i, f in enumerate(card.fields, 1)]
            body.append("</table>")
    for plot in card.plots:
        if plot.file.endswith(("_fields.png", "_coverage.png")):
            body.append(_figure(plot, "../"))
    if card.orders:
        body.append('<h2 id="partitions">Partitions</h2><table><tr><th>HEALPix order</th><th>partitions</th>'
                    "</tr>")
        body += [_row(k, _n(v), numeric=True) for k, v in card.orders.items()]
        body.append("</table>")
        if card.partition_rows:
            lo, mid, hi = card.partition_rows
            limit = f" (the build's limit: {card.max_rows:,})" if card.max_rows else ""
            body.append(f'<p class="note">Rows per partition: {lo:,} min, {mid:,} median, {hi:,} max'
                        f'{_e(limit)}.</p>')
    for plot in card.plots:
        if plot.file.endswith(("_orders.png", "_lightcurve.png")):
            if plot.file.endswith("_lightcurve.png"):
                body.append('<h2 id="lightcurve">A light curve</h2>')
            body.append(_figure(plot, "../"))
    if card.columns:
        body.append(f'<h2 id="columns">Columns ({len(card.columns)})</h2>')
        body.append("<table><tr><th>name</th><th>type</th><th>unit</th><th>UCD</th><th>description</th>"
                    "<th>provenance</th><th>drift</th></tr>")
        for c in card.columns:
            prov = _e(c.provenance) + (f'<br><span class="note">{_e(c.source)}</span>' if c.source else "")
            body.append(f"<tr><td><code>{_e(c.name)}</code></td><td>{_e(c.type)}</td><td>{_e(c.unit)}</td>"
                        f"<td>{_e(c.ucd)}</td><td>{_e(c.description)}</td><td>{prov}</td><td>{_e(c.drift)}</td></tr>")
        body.append("</table>")
    return _page(card.name, "\n".join(body), f"../{CSS_FILE}", f"../{INDEX}")


def _fields_note(card: TableCard) -> str:
    if not card.fields:
        return ""
    return f"; {len(card.fields)} separate field{'s' if len(card.fields) > 1 else ''}, largest first"


def index_page(lake: LakeCard) -> str:
    """The lake's front page: one row per table, totals, skipped tables, headline plots."""
    t = lake.totals
    body = [f'<p>Lake <code>{_e(lake.lake)}</code>, updated {_e(lake.updated)}: {t.get("tables", 0)} tables '
            f'({t.get("collections", 0)} HATS collections, {t.get("parquet_tables", 0)} Parquet), '
            f'{t.get("rows", 0):,} rows from inputs, {t.get("rows_quarantined", 0):,} quarantined, '
            f'{_mib(t.get("bytes", 0))} MiB.</p>',
            '<nav class="toc"><a href="#tables">tables</a><a href="#plots">plots</a>'
            '<a href="report.txt">report.txt</a><a href="report.json">report.json</a></nav>',
            '<h2 id="tables">Tables</h2>',
            "<table><tr><th>table</th><th>family</th><th>type</th><th>rows</th><th>quarantined</th>"
            "<th>partitions</th><th>MiB</th><th>layout</th><th>layout source</th><th>status</th></tr>"]
    for c in lake.tables:
        body.append(f'<tr><td><a href="{TABLE_DIR}/{_e(c.name)}.html">{_e(c.name)}</a></td>'
                    f'<td>{_e(c.family)}</td><td>{_e(c.type)}</td><td class="n">{_n(c.rows)}</td>'
                    f'<td class="n">{_n(c.rows_quarantined)}</td><td class="n">{_n(c.partitions)}</td>'
                    f'<td class="n">{_mib(c.bytes)}</td>'
                    f'<td>{_status(c.layout_status)}</td><td class="note">{_e(_short(c.layout_source))}</td>'
                    f'<td>{_e(c.status)}</td></tr>')
    body.append("</table>")
    if lake.skipped:
        body.append("<h2>Skipped</h2><table><tr><th>table</th><th>why</th></tr>")
        body += [f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in sorted(lake.skipped.items())]
        body.append("</table>")
    body.append('<h2 id="plots">Plots that matter</h2>')
    body += [_figure(p) for p in lake.plots]
    tools = ", ".join(f"{k} {v}" for k, v in lake.tools.items())
    body.append(f'<p class="note">Built with {_e(tools)}.</p>')
    return _page("tmass-lake: lake card", "\n".join(body), CSS_FILE, None)


def _short(text: str, limit: int = 140) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
