"""The coherence bar and the credited delta."""

from __future__ import annotations

import numpy as np
import pytest

from stats_data import reference_interval
from steerops import stats


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
