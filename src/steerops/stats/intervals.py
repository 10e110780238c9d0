"""Intervals: the paired bootstrap of a trait delta, Wilson intervals of shares (plain,
clustered) and the task bootstrap of pairwise shares (see `steerops.stats`)."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
from scipy.stats import t as scipy_t

CONFIDENCE = 0.95
RESAMPLES = 20_000  # the Bonferroni tails of 5 claims on 10 questions sit 6 draws in
# one claim at 95% (tails 50 draws in) over thousands of comparisons a resample
PAIRWISE_RESAMPLES = 2000

Score = tuple[float | None, float | None]  # (trait, coherence) of one response


@dataclass(frozen=True)
class Interval:
    n: int  # questions (or trials, for a proportion) in the estimate
    mean: float | None
    lo: float | None
    hi: float | None


def paired_differences(
    steered: Sequence[float | None], baseline: Sequence[float | None], sign: float = 1.0
) -> np.ndarray:
    """sign * (steered - baseline) over the questions scored in both, in question order."""
    if len(steered) != len(baseline):
        raise ValueError("paired: steered and baseline need one score per question each")
    return np.array(
        [
            sign * (s - b)
            for s, b in zip(steered, baseline, strict=True)
            if s is not None and b is not None
        ],
        dtype=float,
    )


def direction_sign(direction: str) -> float:
    """+1 when steering should raise the trait score (`steering.direction` "positive"),
    -1 when it should lower it ("negative"): deltas are multiplied by it."""
    return -1.0 if direction == "negative" else 1.0


def paired_mean(
    steered: Sequence[Score], baseline: Sequence[Score], sign: float = 1.0
) -> float | None:
    """`paired_delta`'s mean without its interval, from (trait, coherence) scores: over the
    questions whose trait both scored; None when none is."""
    d = paired_differences([s for s, _ in steered], [b for b, _ in baseline], sign)
    return float(d.mean()) if len(d) else None


def paired_delta(
    steered: Sequence[float | None],
    baseline: Sequence[float | None],
    seed: int,
    sign: float = 1.0,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
) -> Interval:
    """Mean of sign * (steered - baseline) over the questions scored in both, with its paired
    bootstrap expanded percentile interval (see `steerops.stats`)."""
    return delta_interval(paired_differences(steered, baseline, sign), seed, resamples, confidence)


def delta_interval(
    d: np.ndarray, seed: int, resamples: int = RESAMPLES, confidence: float = CONFIDENCE
) -> Interval:
    """`paired_delta` of the paired differences `d` themselves."""
    n = len(d)
    if n == 0:
        return Interval(0, None, None, None)
    draws = _draws(seed, n, resamples) if n <= SHARED_DRAWS_N else _draw(seed, n, resamples)
    means = d[draws].mean(axis=1)
    tail = expanded_tail(n, confidence)
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    return Interval(n, float(d.mean()), float(lo), float(hi))


# up to this many questions the bootstrap's draws are kept between calls (at most 4 sets
# of RESAMPLES x n indices: 4 x 10 MB at the bound)
SHARED_DRAWS_N = 64


def _draw(seed: int, n: int, resamples: int) -> np.ndarray:
    """The bootstrap's resampled question indices, (resamples, n)."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


@functools.lru_cache(maxsize=4)
def _draws(seed: int, n: int, resamples: int) -> np.ndarray:
    """`_draw`, the same for every config of a half (one seed, one n), so drawn once and
    kept (read-only: shared by every caller)."""
    draws = _draw(seed, n, resamples)
    draws.flags.writeable = False
    return draws


def expanded_tail(n: int, confidence: float = CONFIDENCE) -> float:
    """The percentile bootstrap's tail probability on each side for `n` paired differences,
    widened as Student's t widens the normal interval of a mean (see `steerops.stats`):
    (1 - confidence) / 2 as n grows, smaller on few questions."""
    if n < 2:
        return (1.0 - confidence) / 2.0  # one difference: every resample is that difference
    z = math.sqrt(n / (n - 1)) * scipy_t.ppf(0.5 + confidence / 2.0, n - 1)
    return float(NormalDist().cdf(-z))


def proportion(hits: float, n: int, confidence: float = CONFIDENCE) -> Interval:
    """hits / n with its Wilson score interval (scipy's `binomtest(hits, n).proportion_ci(
    method="wilson")` for whole hits; half hits, from ties, are allowed, which scipy's is
    not); no estimate from no trials."""
    if n == 0:
        return Interval(0, None, None, None)
    if not 0 <= hits <= n:
        raise ValueError(f"proportion: {hits} hits out of {n}")
    return Interval(n, hits / n, *_wilson(hits / n, n, confidence))


def pairwise_share(
    hits: Sequence[float],
    first: Sequence[Any],
    second: Sequence[Any],
    seed: int,
    resamples: int = PAIRWISE_RESAMPLES,
    confidence: float = CONFIDENCE,
) -> Interval:
    """The share of pairwise comparisons won (`hits` 0, 0.5 for a tie, or 1 per comparison
    of tasks `first[i]` and `second[i]`: task ids, drawn in their sorted order), with a
    bootstrap interval over the tasks compared: each resample draws the tasks with
    replacement and weighs a comparison by the product of its two tasks' draw counts.
    Comparisons that share a task are not independent (a mis-scored task loses all of its
    comparisons), which a Wilson interval over comparisons would ignore. Resamples where
    no comparison survives are left out of the percentiles. When every comparison scored
    the same, resamples cannot vary: the interval is then the Wilson interval with each
    task compared counted once (as `clustered_proportion` counts clusters at 0 or n hits),
    not one of no width."""
    y = np.asarray(hits, dtype=np.float64)
    if not len(y) == len(first) == len(second):
        raise ValueError("pairwise_share: one pair of tasks per hit")
    if len(y) == 0:
        return Interval(0, None, None, None)
    _, task = np.unique(np.asarray([*first, *second]), return_inverse=True)
    a, b = task[: len(y)], task[len(y) :]
    k = int(task.max()) + 1
    if np.ptp(y) == 0:
        return Interval(len(y), float(y[0]), *_wilson(float(y[0]), k, confidence))
    rng = np.random.default_rng(seed)
    shares = []
    for start in range(0, resamples, 64):  # [draws, comparisons] weights, a chunk at a time
        rows = min(64, resamples - start)
        drawn = rng.integers(0, k, size=(rows, k)) + (np.arange(rows) * k)[:, None]
        counts = np.bincount(drawn.ravel(), minlength=rows * k).reshape(rows, k)
        weight = (counts[:, a] * counts[:, b]).astype(np.float64)
        total = weight.sum(axis=1)
        shares.append((weight @ y)[total > 0] / total[total > 0])
    means = np.concatenate(shares)
    if len(means) == 0:
        return Interval(len(y), float(y.mean()), None, None)
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    return Interval(len(y), float(y.mean()), float(lo), float(hi))


def clustered_proportion(
    hits: Sequence[float], clusters: Sequence[Any], confidence: float = CONFIDENCE
) -> Interval:
    """The share of `hits` (0/1 per example) with a Wilson interval at the effective sample
    size of examples that come in clusters (the rollouts of one prompt, the two members
    of a pair): n / deff, where the design effect deff is the cluster-robust variance of
    the share (sum over the k clusters of (hits_c - p n_c)^2, over n^2, times k / (k - 1))
    against the binomial p(1 - p) / n, never below 1, and the interval's critical value is
    Student's t with k - 1 degrees of freedom, not the normal's. The variance is estimated
    from k clusters, so on few of them the normal z with the plain variance is too narrow:
    in tests/test_stats.py's simulation 10 prompts x 16 correlated rollouts missed the true
    share 8.0% of the time at 95% and 8 x 8 10.2%; 4.2% and 6.0% now. Where the rows barely
    correlate (the design effect floored at 1) t keeps it conservative: 4 prompts x 10
    independent rows miss about 0.1%. One example per cluster is `proportion` (the binomial variance
    is known from p, nothing to estimate). At 0 or n hits the variance cannot tell the
    design effect, so each cluster counts once (the Wilson interval of k draws: clusters of
    copies give what one example each would, and no cluster is taken for more draws than
    it may be); so does a single cluster, one draw."""
    n = len(hits)
    if len(clusters) != n:
        raise ValueError(f"clustered_proportion: {n} hits but {len(clusters)} cluster labels")
    if n == 0:
        return Interval(0, None, None, None)
    y = np.asarray(hits, dtype=np.float64)
    if not ((y >= 0) & (y <= 1)).all():  # NaN too
        raise ValueError("clustered_proportion: a hit outside [0, 1]")
    # an example of unknown source (None) is its own cluster, not one with every other
    names = [f"\0{i}" if c is None else str(c) for i, c in enumerate(clusters)]
    _, label = np.unique(np.asarray(names), return_inverse=True)
    k = int(label.max()) + 1
    p = float(y.mean())
    binomial = p * (1 - p) / n
    if k == n or k == 1 or binomial <= 0:  # one cluster: no spread between clusters to read
        return Interval(n, p, *_wilson(p, k, confidence))
    residual = np.bincount(label, weights=y - p, minlength=k)  # hits_c - p n_c
    robust = float(residual @ residual) / (n * n) * k / (k - 1)
    n_eff = n / max(1.0, robust / binomial)
    critical = float(scipy_t.ppf(0.5 + confidence / 2.0, k - 1))
    return Interval(n, p, *_wilson(p, n_eff, confidence, critical))


def _wilson(
    p: float, n: float, confidence: float, critical: float | None = None
) -> tuple[float, float]:
    """The Wilson score interval of share p over n trials (n may be an effective size), at
    the normal's critical value for `confidence` unless another (Student's t) is given."""
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0) if critical is None else critical
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # rounding can step a hair past the bounds at 0 or n hits
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_of(values: Sequence[float | None]) -> float | None:
    """The mean of the scored values (None: none scored)."""
    scored = [v for v in values if v is not None]
    return sum(scored) / len(scored) if scored else None


def as_number(value: Any) -> float | None:
    """A float, or None for missing and NaN (pandas rows carry NaN for missing)."""
    if value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return None if x != x else x
