"""Pearson's r and its 95% interval, shared by the probes' fits and the scores' noise
ceiling."""

from __future__ import annotations

import numpy as np
from scipy import stats


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r; nan when either side is constant (as scipy's pearsonr)."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:  # centring by a rounded mean leaves a tiny non-zero
        return float("nan")
    a = np.asarray(a, dtype=np.float64) - np.mean(a)
    b = np.asarray(b, dtype=np.float64) - np.mean(b)
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    if not denom > 0:
        return float("nan")
    # within [-1, 1] as scipy's: collinear sides can round a last bit past 1
    return float(np.clip((a * b).sum() / denom, -1.0, 1.0))


def pearson_interval(a: np.ndarray, b: np.ndarray) -> tuple[float | None, float | None]:
    """95% interval of Pearson r between `a` and `b` (Fisher z, scipy's); None without one
    (fewer than 4 points, or a constant side)."""
    if len(a) < 4 or np.isnan(pearson(a, b)):  # nan: a constant side
        return None, None
    with np.errstate(divide="ignore"):  # r = +-1 gives an infinite z and a point interval
        low, high = stats.pearsonr(a, b).confidence_interval(0.95)
    return float(low), float(high)
