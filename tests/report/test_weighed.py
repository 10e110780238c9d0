"""A near copy's comparison made where the cleaned dims weigh: both methods at the layer
where the dims hold the most of the vector, at the choice's coefficient, paired held out."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from report_data import QUESTIONS, write_params
from steering_data import write_grid
from steerops.config import load_params
from steerops.report import tables
from steerops.report.answer import answer_lines
from steerops.report.load import load_results
from steerops.report.weighed import weighed, weighed_words

# (layer, coefficient, selection refusal fraction, held-out fraction, coherence): the two
# methods alike at layer 2 (the choice), apart at layer 4
CELLS = {
    ("mean_diff", "prompt[-1]"): [
        (2, 1.0, 0.8, 0.8, 90.0),
        (4, 1.0, 0.3, 0.6, 80.0),
        (2, 0.0, 0.0, 0.0, 100.0),
    ],
    ("mean_diff_cleaned", "prompt[-1]"): [
        (2, 1.0, 0.8, 0.8, 90.0),
        (4, 1.0, 0.3, 0.2, 50.0),
        (2, 0.0, 0.0, 0.0, 100.0),
    ],
}


def _world(tmp_path, cells=CELLS, **curve):
    write_grid(tmp_path / "outputs", cells, QUESTIONS)
    frame = load_results(load_params(write_params(tmp_path)))
    gap = tables.gap_analysis(frame, 68)
    choice = tables.selection_choice(gap)
    assert (choice["method"], choice["layer"]) == ("mean_diff", 2)
    row = {k: choice[k] for k in tables.KEY} | {"method": "mean_diff"}
    row |= {"variant": "mean_diff_cleaned", "dims_cleaned": "all"}
    row |= {"removed_share": 0.01, "peak_share_layer": 4, "peak_share": 0.2} | curve
    return frame, gap, pd.DataFrame([row])


def test_a_near_copy_is_compared_at_the_layer_where_its_dims_weigh(tmp_path):
    frame, gap, curve = _world(tmp_path)
    [(key, w)] = weighed(frame, curve, gap, 0).items()
    assert key[2] == "mean_diff_cleaned" and (w.layer, w.coefficient) == (4, 1.0)
    # against numpy: the paired held-out difference at layer 4, question by question
    at = frame[(frame["layer"] == 4) & (frame["coefficient"] == 1.0)].set_index("method")
    cleaned, uncleaned = (at.loc[m, "heldout_traits"] for m in ("mean_diff_cleaned", "mean_diff"))
    d = np.array([cleaned[q] - uncleaned[q] for q in cleaned])
    assert w.gain.n == 20 and w.gain.mean == pytest.approx(d.mean()) == pytest.approx(-40.0)
    assert w.gain.hi < 0
    said = weighed_words(w, 68.0)
    assert said.startswith(
        "at layer 4, coefficient 1, the same config for both: `mean_diff_cleaned` held-out "
        "delta +20.0 ["
    )
    assert "coherence 50.00, under 68; `mean_diff` held-out delta +60.0 [" in said
    assert said.endswith(", n 20: cleaning weakens the steering there")


def test_no_comparison_where_it_is_not_a_near_copy_or_the_dims_weigh_nowhere(tmp_path):
    for curve in ({"removed_share": 0.2}, {"peak_share": 0.01}, {"peak_share_layer": np.nan}):
        frame, gap, table = _world(tmp_path / str(len(list(tmp_path.iterdir()))), **curve)
        assert weighed(frame, table, gap, 0) == {}


def test_a_layer_the_grid_did_not_steer_is_said(tmp_path):
    frame, gap, curve = _world(tmp_path, peak_share_layer=7)
    [w] = weighed(frame, curve, gap, 0).values()
    assert w.cleaned is None and w.gain is None
    assert weighed_words(w, 68.0) == (
        "at layer 7, coefficient 1, where they weigh, the grid did not steer both: add 7 to "
        "`steering.layers` to test them"
    )
    assert weighed_words(None, 68.0) is None


def test_the_comparison_sits_under_its_cleaning_answer(tmp_path):
    frame, gap, curve = _world(tmp_path)
    weighs = weighed(frame, curve, gap, 0)
    curve = pd.concat(
        [
            curve.assign(variant="mean_diff", dims_cleaned="0", status="ok"),
            curve.assign(status="ok", gain=0.0, gain_lo=0.0, gain_hi=0.0, gain_n=20, gain_k=1),
        ]
    ).assign(layer=2, coefficient=1.0, gain_note="", dim_set="massive", dims_removed=1)
    lines = answer_lines(gap, pd.DataFrame(columns=["model", "trait"]), curve, 68.0, weighs=weighs)
    at = next(i for i, line in enumerate(lines) if "removing massive dims" in line)
    assert "**cannot tell whether the dims matter**" in lines[at]
    assert lines[at + 3].startswith("    - at layer 4, coefficient 1, the same config for both")
