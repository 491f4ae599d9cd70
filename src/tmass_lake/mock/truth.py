"""Truth objects of the mock: stars (proper motion, parallax, variability), galaxies, moving
solar-system objects; their magnitudes at an epoch and the noise model of the detections."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tmass_lake.mock import geometry as geo

KIND_STAR, KIND_GALAXY, KIND_MOVING, KIND_SPURIOUS = 0, 1, 2, 3
KIND_NAMES = np.array(["star", "galaxy", "moving", "spurious"])
BANDS = ("j", "h", "k")
VAR_NONE, VAR_SINE, VAR_ECLIPSE = 0, 1, 2
VAR_NAMES = np.array(["none", "sinusoidal", "eclipsing"])
VAR_BAND_SCALE = np.array([1.15, 1.05, 1.0])
"""Variability amplitude in J, H relative to K."""
HIGH_PM_FRACTION = 0.003
HIGH_PM_MAS_YR = 200.0
"""The high-proper-motion set (0.2-5 "/yr); every chunk with stars holds at least one."""
VARIABLE_FRACTION = 0.05


@dataclass
class Sources:
    """Truth sources of one work item (flat arrays, one entry per source)."""

    truth_id: np.ndarray
    kind: np.ndarray
    ra: np.ndarray  # J2000.0 reference epoch position (deg)
    dec: np.ndarray
    pmra: np.ndarray  # mu_alpha* (mas/yr)
    pmdec: np.ndarray
    parallax: np.ndarray  # mas
    mag: np.ndarray  # (n, 3) mean J, H, K
    var_type: np.ndarray
    var_amp_k: np.ndarray  # K peak-to-peak (sinusoid) or eclipse depth (mag)
    var_period_d: np.ndarray
    var_t0: np.ndarray  # JD of zero phase (sinusoid) / primary eclipse
    tile: np.ndarray  # index of the tile (field/region tile) the source belongs to

    def __len__(self) -> int:
        return len(self.truth_id)

    @staticmethod
    def concat(parts: list[Sources]) -> Sources:
        return Sources(*[np.concatenate([getattr(p, f) for p in parts])
                         for f in Sources.__dataclass_fields__])

    def take(self, idx: np.ndarray) -> Sources:
        return Sources(*[getattr(self, f)[idx] for f in Sources.__dataclass_fields__])


def power_law_mags(rng: np.random.Generator, n: int, m_lo: float, m_hi: float,
                   slope: float = 0.3) -> np.ndarray:
    """Magnitudes with dN/dm ~ 10**(slope m) between m_lo and m_hi (inverse CDF)."""
    a, b = 10 ** (slope * m_lo), 10 ** (slope * m_hi)
    return np.log10(a + (b - a) * rng.random(n)) / slope


def make_sources(rng: np.random.Generator, n: int, ra: np.ndarray, dec: np.ndarray,
                 tile: np.ndarray, k_range: tuple[float, float], galaxy_frac: np.ndarray | float,
                 id_base: int) -> Sources:
    """Draw stars and galaxies at the given positions (J2000.0 reference epoch)."""
    kind = np.where(rng.random(n) < galaxy_frac, KIND_GALAXY, KIND_STAR).astype(np.int8)
    gal = kind == KIND_GALAXY
    k = power_law_mags(rng, n, *k_range)
    k[gal] = power_law_mags(rng, int(gal.sum()), 9.5, min(k_range[1], 14.2), 0.6)
    jk = np.where(gal, rng.normal(1.0, 0.12, n), np.clip(rng.normal(0.65, 0.22, n), -0.1, 2.5))
    hk = np.where(gal, rng.normal(0.3, 0.06, n), np.clip(0.3 * jk + rng.normal(0, 0.04, n), -0.1,
                                                         1.0))
    mag = np.stack([k + jk, k + hk, k], axis=1)
    # Proper motions: disc-like log-normal speeds plus a small high-PM set (0.2-5 "/yr).
    pm = np.exp(rng.normal(np.log(6.0), 0.9, n))
    hi = rng.random(n) < HIGH_PM_FRACTION
    pm[hi] = np.exp(rng.uniform(np.log(HIGH_PM_MAS_YR), np.log(5000.0), int(hi.sum())))
    theta = rng.uniform(0, 2 * np.pi, n)
    vt = np.exp(rng.normal(np.log(35.0), 0.5, n))  # tangential speed, km/s
    plx = np.clip(pm / (4.74 * vt), 0.02, 800.0)
    pmra, pmdec = pm * np.sin(theta), pm * np.cos(theta)
    pmra[gal] = pmdec[gal] = plx[gal] = 0.0
    var = rng.random(n) < VARIABLE_FRACTION
    var &= ~gal
    vtype = np.where(var, np.where(rng.random(n) < 0.5, VAR_SINE, VAR_ECLIPSE), VAR_NONE)
    amp = np.where(var, rng.uniform(0.1, 1.0, n), 0.0)
    period = np.where(vtype == VAR_SINE, np.exp(rng.uniform(np.log(0.3), np.log(400.0), n)),
                      np.where(vtype == VAR_ECLIPSE,
                               np.exp(rng.uniform(np.log(0.4), np.log(12.0), n)), 0.0))
    t0 = np.where(var, geo.JD_START + rng.random(n) * np.maximum(period, 1.0), 0.0)
    return Sources(np.arange(n, dtype=np.int64) + id_base, kind, ra, dec, pmra, pmdec, plx, mag,
                   vtype.astype(np.int8), amp, period, t0, tile.astype(np.int64))


def light_curve(var_type: np.ndarray, amp_k: np.ndarray, period: np.ndarray, t0: np.ndarray,
                jd: np.ndarray) -> np.ndarray:
    """K-band magnitude offset at ``jd``.

    Sinusoid: ``amp/2 sin(2 pi phase)`` (peak-to-peak ``amp``). Eclipsing: Gaussian dips of
    depth ``amp`` at phase 0 and ``amp/3`` at phase 0.5, width 0.03 in phase.
    """
    p = np.where(period > 0, period, 1.0)
    phase = ((jd - t0) / p) % 1.0
    sine = 0.5 * amp_k * np.sin(2 * np.pi * phase)
    d1 = np.minimum(phase, 1.0 - phase)
    d2 = np.abs(phase - 0.5)
    ecl = amp_k * np.exp(-0.5 * (d1 / 0.03) ** 2) + amp_k / 3 * np.exp(-0.5 * (d2 / 0.03) ** 2)
    return np.where(var_type == VAR_SINE, sine, np.where(var_type == VAR_ECLIPSE, ecl, 0.0))


def position_at(src: Sources, idx: np.ndarray, jd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True positions of sources ``idx`` at ``jd`` (proper motion from J2000.0; no parallax)."""
    return geo.propagate(src.ra[idx], src.dec[idx], src.pmra[idx], src.pmdec[idx],
                         geo.years_since_j2000(jd))


def phot_sigma(mag: np.ndarray, m10: np.ndarray | float, floor: float = 0.015) -> np.ndarray:
    """1-sigma photometric uncertainty: floor in quadrature with 0.1085 at the SNR=10 mag."""
    return np.sqrt(floor**2 + (0.1085 * 10 ** (0.4 * (mag - m10))) ** 2)


def astrom_sigma(k_mag: np.ndarray, k10: float) -> np.ndarray:
    """Per-axis astrometric uncertainty (arcsec): ~0.06" bright, rising for faint sources."""
    return np.sqrt(0.06**2 + (0.12 * 10 ** (0.4 * (k_mag - k10))) ** 2)
