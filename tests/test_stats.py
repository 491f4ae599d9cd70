"""Light-curve statistics helpers against independent computations (no lake needed)."""

from __future__ import annotations

import numpy as np
from scipy.special import gammaincc, gammaln, logsumexp

from tmass_lake.lake.stats import chi2_log10_sf, mean_positions


def test_chi2_tail_is_exact_where_the_probability_underflows():
    # Q(1, x) = exp(-x): chi2 = 2x with 2 degrees of freedom, far below the smallest double
    chi2 = np.array([1e4, 2e3, 100.0])
    assert np.allclose(chi2_log10_sf(chi2, np.array([2, 2, 2])), -chi2 / 2 / np.log(10), rtol=1e-12)
    # across the underflow boundary the tail formula continues gammaincc's values
    dof = np.array([10, 30, 600])
    near = np.array([1300.0, 1350.0, 2000.0])  # gammaincc still finite here
    assert np.all(np.isfinite(np.log10(gammaincc(dof / 2, near / 2))))
    assert np.allclose(chi2_log10_sf(near, dof), np.log10(gammaincc(dof / 2, near / 2)), rtol=1e-9)
    # integer a: Q(a, x) = exp(-x) sum_{k<a} x^k / k!, summed in logarithms
    a, x = 15, 2.5e5
    k = np.arange(a)
    exact = (-x + logsumexp(k * np.log(x) - gammaln(k + 1))) / np.log(10)
    assert np.isclose(chi2_log10_sf(np.array([2 * x]), np.array([2 * a]))[0], exact, rtol=1e-12)


def test_mean_position_across_ra_zero_stays_below_360():
    ra, dec = mean_positions(np.array([0, 0, 1, 1]), 2, np.array([359.0, 1.0, 359.0, 0.5]), np.zeros(4))
    assert np.all((ra >= 0) & (ra < 360)) and abs(ra[0]) < 1e-9 and np.allclose(dec, 0)
    assert np.isclose(ra[1], 359.75)
