"""The choice on the selection half and the held-out verdict."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as scipy_stats

from steerops import stats


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
    # rows of two baselines (logs of two cells read together): one coherent is enough
    mixed = [rows[0], rows[1] | {"selection_baseline_coherence": 30.0}, rows[2]]
    assert stats.choose(mixed, 68) == (None, stats.NEEDS_FINER)
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
    # at exactly MIN_HELDOUT questions (6: the fewest a sign test could tell) it is opposite
    at_least = against[0] | {"heldout_n": stats.MIN_HELDOUT}
    assert stats.choose([at_least], 68)[1] == stats.OPPOSITE
    assert stats.choose([at_least | {"heldout_n": stats.MIN_HELDOUT - 1}], 68)[1] == (
        stats.NO_EFFECT
    )
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
        (99.5, 95.0, True),  # SATURATED_WITHIN of the end: within
        (0.5, 95.0, True),
        (99.49, 95.0, False),
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


def test_equal_deltas_pick_the_more_coherent_before_the_smaller_coefficient():
    """Equal selection deltas: the more coherent config wins, even at a larger coefficient
    or a deeper layer (README: ties to the more coherent, then the smaller |coefficient|);
    coherence equal to COHERENCE_DECIMALS is a tie, not a lead."""
    gentle, coherent = _row(1.0, 60.0, 40.0, 75.0), _row(2.0, 60.0, 40.0, 85.0, layer=9)
    for order in ([gentle, coherent], [coherent, gentle]):
        assert stats.choose(order, 68)[0] is coherent
    noise = 10.0 ** -(stats.COHERENCE_DECIMALS + 2)
    near = _row(2.0, 60.0, 40.0, 75.0 + noise)
    for order in ([gentle, near], [near, gentle]):
        assert stats.choose(order, 68)[0] is gentle  # no lead: the smaller coefficient


def test_equal_numbers_pick_the_smaller_coefficient_in_either_order():
    """At one layer, with equal deltas and coherence, the smaller |coefficient| wins (the
    same effect for less steering), whichever row comes first and whatever the signs."""
    small, large = _row(1.0, 60.0, 40.0, 80.0), _row(2.0, 60.0, 40.0, 80.0)
    assert stats.choose([small, large], 68)[0] is small
    assert stats.choose([large, small], 68)[0] is small
    small, large = _row(1.0, 60.0, 40.0, 80.0), _row(-2.0, 60.0, 40.0, 80.0)
    assert stats.choose([small, large], 68)[0] is small
    assert stats.choose([large, small], 68)[0] is small


def test_the_sign_flip_test_flags_an_interval_it_does_not_confirm_but_does_not_decide():
    row = {"heldout_delta_lo": 5.0, "heldout_coherence_mean": 90.0, "heldout_n": 20}
    for p in (0.02, 0.025, 0.0625, None):  # the verdict is the interval's
        assert stats.heldout_verdict(row | {"heldout_p": p}, 68) == stats.OK
    assert not stats.unconfirmed(0.0249, 5.0)
    assert stats.unconfirmed(0.025, 5.0)  # not under the bound's level
    assert stats.unconfirmed(0.0625, 5.0)
    assert not stats.unconfirmed(None, 5.0)  # logged before the test
    assert not stats.unconfirmed(0.3, -1.0)
