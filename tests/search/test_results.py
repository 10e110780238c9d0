"""Choosing the searched config never takes an infeasible trial."""

from __future__ import annotations

from synthetic import record

from steerops.search.results import choose_best


def test_infeasible_trial_never_chosen_even_with_the_largest_delta():
    records = [
        record(0, 30.0, 90.0),
        record(1, 95.0, 40.0),
        record(2, 60.0, 70.0),
        record(3, 99.0, 67.9),
        record(4, 100.0, 99.0, state="fail"),
    ]
    chosen, feasible = choose_best(records)
    assert feasible and chosen.number == 2
    # nothing feasible: say so, and report the most coherent trial
    chosen, feasible = choose_best([record(0, 95.0, 40.0), record(1, 10.0, 60.0)])
    assert not feasible and chosen.number == 1
    assert choose_best([]) == (None, False)
