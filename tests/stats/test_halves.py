"""The question split and a config's numbers on one half."""

from __future__ import annotations

import pytest

from steerops import stats
from steerops.errors import SteeropsError


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


def test_half_stats_means_and_delta():
    steered = [(100.0, 80.0), (0.0, 90.0), (None, None), (100.0, 70.0)]
    base = [(0.0, 100.0), (0.0, 100.0), (0.0, 100.0), (0.0, 95.0)]
    half = stats.half_stats(steered, base, seed=0)
    assert half.n == 3 and half.trait_mean == pytest.approx(200 / 3)
    assert half.coherence_mean == pytest.approx(80.0)
    assert half.trait_delta == pytest.approx(200 / 3)
    assert half.prefixed("heldout")["heldout_delta_lo"] == half.delta_lo


def test_a_half_s_interval_and_p_are_the_documented_recipes_at_its_seed():
    """Graded scores (the bootstrap's bounds then depend on its draws): the half's interval is
    the paired bootstrap written out draw by draw, and its p the sign-flip share of every
    sign pattern, both at the seed given (negative steering flips the deltas' sign)."""
    import itertools

    import numpy as np

    from stats_data import reference_interval

    rng = np.random.default_rng(11)
    traits = rng.uniform(0, 100, 12).round(1)
    base = rng.uniform(0, 60, 12).round(1)
    steered = [(float(t), 90.0) for t in traits]
    baseline = [(float(b), 95.0) for b in base]
    for seed, sign in ((4, 1.0), (9, 1.0), (4, -1.0)):
        half = stats.half_stats(steered, baseline, seed=seed, sign=sign)
        mean, lo, hi = reference_interval(list(traits), list(base), seed, sign)
        assert (half.trait_delta, half.delta_lo, half.delta_hi) == pytest.approx((mean, lo, hi))
        d = sign * (traits - base)
        patterns = np.array(list(itertools.product((1.0, -1.0), repeat=d.size)))
        exact = float(np.mean(patterns @ d >= d.sum() - 1e-9))
        assert half.p == pytest.approx(exact, abs=1e-12)
    assert (
        stats.half_stats(steered, baseline, 4).delta_lo
        != stats.half_stats(steered, baseline, 9).delta_lo
    )  # the seed is the one given


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


def test_a_half_s_p_is_the_sign_flip_test_of_its_paired_deltas():
    steered = [(100.0, 90.0)] * 4 + [(0.0, 90.0)] * 15 + [(None, 90.0)]
    base = [(0.0, 95.0)] * 19 + [(0.0, 95.0)]
    half = stats.half_stats(steered, base, seed=0)
    # 4 of the 19 paired questions moved, all up: the bootstrap clears zero, the test does not
    assert half.n == 19 and half.delta_lo > 0
    assert half.p == pytest.approx(0.5**4, abs=0.005)
    assert stats.half_stats(steered, base, seed=0, sign=-1.0).p == 1.0
