"""The report's choice against a random direction at its own layer and coefficient: the
control's held-out numbers and the paired gain of the choice over it."""

from __future__ import annotations

import numpy as np
import pytest

from report_data import SYNTHETIC, synthetic_grid, write_params
from steerops import stats
from steerops.config import load_params
from steerops.report import tables
from steerops.report.control import Control, control_words, controls
from steerops.report.load import load_results


def _world(tmp_path, spec=None):
    synthetic_grid(tmp_path, spec)
    frame = load_results(load_params(write_params(tmp_path)))
    return frame, tables.gap_analysis(frame, 68)


def _row(frame, method, layer, coefficient) -> dict:
    hit = frame[
        (frame["method"] == method)
        & (frame["layer"] == layer)
        & (frame["coefficient"] == coefficient)
    ]
    assert len(hit) == 1
    return hit.iloc[0].to_dict()


def test_the_control_is_the_random_direction_at_the_choice_s_config(tmp_path):
    frame, gap = _world(tmp_path)
    choice = tables.selection_choice(gap)
    assert (choice["method"], choice["layer"], choice["coefficient"]) == ("probe", 2, 2.0)
    [(key, control)] = controls(frame, gap, 0, 68).items()
    assert key == (str(choice["model"]), str(choice["trait"]))
    theirs = _row(frame, "random_baseline", 2, 2.0)  # not random_baseline's own choice
    ours = _row(frame, "probe", 2, 2.0)
    assert control.steered and control.delta.mean == theirs["heldout_trait_delta"]
    # its coherence as the gap analysis has a choice's: mean, interval, answers under the bar
    assert control.coherence == tables.held_coherence(theirs, 68, 0)
    assert control.coherence["coherence"] == pytest.approx(40.0)
    assert control.coherence["under_bar"] == 20
    # the gain, question by question (the baseline cancels), against numpy
    q = list(ours["heldout_traits"])
    diff = np.array([ours["heldout_traits"][x] - theirs["heldout_traits"][x] for x in q])
    assert control.gain.n == len(q) == 20
    assert control.gain.mean == pytest.approx(diff.mean())
    assert control.gain.lo <= diff.mean() <= control.gain.hi
    assert control_words(control, 68).startswith(
        "one random direction (`random_baseline`, a single draw) at the same layer and "
        "coefficient: held-out delta +0.0 [+0.0, +0.0] (every question gave the same delta"
    )
    said = control_words(control, 68)
    assert ", n 20, coherence 40.00 [40.00, 40.00] (20 of 20 answers under 68);" in said
    gain = stats.interval_text(diff.mean(), control.gain.lo, control.gain.hi)
    assert f"; this config's paired gain over it {gain}, n 20; " in said
    # the control's own verdict over its grid, which is not the config compared here
    own = gap[gap["method"] == "random_baseline"].iloc[0]
    assert own["status"] == "no effect" and own["coefficient"] != 2.0
    held = stats.interval_text(own["delta"], own["delta_lo"], own["delta_hi"])
    assert said.endswith(
        "; over its own grid, `random_baseline` is **no effect** (its choice on the selection "
        f"half, layer 2, coefficient {own['coefficient']:g}: held-out delta {held})"
    )


def test_no_control_at_the_config_is_said_and_none_without_one(tmp_path):
    # the random direction steered at the smaller coefficients only
    spec = dict(SYNTHETIC) | {"random_baseline": ([0, 5], [99, 95])}
    frame, gap = _world(tmp_path, spec)
    [control] = controls(frame, gap, 0, 68).values()
    assert control == Control(False, None, None, None, control.own)
    assert control.own["method"] == "random_baseline"  # its own verdict still said
    assert "; over its own grid, `random_baseline` is **" in control_words(control, 68)
    assert control_words(control, 68).startswith("no `random_baseline` config at this layer")
    # no random direction steered in the choice's cell: nothing to say
    spec = {m: v for m, v in SYNTHETIC.items() if m != "random_baseline"}
    frame, gap = _world(tmp_path / "none", spec)
    assert controls(frame, gap, 0, 68) == {} and control_words(None, 68) is None


def test_a_random_direction_chosen_itself_has_no_control(tmp_path):
    spec = {"random_baseline": ([10, 40, 70, 90], [95, 90, 80, 50])}
    frame, gap = _world(tmp_path, spec)
    assert tables.selection_choice(gap)["method"] == "random_baseline"
    assert controls(frame, gap, 0, 68) == {}


def test_the_report_records_the_gain_over_the_random_direction(tmp_path):
    from steerops.cli import main
    from steerops.io import read_json

    frame, gap = _world(tmp_path)
    [control] = controls(frame, gap, 0, 68).values()
    assert main(["report", "--params", str(write_params(tmp_path))]) == 0
    metrics = read_json(tmp_path / "reports" / "metrics.json")
    assert metrics["gain_over_random"] == pytest.approx(control.gain.mean)
    assert metrics["gain_over_random_lo"] == pytest.approx(control.gain.lo)
    assert metrics["gain_over_random_hi"] == pytest.approx(control.gain.hi)
    assert metrics["gain_over_random_n"] == control.gain.n > 0
