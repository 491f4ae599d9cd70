"""Mock Gaia DR3 and AllWISE reference catalogues built from the truth, written as HATS.

Gaia DR3: positions at epoch 2016.0 with proper motions and parallaxes (truth plus Gaia-like
errors); ~8 % of truth stars (and every star fainter than G = 20.9) have no Gaia counterpart,
and Gaia-only faint sources (G 19-21) are added in the same tiles. AllWISE: positions at
MJD 55400 (epoch ~2010.56), W1-W4 photometry, designations ``JHHMMSS.SS+DDMMSS.S``.
"""

from __future__ import annotations

import astropy.units as u
import cdshealpix
import numpy as np
import pyarrow as pa
from astropy.coordinates import Latitude, Longitude

from tmass_lake.mock import geometry as geo
from tmass_lake.mock import truth as tr
from tmass_lake.mock.bulkfmt import render_fixed
from tmass_lake.mock.columns import fixed_strings

GAIA_EPOCH = 2016.0
ALLWISE_MJD = 55400.0
ALLWISE_EPOCH = 2000.0 + (ALLWISE_MJD + 2400000.5 - geo.JD_J2000) / 365.25
GAIA_MISSING_FRACTION = 0.08
GAIA_EXTRA_FRACTION = 0.15


def _hpx12(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Nested HEALPix level-12 index (the top bits of a Gaia source_id)."""
    return np.asarray(cdshealpix.lonlat_to_healpix(Longitude(ra, unit=u.deg),
                                                   Latitude(dec, unit=u.deg), 12), dtype=np.int64)


def gaia_part(src: tr.Sources, gchunk: int, rng: np.random.Generator,
              area: tuple[geo.Tiles, np.ndarray]) -> tuple[pa.Table, pa.Table]:
    """Gaia rows for a chunk's truth stars plus Gaia-only sources; and the truth->Gaia map."""
    star = np.flatnonzero(src.kind == tr.KIND_STAR)
    j, k = src.mag[star, 0], src.mag[star, 2]
    jk = j - k
    g = k + 1.1 + 2.1 * jk + rng.normal(0, 0.05, len(star))
    has = (rng.random(len(star)) >= GAIA_MISSING_FRACTION) & (g < 20.9)
    idx = star[has]
    g = g[has]
    jk = jk[has]
    n = len(idx)
    tiles, tsel = area
    n_x = int(round(GAIA_EXTRA_FRACTION * len(star))) if len(tsel) else 0
    t = rng.choice(tsel, n_x) if n_x else np.zeros(0, np.int64)
    xra, xdec = geo.uniform_in_box(rng, n_x, tiles.ra[t], tiles.width[t], tiles.dec_min[t],
                                   tiles.dec_max[t])
    xg = rng.uniform(19.0, 21.0, n_x)
    xpm = rng.normal(0, 4.0, (2, n_x))
    xplx = np.abs(rng.normal(0.3, 0.3, n_x))
    dt = GAIA_EPOCH - 2000.0
    ra, dec = geo.propagate(src.ra[idx], src.dec[idx], src.pmra[idx], src.pmdec[idx], dt)
    gall = np.concatenate([g, xg])
    sig_pos = 0.02 * np.exp(0.45 * np.clip(gall - 15.0, 0, None))  # mas
    sig_pm = 1.4 * sig_pos
    sig_plx = 1.2 * sig_pos
    m = n + n_x
    ra_all = np.concatenate([ra, xra])
    dec_all = np.concatenate([dec, xdec])
    cosd = np.cos(np.radians(dec_all))
    ra_err = sig_pos * rng.uniform(0.9, 1.2, m)
    dec_err = sig_pos * rng.uniform(0.9, 1.2, m)
    ra_obs = (ra_all + rng.standard_normal(m) * ra_err / 3.6e6 / cosd) % 360.0
    dec_obs = dec_all + rng.standard_normal(m) * dec_err / 3.6e6
    pmra = np.concatenate([src.pmra[idx], xpm[0]]) + rng.standard_normal(m) * sig_pm
    pmdec = np.concatenate([src.pmdec[idx], xpm[1]]) + rng.standard_normal(m) * sig_pm
    plx = np.concatenate([src.parallax[idx], xplx]) + rng.standard_normal(m) * sig_plx
    jk_all = np.concatenate([jk, rng.normal(0.7, 0.2, n_x)])
    source_id = _hpx12(ra_obs, dec_obs) * 2**35 + gchunk * 2**21 + np.arange(m)
    gaia = pa.table({
        "source_id": source_id, "ra": ra_obs, "dec": dec_obs, "ra_error": ra_err,
        "dec_error": dec_err, "pmra": pmra, "pmdec": pmdec, "pmra_error": sig_pm,
        "pmdec_error": sig_pm, "parallax": plx, "parallax_error": sig_plx,
        "ref_epoch": np.full(m, GAIA_EPOCH),
        "phot_g_mean_mag": gall.astype(np.float32),
        "phot_bp_mean_mag": (gall + 0.25 + 0.45 * jk_all).astype(np.float32),
        "phot_rp_mean_mag": (gall - 0.45 - 0.35 * jk_all).astype(np.float32),
    })
    gmap = pa.table({"truth_id": src.truth_id[idx], "source_id": source_id[:n]})
    return gaia, gmap


def _sexagesimal(ra: np.ndarray, dec: np.ndarray) -> pa.Array:
    """AllWISE-style designations ``JHHMMSS.SS+DDMMSS.S`` (vectorised)."""

    n = len(ra)
    cs = np.floor(ra / 15.0 * 360000.0 + 1e-9).astype(np.int64) % (24 * 360000)
    hh, rem = np.divmod(cs, 360000)
    mm, ss = np.divmod(rem, 6000)
    sgn = np.where(dec < 0, ord("-"), ord("+")).astype(np.uint8)[:, None]
    ds = np.floor(np.abs(dec) * 36000.0 + 1e-9).astype(np.int64)
    dd, drem = np.divmod(ds, 36000)
    dm, dsec = np.divmod(drem, 600)
    parts = [np.full((n, 1), ord("J"), np.uint8), render_fixed(hh, None, 0, zero_pad=2),
             render_fixed(mm, None, 0, zero_pad=2), render_fixed(ss, None, 2, trim_zeros=False,
                                                                 zero_pad=2),
             sgn, render_fixed(dd, None, 0, zero_pad=2), render_fixed(dm, None, 0, zero_pad=2),
             render_fixed(dsec, None, 1, trim_zeros=False, zero_pad=2)]
    return fixed_strings(np.concatenate(parts, axis=1))


def allwise_part(src: tr.Sources, gchunk: int, rng: np.random.Generator,
                 ) -> tuple[pa.Table, pa.Table]:
    """AllWISE rows for a chunk's truth stars and galaxies; and the truth->AllWISE map."""
    cand = np.flatnonzero((src.kind == tr.KIND_STAR) | (src.kind == tr.KIND_GALAXY))
    k = src.mag[cand, 2]
    gal = src.kind[cand] == tr.KIND_GALAXY
    w1 = k - 0.05 - 0.1 * (src.mag[cand, 0] - k) + np.where(gal, -0.3, 0.0)
    has = (w1 < 16.8) & (rng.random(len(cand)) < 0.95)
    idx, w1, gal = cand[has], w1[has], gal[has]
    n = len(idx)
    dt = ALLWISE_EPOCH - 2000.0
    ra, dec = geo.propagate(src.ra[idx], src.dec[idx], src.pmra[idx], src.pmdec[idx], dt)
    sig = np.clip(0.04 * 10 ** (0.2 * (w1 - 10.0)), 0.04, 1.5)  # arcsec
    sigra, sigdec = sig * rng.uniform(0.9, 1.1, n), sig * rng.uniform(0.9, 1.1, n)
    ra = (ra + rng.standard_normal(n) * sigra / 3600.0 / np.cos(np.radians(dec))) % 360.0
    dec = dec + rng.standard_normal(n) * sigdec / 3600.0
    w2 = w1 - 0.05 + np.where(gal, -0.2, 0.0) + rng.normal(0, 0.03, n)
    w3 = w1 - 0.2 + np.where(gal, -1.5, 0.0) + rng.normal(0, 0.1, n)
    w4 = w1 - 0.4 + np.where(gal, -2.5, 0.0) + rng.normal(0, 0.2, n)
    lims = (16.9, 15.9, 11.9, 8.9)
    out: dict[str, object] = {
        "designation": _sexagesimal(ra, dec),
        "cntr": (gchunk + 1) * 10**9 + np.arange(n, dtype=np.int64) + 1,
        "ra": ra, "dec": dec, "sigra": sigra, "sigdec": sigdec,
    }
    sig_pm = np.clip(30.0 * 10 ** (0.2 * (w1 - 10.0)), 20.0, 800.0)
    out["pmra"] = src.pmra[idx] + rng.standard_normal(n) * sig_pm
    out["pmdec"] = src.pmdec[idx] + rng.standard_normal(n) * sig_pm
    out["sigpmra"] = sig_pm
    out["sigpmdec"] = sig_pm
    for i, (w, lim) in enumerate(zip((w1, w2, w3, w4), lims, strict=True), start=1):
        s = np.clip(0.02 + 0.1 * 10 ** (0.4 * (w - lim + 1.0)), 0.02, 0.5)
        mask = w > lim
        out[f"w{i}mpro"] = pa.array(np.round(w + rng.standard_normal(n) * s, 3), mask=mask)
        out[f"w{i}sigmpro"] = pa.array(np.round(s, 3), mask=mask)
    out["mjd"] = np.full(n, ALLWISE_MJD)
    wise = pa.table(out)
    wmap = pa.table({"truth_id": src.truth_id[idx], "cntr": out["cntr"]})
    return wise, wmap
