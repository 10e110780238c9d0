"""The shared statistics: the question split, the paired bootstrap (against an independent
numpy computation and scipy's bootstrap) and the choice on the selection half."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats as scipy_stats
from scipy.optimize import brentq

from steerops import stats
from steerops.errors import SteeropsError


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


@pytest.mark.parametrize("n, fraction", [(2, 0.01), (2, 0.99), (3, 0.1), (3, 0.9), (40, 0.5)])
def test_both_halves_keep_a_question_at_any_size_and_fraction(n, fraction):
    questions = [f"q{i}" for i in range(n)]
    selection, heldout = stats.split_questions(questions, fraction, seed=3)
    assert selection and heldout and sorted(selection + heldout) == sorted(questions)
    assert len(heldout) == min(n - 1, max(1, round(n * fraction)))


def test_question_split_is_disjoint_seeded_and_complete():
    questions = [f"q{i}" for i in range(11)]
    selection, heldout = stats.split_questions(questions, 0.5, seed=7)
    assert not set(selection) & set(heldout)
    assert sorted(selection + heldout) == sorted(questions)
    assert len(heldout) == round(11 * 0.5)
    assert (selection, heldout) == stats.split_questions(questions, 0.5, seed=7)
    assert (selection, heldout) != stats.split_questions(questions, 0.5, seed=8)
    assert selection == [q for q in questions if q in selection]  # question order kept
    with pytest.raises(SteeropsError, match="at least 2"):
        stats.split_questions(["only", "only"], 0.5, seed=0)


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


def test_min_questions_is_where_a_sign_test_first_reaches_the_claims_level():
    for k in range(1, 12):
        level = 0.025 / k  # one-sided, Bonferroni over k claims
        expected = next(n for n in range(1, 50) if 0.5**n <= level)
        assert stats.min_questions(k) == expected
        assert 0.5 ** (expected - 1) > level
    assert [stats.min_questions(k) for k in (1, 2, 3, 4, 5)] == [6, 7, 7, 8, 8]
    assert stats.min_questions(1) == stats.MIN_HELDOUT


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


def test_half_stats_means_and_delta():
    steered = [(100.0, 80.0), (0.0, 90.0), (None, None), (100.0, 70.0)]
    base = [(0.0, 100.0), (0.0, 100.0), (0.0, 100.0), (0.0, 95.0)]
    half = stats.half_stats(steered, base, seed=0)
    assert half.n == 3 and half.trait_mean == pytest.approx(200 / 3)
    assert half.coherence_mean == pytest.approx(80.0)
    assert half.trait_delta == pytest.approx(200 / 3)
    assert half.prefixed("heldout")["heldout_delta_lo"] == half.delta_lo


def _row(coef, sel_delta, sel_lo, sel_coh, held_lo=10.0, held_coh=90.0, layer=1):
    return {
        "layer": layer,
        "coefficient": coef,
        "selection_trait_delta": sel_delta,
        "selection_delta_lo": sel_lo,
        "selection_coherence_mean": sel_coh,
        "heldout_delta_lo": held_lo,
        "heldout_coherence_mean": held_coh,
        "heldout_n": 20,
    }


def test_choose_never_picks_coefficient_zero_and_words_its_verdict():
    rows = [
        _row(0.0, 90.0, 80.0, 100.0),  # unsteered: never a pick
        _row(1.0, 60.0, 40.0, 80.0),
        _row(2.0, 95.0, 70.0, 50.0),  # incoherent on the selection half
        _row(1.5, 70.0, 50.0, 75.0, held_lo=-5.0),  # best, but no effect held out
    ]
    pick, verdict = stats.choose(rows, 68)
    assert pick is rows[3] and verdict == stats.NO_EFFECT
    pick, verdict = stats.choose(rows[:3], 68)
    assert pick is rows[1] and verdict == stats.OK
    rows[1]["heldout_coherence_mean"] = 60.0
    assert stats.choose(rows[:3], 68)[1] == stats.INCOHERENT
    # coherent configs without an effect on the selection half: the strongest, "no effect"
    flat = [_row(1.0, 5.0, -5.0, 99.0), _row(2.0, 2.5, -2.5, 95.0)]
    pick, verdict = stats.choose(flat, 68)
    assert pick is flat[0] and verdict == stats.NO_EFFECT
    # nothing coherent but the unsteered config
    assert stats.choose([rows[0], rows[2]], 68) == (None, stats.NEEDS_FINER)
    assert stats.best_steered_coherence([rows[0], rows[2]]) == 50.0
    # a selection interval whose lower end is exactly 0 reaches zero: no effect shown there
    # (a 0/100 judge gives such bounds: 3 of 10 questions moved, 0/100 each)
    lo = stats.delta_interval(np.array([100.0] * 3 + [0.0] * 7), seed=0).lo
    assert lo == 0.0
    edge = [_row(1.0, 30.0, lo, 90.0), _row(2.0, 10.0, 5.0, 90.0)]
    assert stats.choose(edge, 68) == (edge[1], stats.OK)
    assert stats.choose(edge[:1], 68) == (edge[0], stats.NO_EFFECT)


def test_no_coherent_config_says_whether_a_finer_grid_can_help():
    """Nothing steered coherent: a finer grid may help only when the unsteered model itself
    reaches the bar on the selection half (else "baseline incoherent": the judge's scale or
    the bar to check), and a judge that scored no steered config is a failure ("trait
    unscored"), not a grid too coarse."""
    rows = [_row(0.0, 0.0, 0.0, 90.0), _row(1.0, 30.0, 10.0, 40.0), _row(2.0, 50.0, 30.0, 20.0)]
    for r in rows:
        r["selection_baseline_coherence"] = 90.0
    assert stats.choose(rows, 68) == (None, stats.NEEDS_FINER)
    for r in rows:
        r["selection_baseline_coherence"] = 30.0
    assert stats.choose(rows, 68) == (None, stats.BASELINE_INCOHERENT)
    for r in rows[1:]:
        r["selection_coherence_mean"] = None
    assert stats.choose(rows, 68) == (None, stats.UNSCORED)


def test_a_choice_that_moved_the_trait_the_other_way_held_out_is_an_opposite_effect():
    """No config moves the trait the steering way, and the strongest coherent one moves it
    reliably the other way held out: "opposite effect" (a sign or direction to check),
    never "no effect" and never a pick; on too few questions, or with an interval reaching
    zero, it stays "no effect"."""
    against = [
        _row(1.0, -40.0, -65.0, 90.0) | {"heldout_delta_hi": -35.0, "heldout_delta_lo": -85.0},
        _row(2.0, -60.0, -85.0, 85.0) | {"heldout_delta_hi": -50.0, "heldout_delta_lo": -90.0},
    ]
    pick, verdict = stats.choose(against, 68)
    assert pick is against[0] and verdict == stats.OPPOSITE
    assert stats.choose([against[0] | {"heldout_n": 5}], 68)[1] == stats.NO_EFFECT
    assert stats.choose([against[0] | {"heldout_delta_hi": 0.0}], 68)[1] == stats.NO_EFFECT
    # a choice with an effect on the selection half that reverses held out
    row = _row(1.0, 60.0, 40.0, 80.0, held_lo=-60.0) | {"heldout_delta_hi": -10.0}
    assert stats.choose([row], 68)[1] == stats.OPPOSITE
    assert stats.heldout_verdict(row | {"heldout_delta_hi": 5.0}, 68) == stats.NO_EFFECT


def test_an_effect_on_fewer_held_out_questions_than_a_test_could_tell_is_too_few():
    """One held-out question moving 0 -> 100 gives a bootstrap interval [100, 100]: above
    zero, but no test could call it an effect. Below MIN_HELDOUT questions an interval
    above zero is "too few held out", never ok; a missing n is not enough either."""
    row = _row(1.0, 60.0, 40.0, 80.0, held_lo=100.0)
    for n, verdict in (
        (1, stats.TOO_FEW),
        (5, stats.TOO_FEW),
        (6, stats.OK),
        (None, stats.TOO_FEW),
    ):
        assert stats.choose([{**row, "heldout_n": n}], 68)[1] == verdict, n
    # the fewest questions with a sign-test p below 5% when all move the same way
    assert (
        min(n for n in range(1, 20) if scipy_stats.binomtest(n, n).pvalue < 0.05)
        == stats.MIN_HELDOUT
    )
    # no effect and incoherence stay what they are at any n
    assert stats.choose([{**row, "heldout_n": 2, "heldout_delta_lo": 0.0}], 68)[1] == (
        stats.NO_EFFECT
    )
    assert stats.choose([{**row, "heldout_n": 2, "heldout_coherence_mean": 50.0}], 68)[1] == (
        stats.INCOHERENT
    )


def test_a_coherence_of_zero_is_a_score_not_a_missing_one():
    # with the bar at 0 every scored config is coherent, 0.0 included; a missing one is not
    rows = [_row(1.0, 50.0, 40.0, 0.0, held_coh=0.0), _row(2.0, 60.0, 45.0, None)]
    pick, verdict = stats.choose(rows, 0.0)
    assert pick is rows[0] and verdict == stats.OK
    assert stats.coherent(0.0, 0.0) and not stats.coherent(None, 0.0)
    assert not stats.coherent(float("nan"), 0.0) and not stats.coherent(67.9, 68)


def test_a_pick_at_its_layer_s_largest_coefficient_is_at_the_grid_edge():
    rows = [{"layer": layer, "coefficient": c} for layer in (1, 2) for c in (-3.0, 0.0, 2.0)]
    rows.append({"layer": 3, "coefficient": 2.0})
    assert stats.at_largest_coefficient(rows, {"layer": 1, "coefficient": -3.0})  # by |c|
    assert not stats.at_largest_coefficient(rows, {"layer": 2, "coefficient": 2.0})
    assert not stats.at_largest_coefficient(rows, {"layer": 3, "coefficient": 2.0})  # one only
    rows.append({"layer": 3, "coefficient": float("nan")})  # a missing coefficient is not one
    assert not stats.at_largest_coefficient(rows, {"layer": 3, "coefficient": 2.0})


@pytest.mark.parametrize(
    ("mean", "delta", "at_the_end"),
    [
        (100.0, 95.0, True),
        (99.6, 95.0, True),  # a probability-weighted judge's "100" averages a hair under
        (0.0, 95.0, True),
        (99.0, 95.0, False),
        (100.0, 0.0, False),
    ],
)
def test_a_pick_at_the_end_of_the_judge_s_scale_is_not_at_the_grid_edge(mean, delta, at_the_end):
    # every selection answer at 100 pushing up (0 pushing down: the delta is along the
    # steering): a larger coefficient cannot steer more, so the grid's edge is no limit
    rows = [{"layer": 1, "coefficient": c} for c in (1.0, 2.0)]
    pick = {"layer": 1, "coefficient": 2.0}
    pick |= {"selection_trait_mean": mean, "selection_trait_delta": delta}
    assert stats.saturated(pick) == at_the_end
    assert stats.at_largest_coefficient(rows, pick) != at_the_end


def test_a_held_out_half_the_judge_did_not_score_is_no_finding():
    """No held-out trait interval, or no held-out coherence: a judge failure, reported as
    such, not as "no effect" or "incoherent held out"."""
    for held_lo, held_coh in ((None, 90.0), (10.0, None), (None, None)):
        rows = [_row(1.0, 60.0, 40.0, 80.0, held_lo=held_lo, held_coh=held_coh)]
        assert stats.choose(rows, 68) == (rows[0], stats.HELDOUT_UNSCORED)
    assert stats.choose([_row(1.0, 60.0, 40.0, 80.0, held_lo=0.0)], 68)[1] == stats.NO_EFFECT


def test_ties_are_broken_the_same_whatever_the_rows_order():
    """+c and -c at a layer (or two layers' configs) with equal numbers: the same pick in
    log order and in coefficient order."""
    rows = [
        _row(-1.0, 60.0, 40.0, 80.0, held_lo=-5.0),
        _row(1.0, 60.0, 40.0, 80.0),
        _row(1.0, 60.0, 40.0, 80.0, layer="4+8"),
        _row(1.0, 60.0, 40.0, 80.0, layer=4),
    ]
    picks = {id(stats.choose(order, 68)[0]) for order in (rows, rows[::-1], rows[1:] + rows[:1])}
    assert picks == {id(rows[1])}  # positive before its negative twin; layer 1 before 4
    assert stats.choose(rows[2:], 68)[0] is rows[3]  # 4 before "4+8"


def test_equal_numbers_pick_the_smaller_coefficient_in_either_order():
    """At one layer, with equal deltas and coherence, the smaller |coefficient| wins (the
    same effect for less steering), whichever row comes first and whatever the signs."""
    small, large = _row(1.0, 60.0, 40.0, 80.0), _row(2.0, 60.0, 40.0, 80.0)
    assert stats.choose([small, large], 68)[0] is small
    assert stats.choose([large, small], 68)[0] is small
    small, large = _row(1.0, 60.0, 40.0, 80.0), _row(-2.0, 60.0, 40.0, 80.0)
    assert stats.choose([small, large], 68)[0] is small
    assert stats.choose([large, small], 68)[0] is small


def test_a_config_s_trait_delta_is_paired_over_the_questions_both_scored():
    """With unscored answers a difference of means (33.3 here) falls outside the paired
    interval reported beside it (100 [100, 100]); the delta is the paired one."""
    from steerops.steering.configs import ConfigResult, trait_delta

    steered = [(100.0, 80.0), (100.0, 80.0), (None, 80.0), (0.0, 80.0)]
    base_scores = [(0.0, 95.0), (0.0, 95.0), (100.0, 95.0), (None, 95.0)]
    base = ConfigResult(None, 100 / 3, 95.0, 3, [], scores=base_scores)
    paired = stats.paired_delta([t for t, _ in steered], [t for t, _ in base_scores], 0)
    assert trait_delta(steered, base, "positive") == paired.mean == 100.0
    assert trait_delta(steered, base, "negative") == -100.0
    assert stats.half_stats(steered, base_scores, 0).trait_delta == 100.0


def test_printed_numbers_stay_on_their_side_of_the_verdicts_thresholds():
    """A coherence under the bar never prints at or above it (67.996 is not "68.0"), and a
    nonzero interval bound never prints as zero (an ok lower bound of 0.03 is not "+0.0")."""
    assert stats.coherence_text(67.996) == "67.9" and stats.coherence_text(67.996, 2) == "67.99"
    assert stats.coherence_text(68.0) == "68.0" and stats.coherence_text(83.38, 2) == "83.38"
    assert stats.coherence_text(100.0, 2) == "100.00" and stats.coherence_text(None) == "n/a"
    for x in np.linspace(0, 100, 2001):  # rounding down, never up: the bar stays exact
        assert (float(stats.coherence_text(x, 2)) >= 68) == stats.coherent(x, 68), x
        assert stats.coherent(x, 68) == (round(x, 6) >= 68), x
    # float noise of a sum or a quantile is no distance from the value it stands for: the
    # bar and the text read both as that value, a real shortfall as a shortfall
    assert stats.coherence_text(92.53999999999999, 2) == "92.54"
    assert (
        stats.coherent(67.99999999999999, 68) and stats.coherence_text(67.99999999999999) == "68.0"
    )
    assert not stats.coherent(67.9999999, 68) and stats.coherence_text(67.9999999, 2) == "67.99"
    assert stats.under_bar([67.99999999999999, 67.9999999, 70.0], 68) == (3, 1)
    assert (
        stats.coherence_text(float("inf")) == "inf" and stats.coherence_text(1e300, 0)[:4] == "1000"
    )
    assert stats.coherence_text(-0.05) == "-0.1"
    assert stats.delta_text(0.03) == "+0.03" and stats.delta_text(-0.004) == "-0.004"
    assert stats.delta_text(12.34) == "+12.3" and stats.delta_text(0.0) == "+0.0"
    assert stats.delta_text(None) == "n/a" and stats.delta_text(-0.06) == "-0.1"


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


def test_p_values_print_rounded_up_so_none_shows_under_the_bar_it_is_above():
    assert stats.p_text(0.05001) == "0.0501" and stats.p_text(0.05) == "0.0500"
    assert stats.p_text(0.0249) == "0.0249" and stats.p_text(0.0625) == "0.0625"
    assert stats.p_text(0.012) == "0.0120" and stats.p_text(1.0) == "1.00"
    assert stats.p_text(0.00099) == "< 0.001" and stats.p_text(None) == "n/a"
    for x in np.linspace(0.001, 1, 4001):
        assert float(stats.p_text(x)) >= x and float(stats.p_text(x)) <= x * 1.01 + 1e-12, x


def test_the_sign_flip_test_flags_an_interval_it_does_not_confirm_but_does_not_decide():
    row = {"heldout_delta_lo": 5.0, "heldout_coherence_mean": 90.0, "heldout_n": 20}
    for p in (0.02, 0.025, 0.0625, None):  # the verdict is the interval's
        assert stats.heldout_verdict(row | {"heldout_p": p}, 68) == stats.OK
    assert not stats.unconfirmed(0.0249, 5.0)
    assert stats.unconfirmed(0.025, 5.0)  # not under the bound's level
    assert stats.unconfirmed(0.0625, 5.0)
    assert not stats.unconfirmed(None, 5.0)  # logged before the test
    assert not stats.unconfirmed(0.3, -1.0)


def test_a_half_s_p_is_the_sign_flip_test_of_its_paired_deltas():
    steered = [(100.0, 90.0)] * 4 + [(0.0, 90.0)] * 15 + [(None, 90.0)]
    base = [(0.0, 95.0)] * 19 + [(0.0, 95.0)]
    half = stats.half_stats(steered, base, seed=0)
    # 4 of the 19 paired questions moved, all up: the bootstrap clears zero, the test does not
    assert half.n == 19 and half.delta_lo > 0
    assert half.p == pytest.approx(0.5**4, abs=0.005)
    assert stats.half_stats(steered, base, seed=0, sign=-1.0).p == 1.0


def test_credited_delta_gives_answers_under_the_bar_no_move_along_the_steering():
    """An answer scored under the bar, or given no coherence score (a judge that will not
    rate gibberish): its move along the steering counts as none, one against it stays; an
    unscored trait leaves the question out; the interval is the documented recipe's on the
    credited deltas."""
    deltas = [100.0, 100.0, -50.0, 100.0, None, 20.0, 0.0, 100.0, 60.0, 100.0, -10.0, 40.0]
    coherences = [90.0, 40.0, 30.0, None, 90.0, 67.99, 90.0, 68.0, 80.0, 75.0, 10.0, 95.0]
    credited = [100.0, 0.0, -50.0, 0.0, 0.0, 0.0, 100.0, 60.0, 100.0, -10.0, 40.0]
    got = stats.credited_delta(deltas, coherences, 68.0, seed=3)
    mid, lo, hi = reference_interval(credited, [0.0] * len(credited), seed=3)
    assert got.n == 11
    assert got.mean == pytest.approx(mid) == pytest.approx(np.mean(credited))
    assert (got.lo, got.hi) == (pytest.approx(lo), pytest.approx(hi))
    # every answer coherent: the plain paired delta
    plain = stats.credited_delta(deltas, [90.0] * len(deltas), 68.0, seed=3)
    kept = [d for d in deltas if d is not None]
    assert plain.mean == pytest.approx(np.mean(kept))
    assert (plain.lo, plain.hi) == pytest.approx(reference_interval(kept, [0.0] * 11, 3)[1:])
    row = {
        "heldout_deltas": dict(enumerate(deltas)),
        "heldout_coherences": dict(enumerate(coherences)),
    }
    assert stats.credited_heldout(row, 68.0, 3) == got
    assert stats.credited_heldout({}, 68.0, 3).n == 0
    scored, under = stats.under_bar(coherences, 68.0)
    assert (scored, under) == (11, 4)
    unscored = stats.coherence_unscored(deltas, coherences)
    # an answer with no delta (refused) is in no delta: not counted, whatever its coherence
    assert stats.coherence_unscored([10.0, None], [None, None]) == 1
    assert stats.unscored_heldout(row) == unscored and stats.unscored_heldout({}) is None
    assert unscored == 1  # with the 4, the answers the credited delta counts as no gain
    assert stats.under_bar_text(scored, under, 68.0) == " (4 of 11 answers under 68)"
    assert stats.under_bar_text(scored, under, 68.0, unscored) == (
        " (4 of 11 answers under 68, 1 answer not scored for coherence)"
    )
    moved = stats.moved_under_bar(deltas, coherences, 68.0)
    assert moved == 3  # 100 at 40, 20 at 67.99, 100 unscored; -50 and -10 moved against it
    assert stats.moved_under_heldout(row, 68.0) == moved
    said = stats.unmoved_phrase(under, 68.0, moved, [got.mean, got.lo, got.hi], unscored)
    assert said == (
        "with the 4 answers under 68 and the answer not scored for coherence counted as "
        "unmoved (3 had moved along the steering), "
        f"delta {stats.interval_text(got.mean, got.lo, got.hi)}"
    )
    assert stats.unmoved_phrase(0, 68.0, 0, [got.mean, got.lo, got.hi]) == ""
    # none under the bar, two not scored: they alone count as unmoved, and are said
    gaps = [90.0, None, 90.0, 90.0, 90.0, 70.0, 90.0, 68.0, 80.0, None, 99.0, 95.0]
    assert stats.under_bar(gaps, 68.0) == (10, 0) and stats.coherence_unscored(deltas, gaps) == 2
    only = [100.0, 0.0, -50.0, 100.0, 20.0, 0.0, 100.0, 60.0, 0.0, -10.0, 40.0]
    alone = stats.credited_delta(deltas, gaps, 68.0, seed=3)
    assert alone.mean == pytest.approx(np.mean(only))
    assert stats.under_bar_text(10, 0, 68.0, 2) == " (2 answers not scored for coherence)"
    assert stats.unmoved_phrase(0, 68.0, 2, [alone.mean, alone.lo, alone.hi], 2).startswith(
        "with the 2 answers not scored for coherence counted as unmoved (2 had moved"
    )


def test_the_shared_bootstrap_draws_are_read_only_and_change_no_interval():
    """Every config of a half shares one set of draws: no caller may write to it, and the
    intervals are the ones drawn afresh, under the bound and over it."""
    draws = stats._draws(0, 5, 10)
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
