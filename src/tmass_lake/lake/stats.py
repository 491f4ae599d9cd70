"""Per-source light-curve statistics, vectorised over all sources of a partition at once.

Every statistic is a ``numpy.bincount`` (or one sort) over the flat detections, so the cost is
linear in the number of detections whatever the number of epochs per source (calibration
fields reach thousands). Columns, per band ``b`` in ``j``, ``h``, ``k``:

``{b}_n``
    detections with a magnitude and an uncertainty (``{b}_msigcom``; upper limits are skipped)
``{b}_mean``, ``{b}_mean_err``
    inverse-variance weighted mean magnitude and its uncertainty
``{b}_rms``
    unweighted sample standard deviation of the magnitudes (mag)
``{b}_chi2dof``
    chi-square about the weighted mean per degree of freedom (``n - 1``)
``{b}_amp``
    robust peak-to-peak amplitude: the 2.5-97.5 percentile range (mag)

and per source: ``n_epochs``, ``baseline_yr``, ``pos_rms_arcsec`` (rms offset from the mean
position), ``pmra``/``pmdec`` (fitted linear motion, mas/yr, ``pmra`` = mu_alpha cos delta),
``pmra_err``/``pmdec_err``, ``pm``, ``pm_sig`` (significance of the motion, sigma),
``var_chi2dof`` (chi-square per degree of freedom over all bands), ``var_log10_p`` (log10 of
the probability that a constant source gives a chi-square at least that large), and the flags
``is_variable`` and ``is_moving`` from :class:`Thresholds`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import gammaincc, gammaln

BANDS = ("j", "h", "k")
JD_J2000 = 2451545.0
DAYS_PER_YEAR = 365.25
MAS_PER_DEG = 3.6e6


@dataclass(frozen=True)
class Thresholds:
    """Flag thresholds, chosen on the mock truth (see the README, "Light curves").

    ``is_variable``: at least ``var_min_points`` good photometric points over all bands, and
    the probability that a constant source reaches the observed chi-square (bands combined,
    ``sigma_floor`` added in quadrature to every uncertainty) at most ``10**var_log10_p``.
    ``is_moving``: at least ``pm_min_epochs`` epochs over at least ``pm_min_baseline_yr``, a
    fitted motion of at least ``pm_min_mas_yr`` detected at ``pm_min_sig`` sigma or more.

    Parameters
    ----------
    var_log10_p : float, default -5.0
        log10 of the largest chance probability of a constant source that is flagged variable.
    var_min_points : int, default 10
        Fewest good photometric points (all bands) to flag a source variable.
    sigma_floor : float, default 0.0
        Magnitude error floor (mag), added in quadrature to every photometric uncertainty.
    pm_min_mas_yr : float, default 100.0
        Slowest fitted motion (mas/yr) flagged moving.
    pm_min_sig : float, default 5.0
        Least significance (sigma) of a motion flagged moving.
    pm_min_epochs : int, default 5
        Fewest epochs to flag a source moving.
    pm_min_baseline_yr : float, default 0.5
        Shortest first-to-last epoch span (years) to flag a source moving.
    astrometric_floor_mas : float, default 0.0
        Position error floor (mas), added in quadrature to every per-axis position uncertainty.

    Examples
    --------
    >>> strict = Thresholds(var_log10_p=-8.0, sigma_floor=0.01)
    >>> strict.pm_min_mas_yr
    100.0
    """

    var_log10_p: float = -5.0
    var_min_points: int = 10
    sigma_floor: float = 0.0
    pm_min_mas_yr: float = 100.0
    pm_min_sig: float = 5.0
    pm_min_epochs: int = 5
    pm_min_baseline_yr: float = 0.5
    astrometric_floor_mas: float = 0.0


DEFAULT_THRESHOLDS = Thresholds()


def _described(unit: str | None, ucd: str, description: str) -> dict[str, str]:
    return {"ucd": ucd, "description": description} | ({"unit": unit} if unit else {})


def _band_columns(b: str) -> dict[str, dict[str, str]]:
    B = b.upper()
    return {
        f"{b}_n": _described(None, "meta.number", f"{B} detections with a magnitude and an uncertainty"),
        f"{b}_mean": _described("mag", f"phot.mag;stat.mean;em.IR.{B}",
                                f"inverse-variance weighted mean {B} magnitude"),
        f"{b}_mean_err": _described("mag", f"stat.error;phot.mag;em.IR.{B}", f"uncertainty of {b}_mean"),
        f"{b}_rms": _described("mag", f"stat.stdev;phot.mag;em.IR.{B}",
                               f"sample standard deviation of the {B} magnitudes"),
        f"{b}_chi2dof": _described(None, "stat.fit.chi2", f"chi-square of the {B} magnitudes about their "
                                                          "weighted mean, per degree of freedom"),
        f"{b}_amp": _described("mag", f"src.var.amplitude;em.IR.{B}",
                               f"robust {B} amplitude: 2.5 to 97.5 percentile range"),
    }


STAT_COLUMNS: dict[str, dict[str, str]] = {
    "n_epochs": _described(None, "meta.number", "member detections of the merged source"),
    "baseline_yr": _described("yr", "time.interval", "first to last epoch"),
    **{k: v for b in BANDS for k, v in _band_columns(b).items()},
    "var_chi2dof": _described(None, "stat.fit.chi2", "chi-square per degree of freedom, bands combined"),
    "var_log10_p": _described(None, "stat.probability", "log10 of the probability that a constant source "
                                                        "gives a chi-square at least this large"),
    "pos_rms_arcsec": _described("arcsec", "stat.stdev;pos", "rms offset of the detections from the mean "
                                                             "position"),
    "pmra": _described("mas/yr", "pos.pm;pos.eq.ra", "fitted linear motion in RA (mu_alpha cos delta)"),
    "pmdec": _described("mas/yr", "pos.pm;pos.eq.dec", "fitted linear motion in Dec"),
    "pmra_err": _described("mas/yr", "stat.error;pos.pm;pos.eq.ra", "uncertainty of pmra"),
    "pmdec_err": _described("mas/yr", "stat.error;pos.pm;pos.eq.dec", "uncertainty of pmdec"),
    "pm": _described("mas/yr", "pos.pm", "total fitted motion"),
    "pm_sig": _described(None, "stat.snr;pos.pm", "significance of the fitted motion (sigma)"),
    "is_variable": _described(None, "meta.code;src.var", "variable by the Thresholds in force"),
    "is_moving": _described(None, "meta.code;pos.pm", "moving by the Thresholds in force"),
}
"""Unit, UCD and description of every statistic (the light-curve collections' field metadata)."""


def _sum(g: np.ndarray, x: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(g, weights=x, minlength=n)


def _percentile_range(g: np.ndarray, m: np.ndarray, counts: np.ndarray, lo: float, hi: float,
                      ) -> np.ndarray:
    """Per-group ``hi`` minus ``lo`` quantile (nearest rank) of ``m``; NaN for empty groups."""
    order = np.lexsort((m, g))
    ms = m[order]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    ok = counts > 0
    last = np.maximum(counts - 1, 0)
    i_lo = starts + np.floor(lo * last + 0.5).astype(np.int64)
    i_hi = starts + np.floor(hi * last + 0.5).astype(np.int64)
    out = np.full(len(counts), np.nan)
    if len(ms):
        out[ok] = ms[i_hi[ok]] - ms[i_lo[ok]]
    return out


def chi2_log10_sf(chi2: np.ndarray, dof: np.ndarray) -> np.ndarray:
    """log10 of the chi-square survival function, accurate deep in the tail.

    Parameters
    ----------
    chi2 : numpy.ndarray
        Chi-square values.
    dof : numpy.ndarray
        Degrees of freedom (broadcast against ``chi2``).

    Returns
    -------
    numpy.ndarray
        log10 of the probability of a chi-square at least ``chi2``; 0 where ``dof`` < 1 or
        ``chi2`` is not finite. Where the probability underflows a double, from the Legendre
        continued fraction of the upper incomplete gamma function, in logarithms.

    Examples
    --------
    >>> import numpy as np
    >>> chi2_log10_sf(np.array([2.0, 100.0]), np.array([2, 2])).round(3)
    array([ -0.434, -21.715])
    """
    chi2 = np.asarray(chi2, dtype=float)
    dof = np.asarray(dof, dtype=float)
    out = np.zeros(np.broadcast(chi2, dof).shape)
    ok = (dof >= 1) & np.isfinite(chi2)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = gammaincc(dof[ok] / 2.0, np.maximum(chi2[ok], 0.0) / 2.0)
        lp = np.log10(p)
        bad = ~np.isfinite(lp)  # deep in the tail gammaincc underflows
        if bad.any():
            lp[bad] = _log10_gamma_q(dof[ok][bad] / 2.0, chi2[ok][bad] / 2.0)
    out[ok] = lp
    return out


def _log10_gamma_q(a: np.ndarray, x: np.ndarray, terms: int = 300) -> np.ndarray:
    """log10 of the regularised upper incomplete gamma Q(a, x) for x > a + 1 (modified Lentz)."""
    tiny = 1e-300
    b = x + 1.0 - a
    c = np.full_like(x, 1.0 / tiny)
    d = 1.0 / b
    h = d.copy()
    for i in range(1, terms + 1):
        an = -i * (i - a)
        b = b + 2.0
        d = an * d + b
        d = np.where(np.abs(d) < tiny, tiny, d)
        c = b + an / c
        c = np.where(np.abs(c) < tiny, tiny, c)
        d = 1.0 / d
        delta = d * c
        h = h * delta
        if np.all(np.abs(delta - 1.0) < 1e-15):
            break
    return (a * np.log(x) - x - gammaln(a) + np.log(h)) / np.log(10.0)


def _axis_sigmas(err_maj: np.ndarray, err_min: np.ndarray, err_ang: np.ndarray,
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Per-axis (RA*, Dec) 1-sigma in arcsec from the error ellipse (angle E of N)."""
    t = np.radians(err_ang)
    s_ra = np.sqrt((err_maj * np.sin(t)) ** 2 + (err_min * np.cos(t)) ** 2)
    s_dec = np.sqrt((err_maj * np.cos(t)) ** 2 + (err_min * np.sin(t)) ** 2)
    return s_ra, s_dec


def _linear_fit(g: np.ndarray, t: np.ndarray, x: np.ndarray, w: np.ndarray, n: int,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted slope of ``x`` against ``t`` per group: (slope, slope error, reduced chi2)."""
    sw = _sum(g, w, n)
    safe = np.where(sw > 0, sw, 1.0)
    tm = _sum(g, w * t, n) / safe
    xm = _sum(g, w * x, n) / safe
    dt = t - tm[g]
    dx = x - xm[g]
    stt = _sum(g, w * dt * dt, n)
    stx = _sum(g, w * dt * dx, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.where(stt > 0, stx / stt, np.nan)
        resid = dx - np.nan_to_num(slope)[g] * dt
        npts = np.bincount(g, minlength=n)
        chi2 = _sum(g, w * resid * resid, n) / np.maximum(npts - 2, 1)
        err = np.where(stt > 0, 1.0 / np.sqrt(stt), np.nan)
    return slope, err, chi2


STAT_INPUTS = frozenset({"jdate", "ra", "dec", "err_maj", "err_min", "err_ang",
                         *(f"{b}_{s}" for b in BANDS for s in ("m", "msigcom", "cmsig"))})
"""The detection columns :func:`light_curve_stats` reads."""


def light_curve_stats(group: np.ndarray, n_groups: int, frame: pd.DataFrame,
                      ra0: np.ndarray | None = None, dec0: np.ndarray | None = None,
                      thresholds: Thresholds = DEFAULT_THRESHOLDS) -> pd.DataFrame:
    """Statistics of ``n_groups`` light curves from flat detections.

    Every statistic is one ``numpy.bincount`` (or one sort) over all rows, so the cost is linear
    in the number of detections. The columns are described in the module documentation and in
    :data:`STAT_COLUMNS`.

    Parameters
    ----------
    group : numpy.ndarray
        Each row's source, 0 to ``n_groups - 1``.
    n_groups : int
        The number of sources (sources without rows get NaN statistics and no flags).
    frame : pandas.DataFrame
        The detections: ``jdate`` (JD), ``ra``/``dec`` (deg), optionally ``err_maj``/``err_min``
        (arcsec) and ``err_ang`` (deg E of N; default 100 mas per axis), and per band ``{b}_m``
        with ``{b}_msigcom`` (or ``{b}_cmsig``); a band without ``{b}_m`` is left out.
    ra0, dec0 : numpy.ndarray or None, optional
        The sources' reference positions (deg) for the astrometry; default: the mean position
        of their detections (:func:`mean_positions`).
    thresholds : Thresholds, default DEFAULT_THRESHOLDS
        The flags' thresholds and error floors.

    Returns
    -------
    pandas.DataFrame
        One row per source (0 to ``n_groups - 1``): ``n_epochs``, ``baseline_yr``, per band
        ``{b}_n``, ``{b}_mean``, ``{b}_mean_err``, ``{b}_rms``, ``{b}_chi2dof``, ``{b}_amp``,
        then ``var_chi2dof``, ``var_log10_p``, ``pos_rms_arcsec``, ``pmra``, ``pmdec``,
        ``pmra_err``, ``pmdec_err``, ``pm``, ``pm_sig``, ``is_variable``, ``is_moving``.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> frame = pd.DataFrame({"jdate": 2451000.0 + np.arange(6.0), "ra": 10.0, "dec": -5.0,
    ...                       "k_m": [12.0, 12.1, 11.9, 12.0, 12.1, 11.9], "k_msigcom": 0.05})
    >>> st = light_curve_stats(np.array([0, 0, 0, 1, 1, 1]), 2, frame)
    >>> st[["n_epochs", "k_n", "k_mean", "is_variable"]]
       n_epochs  k_n  k_mean  is_variable
    0         3    3    12.0        False
    1         3    3    12.0        False
    """
    g = np.asarray(group, dtype=np.int64)
    n = int(n_groups)
    out: dict[str, np.ndarray] = {}
    counts = np.bincount(g, minlength=n)
    out["n_epochs"] = counts.astype(np.int32)
    jd = _col(frame, "jdate")
    t = (jd - JD_J2000) / DAYS_PER_YEAR
    tmin = np.full(n, np.inf)
    tmax = np.full(n, -np.inf)
    np.minimum.at(tmin, g, t)
    np.maximum.at(tmax, g, t)
    out["baseline_yr"] = np.where(counts > 0, tmax - tmin, np.nan)

    chi2_tot = np.zeros(n)
    dof_tot = np.zeros(n)
    npts_tot = np.zeros(n, dtype=np.int64)
    floor2 = thresholds.sigma_floor**2
    for b in BANDS:
        if f"{b}_m" not in frame:
            continue
        m = _col(frame, f"{b}_m")
        sig_name = f"{b}_msigcom" if f"{b}_msigcom" in frame else f"{b}_cmsig"
        s = _col(frame, sig_name) if sig_name in frame else np.full(len(m), np.nan)
        ok = np.isfinite(m) & np.isfinite(s) & (s > 0)
        gb, mb = g[ok], m[ok]
        w = 1.0 / (s[ok] ** 2 + floor2)
        nb = np.bincount(gb, minlength=n)
        sw = _sum(gb, w, n)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = np.where(sw > 0, _sum(gb, w * mb, n) / np.where(sw > 0, sw, 1.0), np.nan)
            chi2 = _sum(gb, w * (mb - np.nan_to_num(mean)[gb]) ** 2, n)
            m1 = _sum(gb, mb, n) / np.maximum(nb, 1)
            var = _sum(gb, (mb - m1[gb]) ** 2, n) / np.maximum(nb - 1, 1)
        out[f"{b}_n"] = nb.astype(np.int32)
        out[f"{b}_mean"] = mean
        out[f"{b}_mean_err"] = np.where(sw > 0, 1.0 / np.sqrt(np.where(sw > 0, sw, 1.0)), np.nan)
        out[f"{b}_rms"] = np.where(nb > 1, np.sqrt(var), np.nan)
        out[f"{b}_chi2dof"] = np.where(nb > 1, chi2 / np.maximum(nb - 1, 1), np.nan)
        out[f"{b}_amp"] = _percentile_range(gb, mb, nb, 0.025, 0.975)
        use = nb > 1
        chi2_tot += np.where(use, chi2, 0.0)
        dof_tot += np.where(use, nb - 1, 0)
        npts_tot += nb
    with np.errstate(divide="ignore", invalid="ignore"):
        out["var_chi2dof"] = np.where(dof_tot > 0, chi2_tot / np.maximum(dof_tot, 1), np.nan)
    out["var_log10_p"] = chi2_log10_sf(chi2_tot, dof_tot)

    # Astrometry: offsets from the reference position (mas), fitted linear motion per axis.
    ra = _col(frame, "ra")
    dec = _col(frame, "dec")
    if ra0 is None or dec0 is None:
        ra0, dec0 = mean_positions(g, n, ra, dec)
    cosd = np.cos(np.radians(dec0))[g]
    xi = ((ra - ra0[g] + 180.0) % 360.0 - 180.0) * cosd * MAS_PER_DEG
    eta = (dec - dec0[g]) * MAS_PER_DEG
    if {"err_maj", "err_min", "err_ang"} <= set(frame.columns):
        s_ra, s_dec = _axis_sigmas(_col(frame, "err_maj"), _col(frame, "err_min"),
                                   _col(frame, "err_ang"))
        s_ra, s_dec = s_ra * 1000.0, s_dec * 1000.0
    else:
        s_ra = s_dec = np.full(len(g), 100.0)
    fl2 = thresholds.astrometric_floor_mas**2
    s_ra = np.sqrt(np.where(np.isfinite(s_ra) & (s_ra > 0), s_ra, 100.0) ** 2 + fl2)
    s_dec = np.sqrt(np.where(np.isfinite(s_dec) & (s_dec > 0), s_dec, 100.0) ** 2 + fl2)
    with np.errstate(divide="ignore", invalid="ignore"):
        mx = _sum(g, xi, n) / np.maximum(counts, 1)
        my = _sum(g, eta, n) / np.maximum(counts, 1)
        r2 = _sum(g, (xi - mx[g]) ** 2 + (eta - my[g]) ** 2, n) / np.maximum(counts - 1, 1)
    out["pos_rms_arcsec"] = np.where(counts > 1, np.sqrt(r2) / 1000.0, np.nan)
    pmra, e_ra, c_ra = _linear_fit(g, t, xi, 1.0 / s_ra**2, n)
    pmdec, e_dec, c_dec = _linear_fit(g, t, eta, 1.0 / s_dec**2, n)
    # Inflate the errors when the residuals say the uncertainties are too small.
    e_ra = e_ra * np.sqrt(np.maximum(c_ra, 1.0))
    e_dec = e_dec * np.sqrt(np.maximum(c_dec, 1.0))
    fit = (counts >= 3) & (out["baseline_yr"] > 0)
    out["pmra"] = np.where(fit, pmra, np.nan)
    out["pmdec"] = np.where(fit, pmdec, np.nan)
    out["pmra_err"] = np.where(fit, e_ra, np.nan)
    out["pmdec_err"] = np.where(fit, e_dec, np.nan)
    out["pm"] = np.hypot(out["pmra"], out["pmdec"])
    with np.errstate(divide="ignore", invalid="ignore"):
        out["pm_sig"] = np.sqrt((out["pmra"] / out["pmra_err"]) ** 2
                                + (out["pmdec"] / out["pmdec_err"]) ** 2)
    th = thresholds
    out["is_variable"] = (npts_tot >= th.var_min_points) & (out["var_log10_p"] <= th.var_log10_p)
    out["is_moving"] = ((counts >= th.pm_min_epochs) & (out["baseline_yr"] >= th.pm_min_baseline_yr)
                        & (np.nan_to_num(out["pm"]) >= th.pm_min_mas_yr)
                        & (np.nan_to_num(out["pm_sig"]) >= th.pm_min_sig))
    return pd.DataFrame(out)


def mean_positions(g: np.ndarray, n: int, ra: np.ndarray, dec: np.ndarray,
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Mean position per group (unit-vector mean; safe across RA 0/360).

    Parameters
    ----------
    g : numpy.ndarray
        Each row's group, 0 to ``n - 1``.
    n : int
        The number of groups.
    ra, dec : numpy.ndarray
        The rows' positions (deg).

    Returns
    -------
    tuple of numpy.ndarray
        (mean RA, mean Dec) in degrees, per group, RA from 0 to 360.

    Examples
    --------
    >>> import numpy as np
    >>> ra, dec = mean_positions(np.array([0, 0]), 1, np.array([350.0, 20.0]), np.array([0.0, 0.0]))
    >>> round(float(ra[0]), 9), round(float(dec[0]), 9)
    (5.0, 0.0)
    """
    r, d = np.radians(ra), np.radians(dec)
    x = _sum(g, np.cos(d) * np.cos(r), n)
    y = _sum(g, np.cos(d) * np.sin(r), n)
    z = _sum(g, np.sin(d), n)
    ra = np.degrees(np.arctan2(y, x)) % 360.0
    return np.where(ra >= 360.0, 0.0, ra), np.degrees(np.arctan2(z, np.hypot(x, y)))


def _col(frame: pd.DataFrame, name: str) -> np.ndarray:
    col = frame[name]
    if col.dtype == np.float64:
        return col.to_numpy()
    return pd.to_numeric(col, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
