"""The sign-flip permutation test of a delta and the Benjamini-Hochberg q-values a report
reads its tests together with; how many questions a claim needs (see `steerops.stats`)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
from scipy import stats as scipy_stats

from steerops.stats.intervals import CONFIDENCE, RESAMPLES

# a held-out effect's sign-flip test passes under this one-sided p: the level of the
# interval's lower bound (rounded: 1 - 0.95 is not 0.05 in binary)
TEST_LEVEL = round((1 - CONFIDENCE) / 2, 12)
# the false discovery rate a report's q-values are read at
FDR = round(1 - CONFIDENCE, 12)


def sign_flip_p(deltas: Iterable[float], seed: int, resamples: int = RESAMPLES) -> float | None:
    """One-sided p that paired `deltas` have a mean above zero, by a sign-flip permutation
    test: with no effect each question's delta is as likely negative as positive, so the
    observed mean is ranked among the means under flipped signs. Exact (every sign pattern
    counted) up to `EXACT_FLIPS` deltas, else `resamples` random patterns with the observed
    one counted among them (so p is never 0), as scipy.stats.permutation_test counts (the
    tests compare the two). Written with numpy: every config of a grid gets one per half,
    and scipy's took 40-100 ms a call against about 1 ms. None without deltas, or with one
    that is not finite (no mean to rank: every comparison with nan is false, which read as
    p 0)."""
    d = np.asarray(list(deltas), dtype=float)
    n = d.size
    if n == 0 or not np.isfinite(d).all():
        return None
    observed = d.mean()
    # a flipped pattern that ties the observed mean counts, up to rounding (scipy's margin)
    floor = observed - 100 * np.finfo(float).eps * abs(observed)
    if n <= EXACT_FLIPS:
        return _exact_flip_share(d, floor)
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, resamples, _FLIP_CHUNK):  # bounded memory on long halves
        rows = min(_FLIP_CHUNK, resamples - start)
        signs = 1.0 - 2.0 * rng.integers(0, 2, size=(rows, n))
        hits += int(np.count_nonzero(signs @ d / n >= floor))
    return (hits + 1) / (resamples + 1)


def _exact_flip_share(d: np.ndarray, floor: float) -> float:
    """The share of all 2**n sign patterns whose mean reaches `floor`, counted without
    listing them: every signed sum of each half of `d`, one half sorted, each sum of the
    other looked up in it (2 x 2**(n/2) sums instead of 2**n)."""

    def signed_sums(values: np.ndarray) -> np.ndarray:
        sums = np.zeros(1)
        for v in values:
            sums = np.concatenate((sums + v, sums - v))
        return sums

    half = d.size // 2
    first, second = signed_sums(d[:half]), np.sort(signed_sums(d[half:]))
    # two half sums round apart from the mean's one sum: a tie (the observed pattern
    # itself) must still count, so the bar is lowered by their rounding's bound as well
    # (deltas that cancel to under it, 1e15 against -1e15, would count too many: judge
    # deltas, within +-100, are far from it)
    bar = floor * d.size - d.size * np.finfo(float).eps * np.abs(d).sum()
    below = np.searchsorted(second, bar - first, side="left")
    return float(np.sum(second.size - below)) / 2.0**d.size


# the exact count takes about 10 ms at 34 deltas (2 x 131,072 sums) and 4x more per 2 beyond
EXACT_FLIPS = 34


_FLIP_CHUNK = 4096


def false_discovery_q(ps: Sequence[float | None]) -> list[float | None]:
    """Benjamini-Hochberg adjusted p-values of the tests in `ps` read together (a None is no
    test: it stays None and does not count): the findings with q < 0.05 are a set in which
    at most 5% are expected to be false, however many tests the reader looked at."""
    known = [i for i, p in enumerate(ps) if p is not None]
    out: list[float | None] = [None] * len(ps)
    if known:
        q = scipy_stats.false_discovery_control([float(ps[i]) for i in known], method="bh")
        for i, value in zip(known, np.atleast_1d(q), strict=True):
            out[i] = float(value)
    return out


def family_confidence(k: int) -> float:
    """Each interval's confidence when `k` are claimed together (Bonferroni): all k hold
    at CONFIDENCE."""
    return 1 - (1 - CONFIDENCE) / max(k, 1)


def min_questions(k: int = 1) -> int:
    """Fewest paired questions on which any test could claim one of `k` effects together at
    CONFIDENCE: n questions all moving one way have one-sided sign-test p = 0.5**n, which
    must reach (1 - CONFIDENCE) / (2k). 6 for one claim (MIN_HELDOUT), 7 for 2-3, 8 for
    4-6. Below it a bootstrap interval shrinks to the data's range and reads certainty
    from a handful of questions."""
    return math.ceil(math.log2(2 * max(k, 1) / (1 - CONFIDENCE)) - 1e-9)
