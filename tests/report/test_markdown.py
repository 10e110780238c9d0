"""Markdown tables: an interval of no width is marked, and the note under the table says
what the mark means."""

from __future__ import annotations

import numpy as np
import pandas as pd

from steerops.report.markdown import NO_WIDTH_NOTE, interval, markdown_table


def test_an_interval_of_no_width_is_marked_and_explained_under_its_table():
    flat = pd.DataFrame({"delta": [0.0, 5.0], "delta_lo": [0.0, -5.0], "delta_hi": [0.0, 20.0]})
    lines = markdown_table(flat).splitlines()
    assert lines[2] == "| +0.0 [+0.0, +0.0] † |" and lines[3] == "| +5.0 [-5.0, +20.0] |"
    assert lines[-1] == NO_WIDTH_NOTE and NO_WIDTH_NOTE.startswith("† an interval of no width")
    # no such interval (or none at all): no mark and no note
    wide = markdown_table(flat.iloc[1:])
    assert "†" not in wide and NO_WIDTH_NOTE not in wide
    missing = pd.DataFrame({"gap": [np.nan], "gap_lo": [np.nan], "gap_hi": [np.nan]})
    assert "†" not in markdown_table(missing)
    # a sentence's interval is plain: its own words say it
    assert interval(0.0, 0.0, 0.0) == "+0.0 [+0.0, +0.0]"


def test_p_and_q_columns_print_as_the_verdict_lines_print_them():
    """Rounded up to 3 significant digits (one just over a bar never prints under it), so
    a table and a line never show one value two ways; blank when missing."""
    table = pd.DataFrame(
        {"method": ["a", "b", "c"], "heldout_p": [0.003173828125, 0.0500001, np.nan]}
    ).assign(heldout_q=[0.0047607421875, 0.0002, np.nan], n=[20, 20, 20])
    rows = markdown_table(table).splitlines()[2:]
    assert rows[0] == "| a | 0.00318 | 0.00477 | 20 |"
    assert rows[1] == "| b | 0.0501 | < 0.001 | 20 |"
    assert rows[2] == "| c |  |  | 20 |"


def test_coherences_and_their_interval_bounds_print_rounded_down_as_the_lines_print_them():
    """A bound just under the bar never prints at it (67.996 is not "68"), and a table
    shows a bound as the verdict lines do (93.588 is 93.58 in both)."""
    from steerops import stats

    table = pd.DataFrame(
        {
            "coherence_mean": [83.228],
            "coherence_lo": [67.996],
            "coherence_hi": [93.588],
            "heldout_coherence_lo": [59.48951],
            "min_coherence": [68.0],
        }
    )
    row = markdown_table(table).splitlines()[2]
    assert row == "| 83.22 | 67.99 | 93.58 | 59.48 | 68 |"
    assert stats.coherence_text(93.588, 2) in row
