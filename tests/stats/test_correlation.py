"""Pearson's r and its Fisher interval against scipy and the textbook formula."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy.stats import pearsonr

from steerops.stats.correlation import pearson, pearson_interval


def test_r_and_interval_match_scipy_and_fisher_z():
    rng = np.random.default_rng(4)
    for n in (4, 9, 60):
        a = rng.normal(size=n)
        b = 0.6 * a + rng.normal(size=n)
        r = pearsonr(a, b).statistic
        assert pearson(a, b) == pytest.approx(r, abs=1e-12)
        z, half = math.atanh(r), 1.959963984540054 / math.sqrt(n - 3)
        low, high = pearson_interval(a, b)
        assert (low, high) == pytest.approx((math.tanh(z - half), math.tanh(z + half)), abs=1e-9)


def test_no_interval_under_four_points_or_with_a_constant_side():
    x = np.arange(6.0)
    assert pearson_interval(x[:3], x[:3] ** 2) == (None, None)
    assert pearson_interval(x, np.ones(6)) == (None, None)
    assert math.isnan(pearson(x, np.ones(6)))
    # a constant side scipy calls constant though rounding leaves a tiny spread of its mean
    assert math.isnan(pearson(np.full(7, 0.1), x[:6].tolist() + [9.0]))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # r = -1: an infinite z, no warning
        low, high = pearson_interval(x, -x)
    assert low == pytest.approx(-1.0) and high == pytest.approx(-1.0)
    # collinear sides whose rounding would put r a last bit past 1: clipped, as scipy's
    rng = np.random.default_rng(0)
    rs = [pearson(a, 3 * a + 1) for a in rng.normal(size=(200, 7))]
    assert max(rs) == 1.0 and min(rs) > 1 - 1e-12
