"""A search's trials in words, per layer: the best coherent delta and where coherence first
falls under the bar, ordered by the coefficient's size; failed trials are no evidence."""

from __future__ import annotations

import numpy as np
import pandas as pd

from steerops.report.trial_words import trial_lines


def _trials(*rows) -> pd.DataFrame:
    columns = ["layer", "coefficient", "trait_delta", "coherence_mean", "state", "rows"]
    return pd.DataFrame([dict(zip(columns, row, strict=True)) for row in rows])


def test_each_layer_gives_its_best_coherent_delta_and_its_crossing():
    trials = _trials(
        (12, 0.25, 65.0, 57.821, "complete", 20),
        (12, 0.2, 50.0, 90.634, "complete", 20),
        (12, 0.2345, 70.0, 68.422, "complete", 20),
        (12, 0.2333, 70.0, 70.519, "complete", 20),  # ties the delta: the more coherent wins
        (12, 0.2334, np.nan, np.nan, "fail", 0),  # a failed trial says nothing
        (16, 0.1, 15.0, 99.429, "complete", 20),
        (16, 0.3, 45.0, 61.485, "complete", 20),
    )
    twelve, sixteen = trial_lines(trials, 68.0, n=20)
    assert twelve == (
        "search-half trials at layer 12 (4 trials of this study, n 20 each; not held out): best "
        "coherent "
        "delta +70.0 at 0.2333 (coherence 70.51), tied on that delta with 0.2345 (coherence "
        "68.42): chosen on coherence; coherence falls under 68 between 0.2345 "
        "(coherence 68.42, delta +70.0) and 0.25 (coherence 57.82, delta +65.0)"
    )
    assert sixteen.endswith(
        "best coherent delta +15.0 at 0.1 (coherence 99.42); coherence falls under 68 between "
        "0.1 (coherence 99.42, delta +15.0) and 0.3 (coherence 61.48, delta +45.0)"
    )


def test_coherence_over_the_bar_again_after_a_fall_is_said():
    """A fall and a recovery: the first fall is not where coherence is lost."""
    trials = _trials(
        (12, 0.2, 50.0, 90.0, "complete", 20),
        (12, 0.25, 60.0, 66.0, "complete", 20),
        (12, 0.3, 70.0, 62.0, "complete", 20),
        (12, 0.35, 75.0, 70.0, "complete", 20),  # over the bar again
        (12, 0.4, 80.0, 71.0, "complete", 20),
    )
    (line,) = trial_lines(trials, 68.0, n=20)
    assert line.endswith(
        "coherence falls under 68 between 0.2 (coherence 90.00, delta +50.0) and 0.25 "
        "(coherence 66.00, delta +60.0), and is over it again at 0.35 (coherence 70.00, delta "
        "+75.0): not one edge"
    )
    assert "best coherent delta +80.0 at 0.4" in line


def test_a_layer_never_or_always_coherent_says_so():
    trials = _trials(
        (4, -0.5, 30.0, 60.0, "complete", 10),  # by size: -0.5 is past 0.2
        (4, 0.2, 10.0, 80.0, "complete", 10),
        (8, 0.1, 5.0, 50.0, "complete", 10),
        (8, 0.2, 9.0, 40.0, "complete", 10),
    )
    four, eight = trial_lines(trials, 68.0)
    assert "trials of this study; not held out" in four  # no search half size given: none said
    assert "coherence falls under 68 between 0.2 (coherence 80.00, delta +10.0) and -0.5" in four
    assert eight.endswith(
        "none coherent (the most coherent, 0.1: coherence 50.00); every trial under 68"
    )
    (only,) = trial_lines(trials[trials["layer"] == 4].iloc[1:], 68.0, n=10.0)
    assert only.endswith("coherent up to the largest tried, 0.2 (coherence 80.00, delta +10.0)")
    assert "(1 trial of this study, n 10 each" in only
    assert trial_lines(None, 68.0) == trial_lines(trials.iloc[:0], 68.0) == []


def test_only_complete_steered_trials_count_and_narrowed_needs_one_between():
    from steerops.report.trial_words import narrowed

    trials = _trials(
        (12, 0.0, 0.0, 100.0, "complete", 20),  # the unsteered model: no best config
        (12, 0.2, 50.0, 90.0, "complete", 20),
        (12, 0.22, 99.0, 99.0, "fail", 20),  # a failed trial's scores are no evidence
        (12, 0.25, 65.0, 57.0, "complete", 20),
    )
    (line,) = trial_lines(trials, 68.0)
    assert "best coherent delta +50.0 at 0.2 (coherence 90.00)" in line
    assert "between 0.2 (coherence 90.00, delta +50.0) and 0.25" in line
    # a trial strictly between 0.2 and 0.25, at that layer, narrows the grid's step
    assert not narrowed(trials, 12, 0.2, 0.25)  # the one between failed
    assert narrowed(trials, 12.0, 0.15, 0.25)
    # a negative coefficient steers the vector the other way: the search's 0.2 is not
    # between -0.15 and -0.25, a trial at -0.2 is
    assert not narrowed(trials, 12, -0.15, -0.25)
    flipped = trials.assign(coefficient=-trials["coefficient"])
    assert narrowed(flipped, 12, -0.15, -0.25) and not narrowed(flipped, 12, 0.15, 0.25)
    assert not narrowed(trials, 16, 0.15, 0.25) and not narrowed(None, 12, 0.15, 0.25)


def test_the_grid_s_configs_among_the_trials_are_counted():
    trials = _trials(
        (12, 0.2, 50.0, 90.0, "complete", 20),
        (12, 0.22, 55.0, 80.0, "complete", 20),
        (12, 0.25, 65.0, 57.0, "complete", 20),
    ).assign(source=["known", "search", "known"])
    (line,) = trial_lines(trials, 68.0, n=20)
    assert line.startswith(
        "search-half trials at layer 12 (3 trials of this study, 2 of them the grid's, n 20 "
    )
    (line,) = trial_lines(trials.assign(source="search"), 68.0, n=20)
    assert line.startswith("search-half trials at layer 12 (3 trials of this study, n 20 each; ")


def test_a_tie_on_delta_and_coherence_says_the_smaller_coefficient_chose():
    """The search breaks a tie on both by the smaller coefficient: the line says so, and
    names that trial whatever order the trials came in."""
    trials = _trials(
        (12, 0.3, 50.0, 100.0, "complete", 20),
        (12, 0.2, 50.0, 100.0, "complete", 20),
        (12, 0.25, 50.0, 90.0, "complete", 20),
    )
    (line,) = trial_lines(trials, 68.0, n=20)
    assert (
        "best coherent delta +50.0 at 0.2 (coherence 100.00), tied on that delta with 0.3 "
        "(coherence 100.00), 0.25 (coherence 90.00): chosen on coherence, then the smaller "
        "coefficient" in line
    )
    (line,) = trial_lines(trials.iloc[:2], 68.0, n=20)
    assert (
        "0.2 (coherence 100.00), tied on that delta with 0.3 (coherence 100.00): chosen on "
        "the smaller coefficient" in line
    )


def test_ties_break_as_the_search_breaks_them_float_noise_and_sign_included():
    """Coherence 90.00000000000001 is no lead over 90.0 (the smaller coefficient still
    chooses, as `stats.choice_rank` ranks), and a coefficient tied with its negative twin loses
    to it: the line names the trial the search picks."""
    noisy = _trials(
        (12, 0.3, 50.0, 90.00000000000001, "complete", 20),
        (12, 0.2, 50.0, 90.0, "complete", 20),
    )
    (line,) = trial_lines(noisy, 68.0, n=20)
    assert (
        "at 0.2 (coherence 90.00), tied on that delta with 0.3 (coherence 90.00): chosen on "
        "the smaller coefficient" in line
    )
    twins = _trials(
        (12, -0.2, 50.0, 90.0, "complete", 20),
        (12, 0.2, 50.0, 90.0, "complete", 20),
    )
    (line,) = trial_lines(twins, 68.0, n=20)
    assert (
        "at 0.2 (coherence 90.00), tied on that delta with -0.2 (coherence 90.00): chosen "
        "on the positive coefficient" in line
    )
    rows = [
        {
            "coefficient": c,
            "layer": 12,
            "selection_trait_delta": 50.0,
            "selection_coherence_mean": h,
        }
        for c, h in ((0.3, 90.00000000000001), (0.2, 90.0), (-0.2, 90.0))
    ]
    from steerops import stats

    assert max(rows, key=stats.choice_rank)["coefficient"] == 0.2


def test_with_their_intervals_a_coherent_delta_reaching_zero_is_no_effect():
    """Trials that carry their search-half interval: the best is chosen, as the search
    chooses, among those whose interval is above zero, and a layer whose coherent trials all
    reach zero says no effect was detected there instead of naming a best delta."""
    trials = _trials(
        (12, 0.2, 50.0, 90.6, "complete", 20),
        (12, 0.22, 55.0, 80.1, "complete", 20),
        (12, 0.24, 60.0, 79.0, "complete", 20),  # the largest delta, but its interval reaches 0
        (12, 0.3, 70.0, 61.0, "complete", 20),  # incoherent: no interval written
        (16, 0.19, 15.0, 94.99, "complete", 20),
    ).assign(delta_lo=[25.0, 30.0, 0.0, np.nan, 0.0], delta_hi=[75.0, 80.0, 90.0, np.nan, 35.0])
    twelve, sixteen = trial_lines(trials, 68.0, n=20)
    assert "best coherent delta +55.0 [+30.0, +80.0] at 0.22 (coherence 80.10)" in twelve
    assert sixteen.endswith(
        "no coherent trial's interval is above zero: no effect detected here (the largest "
        "coherent delta, +15.0 [+0.0, +35.0] at 0.19, coherence 94.99); coherent up to the "
        "largest tried, 0.19 (coherence 94.99, delta +15.0)"
    )
    # a trials.csv written before the intervals: the delta alone, as before
    (old,) = trial_lines(trials[trials["layer"] == 16].drop(columns=["delta_lo", "delta_hi"]), 68)
    assert "best coherent delta +15.0 at 0.19 (coherence 94.99)" in old
