"""Independent references for the statistics tests: the documented bootstrap recipe,
written out draw by draw, and Hesterberg's tail from scipy."""

from __future__ import annotations

import numpy as np
from scipy import stats as scipy_stats

from steerops import stats


def reference_interval(steered, baseline, seed, sign=1.0, resamples=stats.RESAMPLES):
    """The documented recipe, written out draw by draw."""
    pairs = list(zip(steered, baseline, strict=True))
    d = np.array([sign * (s - b) for s, b in pairs if s is not None and b is not None])
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(d), size=(resamples, len(d)))
    means = np.array([np.mean([d[i] for i in row]) for row in draws])
    tail = expanded_tail(len(d))
    return d.mean(), np.quantile(means, tail), np.quantile(means, 1 - tail)


def expanded_tail(n, confidence=0.95):
    """Hesterberg's expanded percentile tail, from scipy's t and normal distributions."""
    z = np.sqrt(n / (n - 1)) * scipy_stats.t.ppf(0.5 + confidence / 2, n - 1)
    return scipy_stats.norm.cdf(-z)
