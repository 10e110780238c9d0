"""Choosing the searched config: never infeasible, never coefficient 0, never a trial without
an effect beyond its interval; "no feasible steering found" otherwise."""

from __future__ import annotations

from synthetic import (
    BASELINE_TRAIT,
    MIN_COH,
    SOURCE,
    SyntheticEvaluator,
    record,
    synthetic_coherence,
    synthetic_trait,
)

from steerops.search.results import choose_best, selection_rows


def _rows(records, questions=("q1", "q2", "q3")):
    return selection_rows(records, SyntheticEvaluator(list(questions)), SOURCE, "positive", 0)


def _trial(number, coefficient, state="complete"):
    """A trial whose stored numbers are the synthetic evaluator's closed form."""
    delta = synthetic_trait(2, coefficient) - BASELINE_TRAIT
    return record(number, delta, synthetic_coherence(2, coefficient), state, coefficient)


def test_infeasible_or_unsteered_trials_are_never_chosen():
    records = [
        _trial(0, 0.5),
        _trial(1, 2.5),  # largest delta, incoherent
        _trial(2, 1.3),  # the largest coherent delta
        _trial(3, 1.42),  # just past the coherence edge (67.0)
        _trial(4, 1.0, state="fail"),
        _trial(5, 0.0),  # the unsteered model
    ]
    rows = _rows(records)
    assert sorted(r["trial"].number for r in rows) == [0, 2]  # coherent, steered, complete
    chosen = choose_best(rows, MIN_COH)
    assert chosen is not None and chosen.number == 2
    # nothing coherent and steered: no choice at all (not the most coherent trial, not c = 0)
    assert choose_best(_rows([records[1], records[3], records[5]]), MIN_COH) is None
    assert choose_best([], MIN_COH) is None


def test_a_coherent_trial_without_an_effect_beyond_its_interval_is_not_a_pick():
    rows = [
        {
            "trial": record(0, 5.0, 95.0),
            "layer": 2,
            "coefficient": 1.0,
            "selection_trait_delta": 5.0,
            "selection_delta_lo": 0.0,  # one refusal in twenty questions
            "selection_coherence_mean": 95.0,
        }
    ]
    assert choose_best(rows, MIN_COH) is None
    rows[0]["selection_delta_lo"] = 0.5
    assert choose_best(rows, MIN_COH) is rows[0]["trial"]


def test_the_console_line_gives_both_halves_with_their_intervals():
    from steerops.search.command import summary_line

    best = {
        "trait": "behavior/refusal",
        "status": "ok",
        "chosen": {"layer": 12, "coefficient": 0.2333},
        "search": {"trait_delta": 70.0, "delta_lo": 50.0, "delta_hi": 90.0, "n": 20},
        "heldout": {
            "trait_delta": 55.0,
            "delta_lo": 30.0,
            "delta_hi": 80.0,
            "coherence_mean": 71.2,
            "n": 20,
        },
        "n_trials": 12,
        "n_known": 0,
        "n_generations": {"total": 480},
        "study": "s",
    }
    assert summary_line(best).startswith(
        "behavior/refusal: ok: layer 12 coefficient 0.2333: search delta +70.0 [+50.0, +90.0] "
        "(n 20); held-out delta +55.0 [+30.0, +80.0] coherence 71.2 (n 20); 12 trials"
    )
