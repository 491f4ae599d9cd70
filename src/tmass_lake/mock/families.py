"""The mock's families (survey, 6x, calibration, LMC/SMC), planned: tiles, scans, coadds, work chunks.

Row budget at ``scale=1`` (~1 M point working-database rows; every count scales linearly, our
choice of sizes, not IRSA's, so that the 6x and calibration families are big enough to test):

=============  ========  ==================================================
family         point     extended (galaxies; a fraction of the point rows)
=============  ========  ==================================================
survey         400,000   ~1 %  (pt_src_rej / ext_src_rej)
6x             200,000   ~1 %  (pt_src_6x2 / ext_src_6x2)
calibration    380,000   ~1 %  (pt_src_c / ext_src_c)
LMC/SMC cal     60,000   ~1 %  (pt_src_sc / ext_src_sc)
=============  ========  ==================================================

Within each product (a family's point or extended tables) the merged groups, links and
detections follow **IRSA's proportions** (the schemas' ``rows``, :class:`Proportion`): links per
group and links per detection as in IRSA's tables, at every scale. How the mock reaches them
is our choice (see :mod:`tmass_lake.mock.tables`): a source detected at least twice is one
merged group (IRSA merged "sources detected multiple times"); detections of a source seen once
(and spurious and moving-object rows) are in no group, and single-apparition sources are added
until the unlinked share is IRSA's; where IRSA's links exceed the detections (calibration, survey
extended) second, overlapping groups share detections with a source's first group. Calibration
fields get a fixed fraction of their documented scan counts, so links per group do not change
with the scale; the number of sources per field does (at least one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

import numpy as np

from tmass_lake.mock import geometry as geo
from tmass_lake.schema import TableSchema, list_tables, load_schema

_SCHEMAS: dict[str, TableSchema] = {}


def get_schema(name: str) -> TableSchema:
    """A table schema, from the run's preloaded set when present (workers skip YAML parsing)."""
    s = _SCHEMAS.get(name)
    return s if s is not None else load_schema(name)


def preload_schemas(schemas: dict[str, TableSchema]) -> None:
    """Install schemas loaded by the parent (ProcessPool initializer)."""
    _SCHEMAS.update(schemas)


@dataclass(frozen=True)
class FamilySpec:
    """Static description of one working-database family."""

    name: str
    code: int
    product: str
    dataset: str  # label used in the association lists
    pt_rows: int  # point-detection rows at scale 1
    m10: tuple[float, float, float]  # SNR=10 magnitudes J, H, K of one scan
    k_range: tuple[float, float]  # K range of the truth stars
    spurious_frac: float
    moving_per_100k: float
    galaxy_frac: float
    seed_margin_arcsec: float  # keep sources this far inside their tile


FAMILIES: tuple[FamilySpec, ...] = (
    FamilySpec("survey", 1, "survey", "survey", 400_000, (15.8, 15.1, 14.3), (9.0, 15.6), 0.03,
               4.0, 0.02, 2.0),
    FamilySpec("6x", 2, "6x", "6x", 200_000, (16.8, 16.1, 15.3), (8.0, 16.6), 0.02, 3.0, 0.02,
               2.0),
    FamilySpec("cal", 3, "calibration", "cal", 380_000, (15.8, 15.1, 14.3), (6.0, 15.2), 0.005,
               1.0, 0.02, 30.0),
    FamilySpec("sc", 4, "calibration_sc", "cal", 60_000, (15.8, 15.1, 14.3), (7.0, 15.2), 0.005,
               1.0, 0.02, 30.0),
)
SURVEY_TILES_PER_SCALE = 1200
CAL_MIN_SCANS = 12
STAR_DETECTED_FRACTION = 0.99
"""Share of a calibration field's scans in which a truth star is detected (measured: 0.996)."""
GALAXY_DETECTED_FRACTION = 0.73
"""Mean extended-detection probability of a truth galaxy in a scan covering it (measured: 0.726)."""
SATELLITE_SHARE = (0.3, 0.7)
"""A second group takes a uniform share in this range of its source's detections."""
MAX_CHUNK_ROWS = 300_000
"""Upper bound of the expected rows of one work chunk (one file per table per chunk)."""
EXPECTED_LINKED_PER_SOURCE = {"survey": 0.85, "6x": 0.89}
"""Grouped detections per planned truth source (measured at scale 0.3, seeds 0-2; many are seen
once or not at all), which sets the sources needed for a family's budget."""
SURVEY_GALAXY_DETECT = 0.6

@dataclass(frozen=True)
class Proportion:
    """Groups : links : detections of one product (IRSA's, or what a mock run wrote)."""

    groups: int
    links: int
    detections: int

    @property
    def links_per_group(self) -> float:
        return self.links / max(self.groups, 1)

    @property
    def links_per_detection(self) -> float:
        return self.links / max(self.detections, 1)

    @property
    def unlinked_fraction(self) -> float:
        """Share of detections in no group the mock aims at (IRSA's 1 - links/detections, or 0)."""
        return max(0.0, 1.0 - self.links_per_detection)

    def detections_per_source(self) -> float:
        """Mean detections of a grouped source giving IRSA's links per group once second groups
        (each holding a :data:`SATELLITE_SHARE` of its source's detections) add the extra links."""
        x = max(self.links_per_detection - 1.0, 0.0)
        return self.links_per_group * (1.0 + x / float(np.mean(SATELLITE_SHARE))) / (1.0 + x)

    def as_dict(self) -> dict[str, float | int]:
        return {"groups": self.groups, "links": self.links, "detections": self.detections,
                "links_per_group": round(self.links_per_group, 3),
                "links_per_detection": round(self.links_per_detection, 4)}


def irsa_proportion(tables: dict[str, str], prefix: str) -> Proportion:
    """IRSA's proportion of a family's point (``pt``) or extended (``ext``) product: the row
    counts of its information, link and working-database tables in the schemas (``rows``, from
    IRSA's Gator catalog master table)."""
    rows = [get_schema(tables[k]).rows for k in (f"{prefix}_info", f"{prefix}_link", prefix)]
    if any(r is None for r in rows):
        raise ValueError(f"the mock needs IRSA's row counts (rows:) in the schemas of {tables[prefix]} "
                         "and its merged tables")
    return Proportion(*rows)


@cache
def family_tables(product: str) -> dict[str, str]:
    """Resolve a family's tables from the schema files (kind, product and links)."""
    out: dict[str, str] = {}
    schemas = [get_schema(t) for t in list_tables()]
    for s in schemas:
        if s.product != product:
            continue
        role = {"point_detections": "pt", "extended_detections": "ext", "scan_info": "scan",
                "atlas_info": "coadd"}.get(s.kind)
        if role:
            out[role] = s.table
    for s in schemas:
        det = s.links.get("detections")
        if det is None or s.product != product:
            continue
        prefix = "pt" if det == out.get("pt") else "ext"
        role = {"merged_sources": "info", "cross_reference": "link"}.get(s.kind)
        if role:
            out[f"{prefix}_{role}"] = s.table
    if product == "calibration":
        for s in schemas:
            if s.kind == "deep_sources":
                out["deep"] = s.table
    return out


def association_tables() -> list[str]:
    return [t for t in list_tables() if get_schema(t).kind == "associations"]


@dataclass
class Scans:
    """Scans of a family (flat arrays; ``scan_key`` is 1-based and unique in the family)."""

    tile: np.ndarray
    hemis: np.ndarray  # 0 = n, 1 = s
    jd_start: np.ndarray
    duration: np.ndarray  # days
    scan_no: np.ndarray
    direction: np.ndarray  # +1 north-going, -1 south-going
    ra_off: np.ndarray  # cross-scan offset of the scan centre from the tile centre (deg)
    n_coadd: np.ndarray
    coadd_base: np.ndarray  # coadd_key of the scan's coadd 1 minus 1
    tile_ptr: np.ndarray  # CSR: scans of tile t are tile_scans[tile_ptr[t]:tile_ptr[t+1]]
    tile_scans: np.ndarray

    @property
    def scan_key(self) -> np.ndarray:
        return np.arange(1, len(self.tile) + 1)

    def __len__(self) -> int:
        return len(self.tile)


@dataclass
class FamilyPlan:
    """Everything a worker needs to generate one chunk of a family deterministically."""

    spec: FamilySpec
    tables: dict[str, str]
    tiles: geo.Tiles
    n_src: np.ndarray  # sources per tile
    scans: Scans
    chunks: list[list[tuple[int, int, int]]]  # per chunk: (tile, n_sources, part)
    seed: int
    fields: list[geo.Field] = field(default_factory=list)
    regions: list[geo.Region] = field(default_factory=list)
    proportions: dict[str, Proportion] = field(default_factory=dict)  # IRSA's, per "pt"/"ext"
    galaxy_detect: float = 1.0  # factor on a galaxy's extended-detection probability per scan


def _night_times(rng: np.random.Generator, n: int) -> np.ndarray:
    nights = rng.integers(int(np.ceil(geo.JD_START)), int(geo.JD_END), n)
    return nights + 0.55 + 0.38 * rng.random(n)


def _finish_scans(tile: np.ndarray, hemis: np.ndarray,
                  jd: np.ndarray, length: np.ndarray, direction: np.ndarray,
                  ra_off: np.ndarray, n_tiles: int) -> Scans:
    order = np.lexsort((jd, tile))  # scan_key by tile, then time
    tile, hemis, jd = tile[order], hemis[order], jd[order]
    length, direction, ra_off = length[order], direction[order], ra_off[order]
    night = np.floor(jd).astype(np.int64)
    o2 = np.lexsort((jd, night, hemis))
    grp = np.ones(len(jd), dtype=bool)
    grp[1:] = (night[o2][1:] != night[o2][:-1]) | (hemis[o2][1:] != hemis[o2][:-1])
    start = np.maximum.accumulate(np.where(grp, np.arange(len(jd)), 0))
    scan_no = np.empty(len(jd), dtype=np.int64)
    scan_no[o2] = np.arange(len(jd)) - start + 1
    n_coadd = np.ceil(length / geo.COADD_STEP_DEG - 1e-9).astype(np.int64)
    coadd_base = np.concatenate([[0], np.cumsum(n_coadd)[:-1]])
    counts = np.bincount(tile, minlength=n_tiles)
    ptr = np.concatenate([[0], np.cumsum(counts)])
    return Scans(tile, hemis, jd, length * geo.SCAN_SECONDS_PER_DEG / 86400.0, scan_no,
                 direction, ra_off, n_coadd, coadd_base, ptr, np.arange(len(jd)))


def _tile_scans(rng: np.random.Generator, tiles: geo.Tiles, n_scans: np.ndarray) -> Scans:
    t = np.repeat(np.arange(len(tiles)), n_scans)
    n = len(t)
    hemis = np.where(tiles.hemis_opts[t] == 2, rng.integers(0, 2, n), tiles.hemis_opts[t])
    jd = _night_times(rng, n)
    length = (tiles.dec_max - tiles.dec_min)[t]
    direction = np.where(rng.random(n) < 0.5, 1, -1)
    return _finish_scans(t, hemis, jd, length, direction, np.zeros(n), len(tiles))


def _field_scans(rng: np.random.Generator, tiles: geo.Tiles, n_scans: np.ndarray) -> Scans:
    """Calibration scans: visits of 6 consecutive scans, alternating direction, ~5" RA steps."""
    visits = n_scans // 6
    vt = np.repeat(np.arange(len(tiles)), visits)
    nv = len(vt)
    hemis_v = np.where(tiles.hemis_opts[vt] == 2, rng.integers(0, 2, nv), tiles.hemis_opts[vt])
    jd_v = _night_times(rng, nv)
    k = np.tile(np.arange(6), nv)
    t = np.repeat(vt, 6)
    length = (tiles.dec_max - tiles.dec_min)[t]
    dur = length * geo.SCAN_SECONDS_PER_DEG / 86400.0
    jd = np.repeat(jd_v, 6) + k * (dur + 20.0 / 86400.0)
    direction = np.where(k % 2 == 0, 1, -1)
    ra_off = (k - 2.5) * 5.0 / 3600.0
    return _finish_scans(t, np.repeat(hemis_v, 6), jd, length, direction, ra_off,
                         len(tiles))


def _chunk_items(expected_rows: np.ndarray, n_src: np.ndarray, target: int,
                 splittable: bool) -> list[list[tuple[int, int, int]]]:
    """Group tiles into chunks of about ``target`` expected rows (splitting big tiles)."""
    chunks: list[list[tuple[int, int, int]]] = []
    cur: list[tuple[int, int, int]] = []
    acc = 0.0
    for t in range(len(n_src)):
        if n_src[t] == 0:
            continue
        rows_per_src = expected_rows[t] / n_src[t]
        parts = 1
        if splittable and expected_rows[t] > target:
            parts = int(np.ceil(expected_rows[t] / target))
        sizes = np.diff(np.linspace(0, n_src[t], parts + 1).round().astype(int))
        for p, sz in enumerate(sizes):
            rows = sz * rows_per_src
            if cur and acc + rows > target:
                chunks.append(cur)
                cur, acc = [], 0.0
            cur.append((t, int(sz), p))
            acc += rows
    if cur:
        chunks.append(cur)
    return chunks or [[]]


def plan_family(spec: FamilySpec, seed: int, scale: float, rows_per_file: int) -> FamilyPlan:
    """Plan tiles, scans and chunks of one family (cheap; repeated identically anywhere)."""
    rng = np.random.default_rng([seed, spec.code, 0])
    target_rows = max(spec.pt_rows * scale, 200.0)
    chunk_target = min(0.8 * rows_per_file, MAX_CHUNK_ROWS)
    tables = family_tables(spec.product)
    props = {k: irsa_proportion(tables, k) for k in ("pt", "ext")}
    unlinked = props["pt"].unlinked_fraction
    galaxy_detect = 1.0
    fields: list[geo.Field] = []
    regions: list[geo.Region] = []
    if spec.name == "survey":
        grid = geo.survey_grid()
        n_tiles = int(min(len(grid), max(24, round(SURVEY_TILES_PER_SCALE * scale))))
        sel = np.sort(rng.choice(len(grid), n_tiles, replace=False))
        tiles = geo.Tiles(*[getattr(grid, f)[sel] for f in geo.Tiles.__dataclass_fields__])
        n_scans = rng.choice([1, 2, 3], len(tiles), p=[0.45, 0.4, 0.15])
        scans = _tile_scans(rng, tiles, n_scans)
        _, b = geo.radec_to_galactic(tiles.ra, tiles.dec_c)
        w = geo.galactic_density(b)
        per_src = EXPECTED_LINKED_PER_SOURCE["survey"]
        galaxy_detect = SURVEY_GALAXY_DETECT
    elif spec.name == "6x":
        regions = geo.sixx_regions()
        tiles = geo.region_tiles(regions)
        spt = np.array([r.scans_per_tile for r in regions])[tiles.unit]
        n_scans = np.floor(spt).astype(int) + (rng.random(len(tiles)) < spt % 1.0)
        scans = _tile_scans(rng, tiles, n_scans)
        dens = np.array([r.density for r in regions])[tiles.unit]
        area = tiles.width * (tiles.dec_max - tiles.dec_min)
        w = dens * area
        per_src = EXPECTED_LINKED_PER_SOURCE["6x"] * n_scans.mean() / 1.3
    else:
        # Links per group are IRSA's at every scale: a fixed share of each field's documented
        # scans (so a source's detections do not depend on the scale), sources per field scaled.
        fields = [f for f in geo.calibration_fields() if f.special == (spec.name == "sc")]
        nominal = np.array([f.nominal_scans for f in fields])
        per_src = props["pt"].detections_per_source()
        per_field = per_src / STAR_DETECTED_FRACTION
        wanted = target_rows * (1.0 - unlinked) / per_src  # grouped sources in the budget
        if wanted < len(fields):  # tiny scales: fewer fields (evenly spread), one source each
            keep = np.unique(np.linspace(0, len(fields) - 1, max(2, round(wanted))).round()).astype(int)
            fields, nominal = [fields[i] for i in keep], nominal[keep]
        tiles = geo.field_tiles(fields)
        mean_nominal = np.mean([f.nominal_scans for f in geo.calibration_fields()
                                if f.special == (spec.name == "sc")])
        n_scans = np.maximum(CAL_MIN_SCANS,
                             np.round(nominal * per_field / mean_nominal / 6).astype(int) * 6)
        scans = _field_scans(rng, tiles, n_scans)
        galaxy_detect = min(1.0, props["ext"].detections_per_source()
                            / (GALAXY_DETECTED_FRACTION * n_scans.mean()))
        w = n_scans.astype(float)
        per_src = 0.0  # set below
    if spec.name in ("survey", "6x"):
        expected_src = target_rows * (1.0 - unlinked) / per_src * w / w.sum()
        n_src = rng.poisson(expected_src)
        expected_rows = n_src * per_src / (1.0 - unlinked)
    else:
        linked = target_rows * (1.0 - unlinked)
        src_per_field = max(1, int(round(linked / (STAR_DETECTED_FRACTION * n_scans.sum()))))
        n_src = np.full(len(tiles), src_per_field)
        expected_rows = n_src * n_scans * STAR_DETECTED_FRACTION / (1.0 - unlinked)
    chunks = _chunk_items(expected_rows, n_src, int(chunk_target),
                          splittable=spec.name in ("cal", "sc"))
    return FamilyPlan(spec, tables, tiles, n_src, scans, chunks, seed, fields, regions, props,
                      galaxy_detect)
