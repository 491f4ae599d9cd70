"""The lake card's pages and the report's footprints, on made-up cards and skymaps (no lake).

The card of a built lake in a browser: ``test_lake_build.py::test_lake_card_renders_in_chromium``.
"""

from __future__ import annotations

from html.parser import HTMLParser

import astropy.units as u
import numpy as np
from astropy.coordinates import Latitude, Longitude
from cdshealpix.nested import lonlat_to_healpix

from tmass_lake.convert.card import ColumnCard, Field, LakeCard, Plot, TableCard, index_page, table_page
from tmass_lake.convert.report import COVERAGE_ORDER, Sky, footprint, headline_plots, open_code


class Links(HTMLParser):
    """Every href/src of a page and its text."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.links += [v for k, v in attrs if k in ("href", "src") and v]

    def handle_data(self, data):
        self.text.append(data)


def parse(html: str) -> Links:
    p = Links()
    p.feed(html)
    return p


def card(name: str = "pt_src_c", **kw) -> TableCard:
    base = dict(name=name, family="calibration", type="collection", title="Cal <PSWDB> & co", rows=1234,
                rows_quarantined=2, partitions=3, bytes=2**20, layout_status="inferred",
                layout_source="Column list <b>not</b> retrievable", status="built",
                open_code="import lsdb\ncat = lsdb.open_catalog('x<y')\n",
                columns=[ColumnCard("j_m", "float", "mag", "phot.mag;em.IR.J", "J <default> magnitude",
                                    "inferred", "All-Sky PSC & co", "input header jmag")],
                plots=[Plot(f"{name}_orders.png", "partitions"), Plot(f"{name}_fields.png", "fields")],
                fields=[Field(52.9, 36.9, 0.15, 1.0, 1000)], sky_fraction=0.0001, orders={"3": 3},
                partition_rows=(10, 400, 824), max_rows=1000)
    return TableCard(**(base | kw))


def test_table_page_escapes_everything_and_links_only_its_own_files():
    html = table_page(card("x"))
    p = parse(html)
    assert "script" not in p.tags and "b" not in p.tags  # markup in values stays text
    assert "Cal <PSWDB> & co" in "".join(p.text) and "J <default> magnitude" in "".join(p.text)
    assert "open_catalog('x<y')" in "".join(p.text)
    for needle in ("phot.mag;em.IR.J", "mag", "inferred", "input header jmag", "824", "1,000"):
        assert needle in "".join(p.text), needle
    assert set(p.links) == {"../card.css", "../index.html", "../x_orders.png", "../x_fields.png"}
    assert not any(link.startswith(("http:", "https:", "//")) for link in p.links)


def test_index_links_every_table_page_and_the_headline_plots():
    cards = [card("pt_src_c"), card("cf_link", type="parquet", plots=[], fields=[], orders={})]
    lake = LakeCard(lake="/data/lake", updated="now", tables=cards,
                    totals={"tables": 2, "collections": 1, "parquet_tables": 1, "rows": 10, "bytes": 5},
                    skipped={"pt_src_sc": "no input <files>"}, tools={"hats": "0.11.1"},
                    plots=[Plot("rows.png", "rows")])
    p = parse(index_page(lake))
    assert {"tables/pt_src_c.html", "tables/cf_link.html", "rows.png", "card.css"} <= set(p.links)
    assert "no input <files>" in "".join(p.text)


def test_headline_plots_lead_with_rows_then_each_familys_biggest_table_zoomed_where_small():
    cards = [card("ast_assoc", family="associations", rows=17), card("pt_src_c", rows=7000),
             card("cf_lightcurves", type="lightcurves", rows=18), card("cf_link", type="parquet", rows=9000)]
    names = {"rows.png", "ast_assoc_coverage.png", "pt_src_c_fields.png", "pt_src_c_coverage.png",
             "pt_src_c_orders.png", "cf_lightcurves_lightcurve.png"}
    files = [p.file for p in headline_plots(cards, names)]
    assert files[0] == "rows.png"
    assert "pt_src_c_fields.png" in files and "pt_src_c_coverage.png" not in files
    assert "cf_lightcurves_lightcurve.png" in files and files[-1] == "pt_src_c_orders.png"
    assert files.index("ast_assoc_coverage.png") < files.index("pt_src_c_fields.png")  # by family name
    assert set(files) <= names


def _sky(points: list[tuple[float, float, int]], order: int = 10) -> Sky:
    """A skymap with ``rows`` rows at each (ra, dec)."""
    fine = np.zeros(12 * 4**order, np.int64)
    for ra, dec, rows in points:
        pix = int(np.asarray(lonlat_to_healpix(Longitude([ra] * u.deg), Latitude([dec] * u.deg), order))[0])
        fine[pix] += rows
    coarse = fine.reshape(-1, 4 ** (order - COVERAGE_ORDER)).sum(axis=1)
    pixels = np.flatnonzero(fine)
    return Sky(coarse, order, pixels, fine[pixels])


def test_footprint_finds_small_fields_largest_first_and_none_for_a_survey():
    decs = np.linspace(-0.5, 0.5, 20)
    strip = [(359.95, d, 5) for d in decs] + [(0.05, d, 5) for d in decs]  # a field across RA = 0
    sky = _sky(strip + [(120.0, 30.0, 7), (120.02, 30.03, 3)])
    fields, fraction = footprint(sky)
    assert [f.rows for f in fields] == [200, 10]
    big = fields[0]
    assert min(big.ra, 360 - big.ra) < 0.05 and abs(big.dec) < 0.1  # across RA = 0, not at 180
    assert 0.9 < big.height_deg < 1.2 and big.width_deg < 0.3
    assert abs(fields[1].ra - 120.01) < 0.05 and 0 < fraction < 0.001
    ra, dec = np.meshgrid(np.arange(0, 360, 2.0), np.arange(-80, 81, 2.0))
    wide = _sky([(a, d, 1) for a, d in zip(ra.ravel(), dec.ravel(), strict=True)], order=7)
    assert footprint(wide)[0] == []


def test_open_code_is_python_that_names_the_table():
    entry = {"name": "pt_src_c", "path": "pt_src_c", "type": "collection", "catalog": "pt_src_c"}
    code = open_code("/data/lake", entry, [Field(52.9, 36.9, 0.15, 1.0, 1000)])
    compile(code, "card", "exec")
    assert "lsdb.open_catalog('/data/lake/pt_src_c')" in code and "ra=52.9000, dec=36.9000" in code
    code = open_code("/data/lake", {"name": "cf_link", "path": "cf_link", "type": "parquet"}, [])
    compile(code, "card", "exec")
    assert "pd.read_parquet('/data/lake/cf_link/dataset')" in code
