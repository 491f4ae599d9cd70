"""Sky geometry of the mock: calibration fields, 6x regions, survey tiles, time and coordinates.

Documented (2MASS Explanatory Supplement, see ``/work/shared/reference``):

* calibration fields are 1 deg (Dec) x ~8.5' (RA) strips; 35 regular fields at ~2 h RA steps
  near Dec -30, 0, +30; 5 special LMC/SMC fields; the names and positions of the first 18
  regular fields (calib plan v4.2); regular fields scanned ~600-3700 times (equatorial fields
  from both observatories), special fields 150-470 times; visits of 6 consecutive scans
  alternating in direction, each offset ~5" in RA;
* 6x regions SMC and Hydra (centre, bounds, scan length, tile and scan counts), Lockman Hole
  (RA/Dec range, 37 scans), Abell 553 (11 contiguous 1 deg scans near 93.07, +48.56);
* survey scans are 6 deg (Dec) x 8.5' tiles; 1 deg 6x tiles numbered 30000+ (north) and
  333000+ (south); 6 deg 6x tiles reuse survey tile numbers.

Inferred by this generator (and recorded in the manifest notes):

* the 17 regular calibration fields after the first 18 (RA 12h-24h) are placed on the
  documented pattern (2 h RA steps at Dec -30, 0, +30) with made-up names ``MOCK-CAL-nn``;
* the 5 special LMC/SMC calibration fields (3 in/around the LMC, 2 in/around the SMC);
* the LMC 6x region (its well-known position; not in the reference material);
* the Hydra 6x region as a 54-tile block about the documented centre (the documented bounds are
  an envelope), tile grids inside every region, the number of scans per tile, and the
  calibration tile numbers 90001+;
* Atlas (coadd) images as ~0.26 deg steps along a scan (23 per 6 deg scan, 4 per 1 deg scan);
* solar-system objects seen where scans lie near the ecliptic (scans weighted by a Gaussian in
  ecliptic latitude, :data:`ECLIPTIC_SIGMA_DEG`), as far as a family's footprint allows;
* observing nights uniformly between 1997-06-01 and 2001-02-15; Mt Hopkins ('n') covers
  Dec > +10, CTIO ('s') Dec < -10, both in between.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TILE_WIDTH_DEG = 8.5 / 60.0
"""Cross-scan (RA) width of a 2MASS scan."""
COADD_STEP_DEG = 6.0 / 23.0
"""Along-scan length of one Atlas image step (inferred)."""
JD_J2000 = 2451545.0
JD_START = 2450600.5  # 1997-06-01
JD_END = 2451955.5  # 2001-02-15
SCAN_SECONDS_PER_DEG = 65.0
"""Along-scan speed: a 6 deg scan takes ~6.5 min (inferred)."""

_G = np.array([[-0.0548755604162154, -0.8734370902348850, -0.4838350155487132],
               [0.4941094278755837, -0.4448296299600112, 0.7469822444972189],
               [-0.8676661490190047, -0.1980763734312015, 0.4559837761750669]])


def radec_to_galactic(ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ICRS (deg) to galactic (l, b) in deg, vectorised."""
    r, d = np.radians(ra), np.radians(dec)
    v = np.stack([np.cos(d) * np.cos(r), np.cos(d) * np.sin(r), np.sin(d)])
    g = _G @ v
    lon = np.degrees(np.arctan2(g[1], g[0])) % 360.0
    lat = np.degrees(np.arcsin(np.clip(g[2], -1.0, 1.0)))
    return lon, lat


ECLIPTIC_SIGMA_DEG = 8.0
"""Spread in ecliptic latitude of the mock's solar-system objects (our choice: most main-belt
asteroids lie within ~15 deg of the ecliptic)."""
OBLIQUITY_DEG = 84381.448 / 3600.0
"""Mean obliquity of the ecliptic at J2000 (IAU 1976)."""


def ecliptic_latitude(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Ecliptic latitude (deg, J2000 mean ecliptic) of ICRS positions (deg), vectorised."""
    r, d, e = np.radians(ra), np.radians(dec), np.radians(OBLIQUITY_DEG)
    return np.degrees(np.arcsin(np.clip(np.sin(d) * np.cos(e) - np.cos(d) * np.sin(e) * np.sin(r),
                                        -1.0, 1.0)))


def galactic_density(b: np.ndarray) -> np.ndarray:
    """Relative source density versus galactic latitude: 1 + 9 exp(-|b|/10 deg)."""
    return 1.0 + 9.0 * np.exp(-np.abs(b) / 10.0)


def hms(h: float, m: float, s: float) -> float:
    return 15.0 * (h + m / 60.0 + s / 3600.0)


def dms(sign: int, d: float, m: float, s: float) -> float:
    return sign * (d + m / 60.0 + s / 3600.0)


@dataclass(frozen=True)
class Field:
    """A calibration field: an 8.5' x 1 deg strip centred on (ra, dec)."""

    name: str
    ra: float
    dec: float
    tile: int
    special: bool
    documented: bool
    nominal_scans: int
    hemis: str  # "n", "s" or "ns"


_DOCUMENTED_FIELDS = [
    ("BRI0021-0214", hms(0, 24, 24.6), dms(-1, 1, 58, 20)),
    ("S294-D", hms(0, 33, 15.2), dms(-1, 39, 24, 10)),
    ("FS4", hms(1, 54, 37.8), dms(1, 0, 43, 2)),
    ("P247-U", hms(3, 32, 3.0), dms(1, 37, 20, 39)),
    ("S301-D", hms(3, 26, 54.59), dms(-1, 39, 50, 51.1)),
    ("P533-D", hms(3, 41, 2.4), dms(1, 6, 56, 13)),
    ("LHS191", hms(4, 26, 19.96), dms(1, 3, 36, 38.2)),
    ("FS13", hms(5, 57, 7.6), dms(1, 0, 1, 11)),
    ("S121-E", hms(6, 29, 29.4), dms(-1, 59, 39, 31)),
    ("P161-D", hms(7, 0, 52.0), dms(1, 48, 29, 24)),
    ("S312-T", hms(8, 25, 35.52), dms(-1, 39, 5, 57.1)),
    ("LHS2026", hms(8, 32, 30.4), dms(-1, 1, 34, 38)),
    ("M67/FS15-17", hms(8, 51, 15.1), dms(1, 11, 49, 19)),
    ("P091-D", hms(9, 42, 58.7), dms(1, 59, 3, 43)),
    ("LHS2397a", hms(11, 21, 49.22), dms(-1, 13, 13, 8.2)),
    ("S217-D", hms(12, 1, 45.2), dms(-1, 50, 3, 10)),
    ("P266-C", hms(12, 14, 25.4), dms(1, 35, 35, 56)),
    ("S860-D", hms(12, 21, 39.4), dms(-1, 0, 7, 13)),
]

_SPECIAL_FIELDS = [  # inferred: in and around the LMC and SMC
    ("MOCK-LMC-1", 80.894, -69.756),
    ("MOCK-LMC-2", 84.500, -68.500),
    ("MOCK-LMC-3", 76.000, -67.000),
    ("MOCK-SMC-1", 13.187, -72.829),
    ("MOCK-SMC-2", 16.500, -71.000),
]


def _hemis(dec: float) -> str:
    if dec > 10.0:
        return "n"
    if dec < -10.0:
        return "s"
    return "ns"


def calibration_fields() -> list[Field]:
    """The 35 regular and 5 special calibration fields (18 documented, 22 placed)."""
    fields: list[Field] = []
    for i, (name, ra, dec) in enumerate(_DOCUMENTED_FIELDS):
        fields.append(Field(name, ra, dec, 90001 + i, False, True, 0, _hemis(dec)))
    # 17 more at 2 h RA steps from 13h to 23h at Dec -30, 0, +30 (inferred placement).
    for h in range(13, 24, 2):
        for dec in (-30.0, 0.0, 30.0):
            if len(fields) == 35:
                break
            ra = 15.0 * h + 3.0 * (dec / 30.0)
            name = f"MOCK-CAL-{len(fields) + 1:02d}"
            fields.append(Field(name, ra, dec, 90001 + len(fields), False, False, 0, _hemis(dec)))
    for i, (name, ra, dec) in enumerate(_SPECIAL_FIELDS):
        fields.append(Field(name, ra, dec, 90036 + i, True, False, 0, "s"))
    out = []
    for i, f in enumerate(fields):
        if f.special:
            nominal = 150 + (i * 83) % 321  # 150-470
        elif f.hemis == "ns":
            nominal = 2600 + (i * 157) % 1093  # equatorial: both observatories, up to ~3700
        else:
            nominal = 600 + (i * 211) % 1100  # 600-1700
        out.append(Field(f.name, f.ra, f.dec, f.tile, f.special, f.documented, nominal, f.hemis))
    return out


@dataclass(frozen=True)
class Region:
    """A 6x region: a box in RA/Dec covered by a tile grid of ``scan_len`` deg scans."""

    name: str
    ra_min: float
    ra_max: float  # may be < ra_min when the box wraps 0h
    dec_min: float
    dec_max: float
    scan_len: float
    scans_per_tile: float
    density: float
    documented: bool


def sixx_regions() -> list[Region]:
    """6x regions: SMC, Hydra, Lockman Hole, Abell 553 (reference) plus the LMC (inferred)."""
    hydra_w = 9 * TILE_WIDTH_DEG / np.cos(np.radians(29.54))
    abell_w = 11 * TILE_WIDTH_DEG / np.cos(np.radians(48.56))
    return [
        Region("SMC", 359.723, 28.273, -78.008, -66.008, 6.0, 225 / 166, 6.0, True),
        Region("Hydra Cluster", 159.2946 - hydra_w / 2, 159.2946 + hydra_w / 2, -32.5395,
               -26.5395, 1.0, 71 / 54, 1.5, True),
        Region("Lockman Hole", hms(10, 29, 45), hms(11, 0, 33), 54.0, 60.0, 6.0, 1.3, 0.6, True),
        Region("Abell 553", 93.07 - abell_w / 2, 93.07 + abell_w / 2, 48.06, 49.06, 1.0, 1.0,
               1.2, True),
        Region("LMC", 70.0, 92.0, -74.0, -62.0, 6.0, 1.35, 8.0, False),
    ]


def wrap_delta(ra: np.ndarray, ra0: float | np.ndarray) -> np.ndarray:
    """RA difference ra - ra0 wrapped to [-180, 180)."""
    return (np.asarray(ra) - ra0 + 180.0) % 360.0 - 180.0


@dataclass
class Tiles:
    """A set of scan tiles (strips) with their scans, as flat arrays."""

    ra: np.ndarray  # tile centre RA
    dec_min: np.ndarray
    dec_max: np.ndarray
    width: np.ndarray  # RA width on the sky, deg (cross-scan)
    tile_no: np.ndarray
    unit: np.ndarray  # region/field index (for neighbour lookups and grouping)
    strip: np.ndarray  # RA strip index within its band (neighbours differ by 1)
    band: np.ndarray
    hemis_opts: np.ndarray  # 0 = n only, 1 = s only, 2 = both

    @property
    def dec_c(self) -> np.ndarray:
        return 0.5 * (self.dec_min + self.dec_max)

    def __len__(self) -> int:
        return len(self.ra)


def _band_tiles(ra_min: float, ra_max: float, dec_lo: float, dec_hi: float,
                ) -> tuple[np.ndarray, float]:
    span = (ra_max - ra_min) % 360.0 or 360.0
    cosd = max(np.cos(np.radians(0.5 * (dec_lo + dec_hi))), 1e-3)
    wra = TILE_WIDTH_DEG / cosd
    n = max(int(np.ceil(span / wra)), 1)
    step = span / n
    return (ra_min + step * (np.arange(n) + 0.5)) % 360.0, step * cosd


def region_tiles(regions: list[Region]) -> Tiles:
    """Tile grids of the 6x regions."""
    rows: list[tuple] = []
    for u, r in enumerate(regions):
        nb = max(int(round((r.dec_max - r.dec_min) / r.scan_len)), 1)
        for b in range(nb):
            lo = r.dec_min + b * r.scan_len
            hi = min(lo + r.scan_len, r.dec_max)
            ras, w = _band_tiles(r.ra_min, r.ra_max, lo, hi)
            for s, ra in enumerate(ras):
                rows.append((ra, lo, hi, w, u, s, b, _hemi_code(0.5 * (lo + hi)), r.scan_len))
    a = np.array(rows, dtype=np.float64)
    tile_no = np.empty(len(a), dtype=np.int64)
    six = a[:, 8] >= 6.0
    tile_no[six] = survey_tile_number(a[six, 0], 0.5 * (a[six, 1] + a[six, 2]))
    one = ~six
    north = 0.5 * (a[:, 1] + a[:, 2]) >= 0
    tile_no[one & north] = 30000 + np.arange((one & north).sum())
    tile_no[one & ~north] = 333000 + np.arange((one & ~north).sum())
    return Tiles(a[:, 0], a[:, 1], a[:, 2], a[:, 3], tile_no, a[:, 4].astype(np.int64),
                 a[:, 5].astype(np.int64), a[:, 6].astype(np.int64), a[:, 7].astype(np.int64))


def _hemi_code(dec: float | np.ndarray) -> np.ndarray:
    dec = np.asarray(dec)
    return np.where(dec > 10.0, 0, np.where(dec < -10.0, 1, 2))


def survey_grid() -> Tiles:
    """The all-sky survey tiling: 30 bands of 6 deg in Dec, 8.5' wide strips in RA."""
    ras, los, his, ws, strips, bands = [], [], [], [], [], []
    for b in range(30):
        lo, hi = -90.0 + 6.0 * b, -84.0 + 6.0 * b
        ra, w = _band_tiles(0.0, 360.0, lo, hi)
        ras.append(ra)
        los.append(np.full(len(ra), lo))
        his.append(np.full(len(ra), hi))
        ws.append(np.full(len(ra), w))
        strips.append(np.arange(len(ra)))
        bands.append(np.full(len(ra), b))
    ra = np.concatenate(ras)
    lo, hi = np.concatenate(los), np.concatenate(his)
    band = np.concatenate(bands)
    return Tiles(ra, lo, hi, np.concatenate(ws), np.arange(1, len(ra) + 1), band,
                 np.concatenate(strips), band, _hemi_code(0.5 * (lo + hi)))


def survey_tile_number(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Survey tile number (1-based index in :func:`survey_grid`) containing each position."""
    ra, dec = np.atleast_1d(ra), np.atleast_1d(dec)
    b = np.clip(((dec + 90.0) // 6.0).astype(np.int64), 0, 29)
    counts = np.array([len(_band_tiles(0.0, 360.0, -90.0 + 6 * k, -84.0 + 6 * k)[0])
                       for k in range(30)])
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    s = np.minimum((ra % 360.0) / 360.0 * counts[b], counts[b] - 1).astype(np.int64)
    return first[b] + s + 1


def field_tiles(fields: list[Field]) -> Tiles:
    """One tile per calibration field: 1 deg in Dec, 8.5' in RA."""
    n = len(fields)
    ra = np.array([f.ra for f in fields])
    dec = np.array([f.dec for f in fields])
    hemis = np.array([{"n": 0, "s": 1, "ns": 2}[f.hemis] for f in fields])
    return Tiles(ra, dec - 0.5, dec + 0.5, np.full(n, TILE_WIDTH_DEG),
                 np.array([f.tile for f in fields]), np.arange(n), np.zeros(n, np.int64),
                 np.zeros(n, np.int64), hemis)


def jd_to_days1970(jd: np.ndarray) -> np.ndarray:
    """Observation date (date32 days) = the calendar date on which the night began.

    JD N.0 is noon UT of the date the night starts on (both observatories are west of
    Greenwich), so the date is ``floor(jd)`` converted: days since 1970-01-01 = N - 2440588.
    """
    return (np.floor(jd) - 2440588).astype(np.int32)


def years_since_j2000(jd: np.ndarray) -> np.ndarray:
    return (np.asarray(jd) - JD_J2000) / 365.25


def propagate(ra: np.ndarray, dec: np.ndarray, pmra: np.ndarray, pmdec: np.ndarray,
              dt_years: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Apply proper motion (mas/yr, pmra = mu_alpha*) over ``dt_years`` (linear, deg)."""
    ddec = pmdec * dt_years / 3.6e6
    dec2 = np.clip(dec + ddec, -89.9999999, 89.9999999)
    cosd = np.maximum(np.cos(np.radians(0.5 * (dec + dec2))), 1e-6)
    ra2 = (ra + pmra * dt_years / 3.6e6 / cosd) % 360.0
    return ra2, dec2


def uniform_in_box(rng: np.random.Generator, n: int, ra_c: np.ndarray, width: np.ndarray,
                   dec_lo: np.ndarray, dec_hi: np.ndarray, margin_deg: float = 0.0,
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Area-uniform positions inside tiles (strip width on the sky ``width``), with a margin."""
    lo = np.sin(np.radians(dec_lo + margin_deg))
    hi = np.sin(np.radians(dec_hi - margin_deg))
    dec = np.degrees(np.arcsin(lo + (hi - lo) * rng.random(n)))
    half = np.maximum(0.5 * width - margin_deg, 1e-6)
    x = (rng.random(n) * 2.0 - 1.0) * half
    ra = (ra_c + x / np.maximum(np.cos(np.radians(dec)), 1e-6)) % 360.0
    return ra, dec
