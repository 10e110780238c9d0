"""The sign-flip test (against every sign pattern listed, and scipy) and BH q-values."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats as scipy_stats

from steerops import stats


def test_min_questions_is_where_a_sign_test_first_reaches_the_claims_level():
    for k in range(1, 12):
        level = 0.025 / k  # one-sided, Bonferroni over k claims
        expected = next(n for n in range(1, 50) if 0.5**n <= level)
        assert stats.min_questions(k) == expected
        assert 0.5 ** (expected - 1) > level
    assert [stats.min_questions(k) for k in (1, 2, 3, 4, 5)] == [6, 7, 7, 8, 8]
    assert stats.min_questions(1) == stats.MIN_HELDOUT


def _flipped_means(d: np.ndarray) -> np.ndarray:
    """The mean under every sign pattern of `d`, enumerated."""
    signs = np.array(list(itertools.product([-1.0, 1.0], repeat=len(d))))
    return (signs * d).mean(axis=1)


def _enumerated_share(d: np.ndarray, chunk: int = 1 << 18) -> float:
    """The share of all 2**n sign patterns whose mean reaches `d`'s, listed chunk by chunk."""
    n, hits = len(d), 0
    floor = d.mean() - 1e-9
    for start in range(0, 2**n, chunk):
        patterns = np.arange(start, min(2**n, start + chunk))[:, None] >> np.arange(n) & 1
        hits += int(np.count_nonzero((1.0 - 2.0 * patterns) @ d / n >= floor))
    return hits / 2**n


def test_the_sign_flip_p_is_the_share_of_sign_patterns_at_least_as_extreme():
    rng = np.random.default_rng(3)
    for n in (1, 5, 9, 14):
        d = rng.normal(0.5, 1.0, n).round(1)
        exact = float((_flipped_means(d) >= d.mean() - 1e-9).mean())
        assert stats.sign_flip_p(d, seed=0) == pytest.approx(exact, abs=1e-12)
    # counted exactly up to EXACT_FLIPS deltas, every pattern listed here as the reference
    for d in (rng.normal(0.4, 1.0, 17), rng.normal(0.2, 1.0, 23), 5.0 * rng.integers(-3, 5, 22)):
        assert stats.sign_flip_p(d, seed=0) == pytest.approx(_enumerated_share(d), abs=1e-12)
        assert stats.sign_flip_p(d, seed=0) == stats.sign_flip_p(d, seed=1)  # no sampling
    # beyond, random patterns: within their sampling error of scipy's, and seeded
    long = rng.normal(0.1, 1.0, stats.EXACT_FLIPS + 6)
    assert stats.sign_flip_p(long, seed=0) == stats.sign_flip_p(long, seed=0)
    # the observed pattern counts among the random ones: never p 0, even where no flip
    # reaches the observed mean, and (hits + 1) / (resamples + 1) with hits recounted
    assert stats.sign_flip_p([25.0] * 40, seed=0) == 1 / (stats.RESAMPLES + 1)
    draws = np.random.default_rng(5)
    signs = np.concatenate(
        [
            1.0 - 2.0 * draws.integers(0, 2, size=(min(4096, stats.RESAMPLES - at), long.size))
            for at in range(0, stats.RESAMPLES, 4096)
        ]
    )
    hits = int(np.count_nonzero(signs @ long / long.size >= long.mean() - 1e-12))
    assert stats.sign_flip_p(long, seed=5) == (hits + 1) / (stats.RESAMPLES + 1)
    # a 0/100 judge's deltas tie often (a 0 flips to itself): patterns that tie the observed
    # mean count when sampled too, as when every pattern is counted
    tied = 100.0 * rng.integers(-1, 2, long.size)
    tied[0] = 100.0  # a positive mean
    means = signs @ tied / tied.size
    ties = int(np.count_nonzero(np.isclose(means, tied.mean(), rtol=0, atol=1e-9)))
    assert ties > 100
    hits = int(np.count_nonzero(means >= tied.mean() - 1e-9))
    assert stats.sign_flip_p(tied, seed=5) == (hits + 1) / (stats.RESAMPLES + 1)
    # and scipy's permutation test agrees: to rounding where both enumerate, within sampling
    # error where scipy samples (ties of 0/100 judge scores included)
    for d in (
        rng.normal(0.3, 1.0, 12),
        100.0 * rng.integers(-1, 2, 11),
        rng.normal(0, 1, 30),
        long,
    ):
        ref = scipy_stats.permutation_test(
            (d,), np.mean, permutation_type="samples", alternative="greater",
            n_resamples=20_000, vectorized=True, rng=np.random.default_rng(1),
        ).pvalue  # fmt: skip
        ours = stats.sign_flip_p(d, seed=0)
        if 2 ** len(d) <= 20_000:
            assert ours == pytest.approx(ref, abs=1e-12)
        else:  # scipy's 20,000 patterns against our count or our own 20,000
            assert abs(ours - ref) < 5 * math.sqrt(2 * ref * (1 - ref) / 20_000) + 1e-4


def _rational_share(d: np.ndarray) -> float:
    """The exact share of sign patterns whose sum reaches the observed one, the deltas read
    as the fractions they round (thirds, tenths, sevenths) and counted in integers."""
    exact = [Fraction(float(x)).limit_denominator(1000) for x in d]
    scale = math.lcm(*(f.denominator for f in exact))
    ints = np.array([int(f * scale) for f in exact], dtype=np.int64)
    patterns = np.arange(2 ** len(d))[:, None] >> np.arange(len(d)) & 1
    return float(np.mean((1 - 2 * patterns) @ ints >= ints.sum()))


def test_the_exact_count_keeps_ties_whose_sums_round_apart():
    """Judge means of thirds, tenths and sevenths: sums equal as fractions round apart in
    floats (the observed pattern's own, computed in two halves, among them), and a tie must
    still count. Without the rounding margin this count, like a float enumeration, misses
    ties (0.43738 against 0.43756)."""
    third, seventh = 100 / 3, 1 / 7
    d = np.array(
        [-third, 0, 0.1, -2 * third, -third, 0, third, -third, 0.1, -100, 0.1, 0.1, 0.1]
        + [2 * third, 0, 100, 2 * third, seventh]
    )
    assert stats.sign_flip_p(d, seed=0) == _rational_share(d) == 0.43756103515625
    assert stats.sign_flip_p(d, seed=0) >= 2.0 ** -len(d)


def test_the_sign_flip_p_of_no_movement_is_one_and_of_every_question_up_is_half_to_the_n():
    assert stats.sign_flip_p([0.0] * 12, seed=0) == 1.0
    assert stats.sign_flip_p([], seed=0) is None
    # all 10 questions up by the same amount: only the unflipped pattern reaches the mean
    assert stats.sign_flip_p([25.0] * 10, seed=0) == pytest.approx(0.5**10)
    # a sign test would call 9 of 10 up significant; one large drop makes the mean fall
    assert stats.sign_flip_p([5.0] * 9 + [-100.0], seed=0) > 0.5


@pytest.mark.parametrize("n", [5, 30])  # enumerated and sampled
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_delta_gives_no_sign_flip_test_rather_than_p_zero(n, bad):
    assert stats.sign_flip_p([10.0] * (n - 1) + [bad], seed=0) is None


def test_q_values_are_benjamini_hochberg_over_the_tests_given():
    ps = [0.01, None, 0.04, 0.03, 0.2]
    qs = stats.false_discovery_q(ps)
    # by the definition: q of the i-th smallest of m is min over j >= i of p_(j) m / j
    known = sorted(p for p in ps if p is not None)
    m = len(known)
    by_rank = [min(known[j] * m / (j + 1) for j in range(i, m)) for i in range(m)]
    expected = {p: min(1.0, q) for p, q in zip(known, by_rank, strict=True)}
    assert qs[1] is None
    assert [q for q in qs if q is not None] == pytest.approx([expected[p] for p in ps if p])
    assert qs[0] == pytest.approx(0.04) and qs[2] == pytest.approx(qs[3]) == pytest.approx(0.16 / 3)
    assert stats.false_discovery_q([None, None]) == [None, None]
    assert stats.false_discovery_q([0.03]) == [pytest.approx(0.03)]  # one test: its own p
