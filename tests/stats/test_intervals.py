"""The paired bootstrap (against the recipe written out and scipy's bootstrap), its
coverage on few questions, Wilson intervals (plain, clustered) and the task bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats
from scipy.optimize import brentq

from stats_data import expanded_tail, reference_interval
from steerops import stats


def test_paired_bootstrap_matches_the_documented_recipe_and_scipy():
    rng = np.random.default_rng(3)
    baseline = list(rng.choice([0.0, 100.0], size=25, p=[0.8, 0.2]))
    steered = [min(100.0, b + x) for b, x in zip(baseline, rng.choice([0, 100], 25), strict=True)]
    steered[4] = None  # unscored: the pair is left out
    got = stats.paired_delta(steered, baseline, seed=11)
    mean, lo, hi = reference_interval(steered, baseline, seed=11)
    assert got.n == 24
    assert (got.mean, got.lo, got.hi) == pytest.approx((mean, lo, hi), abs=1e-12)
    # scipy's own percentile bootstrap (other draws) agrees within resampling noise
    d = np.array([s - b for s, b in zip(steered, baseline, strict=True) if s is not None])
    ref = scipy_stats.bootstrap(
        (d,),
        np.mean,
        n_resamples=20000,
        method="percentile",
        confidence_level=1 - 2 * expanded_tail(24),
        random_state=1,
    ).confidence_interval
    assert got.lo == pytest.approx(ref.low, abs=4.0) and got.hi == pytest.approx(ref.high, abs=4.0)
    # the steering direction flips the sign of the delta and mirrors the interval
    neg = stats.paired_delta(steered, baseline, seed=11, sign=-1.0)
    assert (neg.mean, neg.lo, neg.hi) == pytest.approx((-mean, -hi, -lo), abs=1e-9)
    assert stats.paired_delta([None], [50.0], seed=0) == stats.Interval(0, None, None, None)


def test_expanded_tail_widens_on_few_questions_and_meets_the_plain_tail_on_many():
    assert stats.expanded_tail(20) == pytest.approx(expanded_tail(20), rel=1e-9)
    assert stats.expanded_tail(20) == pytest.approx(0.01588, abs=1e-5)
    assert stats.expanded_tail(5) < stats.expanded_tail(20) < stats.expanded_tail(40) < 0.025
    assert stats.expanded_tail(100_000) == pytest.approx(0.025, abs=1e-5)
    assert stats.expanded_tail(1) == pytest.approx(
        0.025
    )  # one difference: every resample is itself
    assert stats.expanded_tail(20, 0.99) == pytest.approx(expanded_tail(20, 0.99), rel=1e-9)
    one = stats.paired_delta([70.0], [20.0], seed=0)
    assert (one.n, one.mean, one.lo, one.hi) == (1, 50.0, 50.0, 50.0)


def null_misses(n, k, families, seed=0):
    """Share of `families` of k deltas on n questions with no effect (judge-like scores,
    symmetric about zero) in which any of the k Bonferroni intervals leaves out zero."""
    rng = np.random.default_rng(seed)
    confidence = stats.family_confidence(k)
    misses = 0
    for f in range(families):
        hit = False
        for j in range(k):
            baseline = rng.choice([0.0, 20.0, 50.0, 80.0], size=n)
            steered = baseline + rng.choice([-20, -10, 0, 0, 10, 20], size=n)
            steered += rng.normal(0, 3, size=n)
            got = stats.paired_delta(
                list(steered), list(baseline), f * k + j, confidence=confidence
            )
            hit = hit or got.lo > 0 or got.hi < 0
        misses += hit
    return misses / families


def test_intervals_hold_their_confidence_on_few_questions_alone_and_claimed_together():
    # The plain percentile interval missed zero 7% of the time alone and 9% two together
    # at n = 20 in this simulation; 1,200 families put 5% within about 1.3 points.
    assert null_misses(n=20, k=1, families=1200) <= 0.065
    assert null_misses(n=20, k=2, families=1200, seed=1) <= 0.065
    assert null_misses(n=10, k=1, families=1200, seed=2) <= 0.075


def test_proportion_is_the_wilson_interval_of_scipy():
    for n in (1, 2, 7, 12, 30, 61):
        for hits in range(n + 1):
            got = stats.proportion(hits, n)
            ci = scipy_stats.binomtest(hits, n).proportion_ci(0.95, method="wilson")
            assert got.n == n and got.mean == hits / n
            assert (got.lo, got.hi) == pytest.approx((ci.low, ci.high), abs=1e-12)
            assert 0.0 <= got.lo <= got.mean <= got.hi <= 1.0
    ci = scipy_stats.binomtest(9, 12).proportion_ci(0.8, method="wilson")
    got = stats.proportion(9, 12, confidence=0.8)
    assert (got.lo, got.hi) == pytest.approx((ci.low, ci.high), abs=1e-12)
    assert stats.proportion(0, 0) == stats.Interval(0, None, None, None)
    with pytest.raises(ValueError):
        stats.proportion(5, 4)


def test_proportion_of_half_hits_solves_the_wilson_equation():
    # the Wilson bounds are the p where |p_hat - p| = z sqrt(p (1 - p) / n): solved
    # numerically for the half hits of ties, which scipy's binomtest cannot take
    z = scipy_stats.norm.ppf(0.975)
    for hits, n in [(4.5, 10), (0.5, 3), (119.5, 120)]:
        p_hat = hits / n

        def gap(p, p_hat=p_hat, n=n):
            return abs(p_hat - p) - z * (p * (1 - p) / n) ** 0.5

        lo = brentq(gap, 1e-12, p_hat)
        hi = brentq(gap, p_hat, 1 - 1e-12)
        got = stats.proportion(hits, n)
        assert (got.lo, got.hi) == pytest.approx((lo, hi), abs=1e-9)


def _score_interval(share: float, n_eff: float, critical: float) -> tuple[float, float]:
    """The score interval solved numerically: the p0 with |share - p0| = critical *
    sqrt(p0 (1 - p0) / n_eff), on either side of the share."""

    def gap(p0: float) -> float:
        return abs(share - p0) - critical * math.sqrt(p0 * (1 - p0) / n_eff)

    lo = 0.0 if share == 0 else brentq(gap, 1e-15, share)
    hi = 1.0 if share == 1 else brentq(gap, share, 1 - 1e-15)
    return lo, hi


def test_clustered_proportion_reads_singletons_as_wilson_and_copies_once():
    rng = np.random.default_rng(0)
    for n in (1, 5, 12, 40):
        y = (rng.random(n) < 0.6).astype(float)
        got = stats.clustered_proportion(y, list(range(n)))
        ci = scipy_stats.binomtest(int(y.sum()), n).proportion_ci(0.95, method="wilson")
        assert got.n == n and got.mean == pytest.approx(y.mean())
        assert (got.lo, got.hi) == pytest.approx((ci.low, ci.high), abs=1e-12)
        # every example repeated 3 times within its cluster: the variance of n clusters
        # (n - 1 after the small-sample correction), at Student's t for n - 1 degrees
        copies = stats.clustered_proportion(np.repeat(y, 3), np.repeat(np.arange(n), 3))
        assert copies.n == 3 * n
        if 0 < y.sum() < n:
            critical = scipy_stats.t.ppf(0.975, n - 1)
            want = _score_interval(float(y.mean()), n - 1, critical)
            assert (copies.lo, copies.hi) == pytest.approx(want, abs=1e-9)
            assert copies.lo < ci.low and copies.hi > ci.high
        else:  # at 0 or n hits each cluster counts once
            assert (copies.lo, copies.hi) == pytest.approx((ci.low, ci.high), abs=1e-12)
    # no misses over 14 pairs: the variance cannot tell the clustering, so each pair
    # counts once (never as 28 independent draws)
    whole = stats.clustered_proportion([1.0] * 28, [i // 2 for i in range(28)])
    ci = scipy_stats.binomtest(14, 14).proportion_ci(0.95, method="wilson")
    assert whole.n == 28 and (whole.lo, whole.hi) == pytest.approx((ci.low, ci.high), abs=1e-12)
    assert stats.clustered_proportion([], []) == stats.Interval(0, None, None, None)
    # one prompt's rollouts are one draw, whatever they scored
    one = stats.clustered_proportion([1, 0, 1, 1], ["a"] * 4)
    z = scipy_stats.norm.ppf(0.975)
    assert one.mean == 0.75 and (one.lo, one.hi) == pytest.approx(_score_interval(0.75, 1, z))
    with pytest.raises(ValueError):
        stats.clustered_proportion([1, 0], ["a"])
    with pytest.raises(ValueError, match="outside"):
        stats.clustered_proportion([1, float("nan")], ["a", "b"])
    # examples of unknown source are independent, not one cluster "None"
    unknown = stats.clustered_proportion([1, 0, 1, 1, 0], [None] * 5)
    ci = scipy_stats.binomtest(3, 5).proportion_ci(0.95, method="wilson")
    assert (unknown.lo, unknown.hi) == pytest.approx((ci.low, ci.high), abs=1e-12)


def _clustered_misses(prompts: int, rollouts: int, mean: float, icc: float, seed: int):
    """How often `clustered_proportion` and the examples' Wilson interval miss the true
    share over 1,500 draws of prompts whose own success rates follow a beta distribution
    of that mean and intra-prompt correlation."""
    rng = np.random.default_rng(seed)
    a, b = mean * (1 - icc) / icc, (1 - mean) * (1 - icc) / icc
    clusters = np.repeat(np.arange(prompts), rollouts)
    missed = {"clustered": 0, "examples": 0}
    runs = 1500
    for _ in range(runs):
        rate = np.repeat(rng.beta(a, b, prompts), rollouts)
        y = (rng.random(prompts * rollouts) < rate).astype(float)
        clustered = stats.clustered_proportion(y, clusters)
        naive = stats.proportion(int(y.sum()), len(y))
        missed["clustered"] += not clustered.lo <= mean <= clustered.hi
        missed["examples"] += not naive.lo <= mean <= naive.hi
    return {k: v / runs for k, v in missed.items()}


def test_clustered_proportion_never_counts_more_draws_than_examples():
    """Clusters that split their hits more evenly than chance (a pair of rollouts, one hit
    and one miss) have a cluster-robust variance below the binomial one: the design effect
    is floored at 1, so the interval is the binomial's at Student's t, never narrower."""
    y = np.array([1.0, 0.0] * 9 + [1.0, 1.0, 0.0, 0.0])
    clusters = [i // 2 for i in range(len(y))]
    n, k = len(y), len(y) // 2
    p = float(y.mean())
    residual = np.bincount(clusters, weights=y - p)
    robust = residual @ residual / n**2 * k / (k - 1)
    assert robust < p * (1 - p) / n  # anti-correlated: a design effect under 1
    got = stats.clustered_proportion(y, clusters)
    critical = scipy_stats.t.ppf(0.975, k - 1)
    assert (got.lo, got.hi) == pytest.approx(_score_interval(p, n, critical), abs=1e-12)


def test_clustered_proportion_covers_correlated_rollouts():
    # 30 prompts x 4 rollouts, intra-prompt correlation 0.5: the examples' Wilson
    # interval is too narrow
    missed = _clustered_misses(30, 4, mean=0.7, icc=0.5, seed=1)
    assert missed["clustered"] < 0.08 and missed["examples"] > 0.14


def test_clustered_proportion_covers_few_prompts_of_many_rollouts():
    # 10 prompts x 16 rollouts and 8 x 8: with the plain cluster variance and the normal z
    # the interval missed 8.0% and 10.2% (the variance is estimated from 10 or 8 clusters);
    # with k / (k - 1) and Student's t about 5-6%
    assert _clustered_misses(10, 16, mean=0.6, icc=0.2, seed=2)["clustered"] < 0.075
    assert _clustered_misses(8, 8, mean=0.8, icc=0.3, seed=3)["clustered"] < 0.075


def test_pairwise_share_matches_a_draw_by_draw_task_bootstrap():
    rng = np.random.default_rng(3)
    tasks, n = 9, 40
    first, second = rng.integers(0, tasks, n), rng.integers(0, tasks, n)
    hits = rng.choice([0.0, 0.5, 1.0], n, p=[0.3, 0.1, 0.6])
    got = stats.pairwise_share(hits, first, second, seed=7, resamples=300)
    draws = np.random.default_rng(7).integers(0, tasks, size=(300, tasks))
    shares = []
    for row in draws:  # the tasks drawn; a comparison counts once per pair of draws
        times = {t: list(row).count(t) for t in range(tasks)}
        weight = [times[a] * times[b] for a, b in zip(first, second, strict=True)]
        if sum(weight):
            shares.append(sum(w * h for w, h in zip(weight, hits, strict=True)) / sum(weight))
    assert got.n == n and got.mean == pytest.approx(hits.mean())
    assert (got.lo, got.hi) == pytest.approx(tuple(np.quantile(shares, [0.025, 0.975])))
    assert stats.pairwise_share([], [], [], seed=0) == stats.Interval(0, None, None, None)
    # every comparison won: no resample varies, so each of the 12 tasks counts once (Wilson)
    whole = stats.pairwise_share([1.0] * 6, range(6), range(6, 12), seed=0)
    ci = scipy_stats.binomtest(12, 12).proportion_ci(0.95, method="wilson")
    assert (whole.n, whole.mean) == (6, 1.0)
    assert (whole.lo, whole.hi) == pytest.approx((ci.low, ci.high), abs=1e-12)
    with pytest.raises(ValueError):
        stats.pairwise_share([1.0], [0, 1], [1], seed=0)


def test_pairwise_share_covers_comparisons_that_share_tasks():
    # 30 tasks, each in about 20 of 300 comparisons; how well the probe scores a task
    # (its own success rate, Beta(2, 1): mean 2/3) moves all of its comparisons together
    rng = np.random.default_rng(2)
    tasks, n, runs = 30, 300, 300
    covered = {"tasks": 0, "comparisons": 0}
    for _ in range(runs):
        quality = rng.beta(2.0, 1.0, tasks)
        a = rng.integers(0, tasks, n)
        b = (a + rng.integers(1, tasks, n)) % tasks
        hits = (rng.random(n) < (quality[a] + quality[b]) / 2).astype(float)
        boot = stats.pairwise_share(hits, a, b, seed=int(rng.integers(1 << 30)), resamples=500)
        naive = stats.proportion(hits.sum(), n)
        covered["tasks"] += boot.lo <= 2 / 3 <= boot.hi
        covered["comparisons"] += naive.lo <= 2 / 3 <= naive.hi
    assert covered["tasks"] / runs > 0.9
    assert covered["comparisons"] / runs < 0.8


def test_the_shared_bootstrap_draws_are_read_only_and_change_no_interval():
    """Every config of a half shares one set of draws: no caller may write to it, and the
    intervals are the ones drawn afresh, under the bound and over it."""
    draws = stats.intervals._draws(0, 5, 10)
    assert not draws.flags.writeable
    with pytest.raises(ValueError):
        draws[0, 0] = 1
    rng = np.random.default_rng(4)
    for n in (20, stats.SHARED_DRAWS_N + 6):
        d = rng.normal(1.0, 2.0, n)
        for _ in range(2):  # the second call reads the kept draws
            got = stats.delta_interval(d, 7)
            fresh = np.random.default_rng(7).integers(0, n, size=(stats.RESAMPLES, n))
            means = d[fresh].mean(axis=1)
            tail = stats.expanded_tail(n)
            lo, hi = np.quantile(means, [tail, 1 - tail])
            assert (got.lo, got.hi) == (pytest.approx(lo, abs=1e-12), pytest.approx(hi, abs=1e-12))
