"""Printed numbers stay on their side of every bar."""

from __future__ import annotations

import numpy as np

from steerops import stats


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


def test_p_values_print_rounded_up_so_none_shows_under_the_bar_it_is_above():
    assert stats.p_text(0.05001) == "0.0501" and stats.p_text(0.05) == "0.0500"
    assert stats.p_text(0.0249) == "0.0249" and stats.p_text(0.0625) == "0.0625"
    assert stats.p_text(0.012) == "0.0120" and stats.p_text(1.0) == "1.00"
    assert stats.p_text(0.00099) == "< 0.001" and stats.p_text(None) == "n/a"
    for x in np.linspace(0.001, 1, 4001):
        assert float(stats.p_text(x)) >= x and float(stats.p_text(x)) <= x * 1.01 + 1e-12, x
