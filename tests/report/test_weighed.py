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


def _with(method: str, *configs) -> dict:
    """CELLS with `method`'s configs (at prompt[-1]) replaced by `configs`."""
    return {**CELLS, (method, "prompt[-1]"): list(configs)}


def _cleaned_also(*configs) -> dict:
    """CELLS with `configs` steered for the cleaned variant beside its own."""
    return _with("mean_diff_cleaned", *CELLS[("mean_diff_cleaned", "prompt[-1]")], *configs)


def _world(tmp_path, cells=CELLS, **curve):
    write_grid(tmp_path / "outputs", cells, QUESTIONS)
    frame = load_results(load_params(write_params(tmp_path)))
    key = tuple(frame[tables.KEY].iloc[0])
    near = {} if curve.pop("near", True) is False else {(*key, "mean_diff_cleaned"): "mean_diff"}
    gap = tables.gap_analysis(frame, 68, 0, near)
    choice = tables.selection_choice(gap)
    assert (choice["method"], choice["layer"]) == (curve.pop("chosen", "mean_diff"), 2)
    row = {k: choice[k] for k in tables.KEY} | {"method": "mean_diff"}
    row |= {"variant": "mean_diff_cleaned", "dims_cleaned": "all"}
    row |= {"removed_share": 0.01, "peak_share_layer": 4, "peak_share": 0.2, "gain_k": 1}
    row |= curve
    return frame, gap, pd.DataFrame([row])


def test_a_near_copy_is_compared_at_the_layer_where_its_dims_weigh(tmp_path):
    frame, gap, curve = _world(tmp_path)
    [(key, w)] = weighed(frame, curve, gap, 0, 68).items()
    assert key[2] == "mean_diff_cleaned" and (w.layer, w.coefficient) == (4, 1.0)
    # against numpy: the paired held-out difference at layer 4, question by question
    at = frame[(frame["layer"] == 4) & (frame["coefficient"] == 1.0)].set_index("method")
    cleaned, uncleaned = (at.loc[m, "heldout_traits"] for m in ("mean_diff_cleaned", "mean_diff"))
    d = np.array([cleaned[q] - uncleaned[q] for q in cleaned])
    assert w.gain.n == 20 and w.gain.mean == pytest.approx(d.mean()) == pytest.approx(-40.0)
    assert w.gain.hi < 0
    said = weighed_words(w, 68.0)
    assert said.startswith(
        "at layer 4, coefficient 1, where they weigh: **the cleaned vector steers less** (gain, "
        "cleaned - uncleaned, paired, held out, -40.0 ["
    )
    assert "`mean_diff_cleaned` held-out delta +20.0 [" in said
    assert (
        "coherence 50.00 [50.00, 50.00] (20 of 20 answers under 68), the mean under 68; "
        "`mean_diff` held-out delta +60.0 ["
    ) in said
    # renormalised after 20% of its squared norm is removed: 1/sqrt(0.8) = 1.118
    assert said.endswith(
        "at one coefficient it pushes 1.12x harder along the other dims (at 0.894 it pushes "
        "them as hard: add it to `steering.coefficients` to compare the dims alone)"
    )
    # two cleaned variants compared together: each interval at 97.5%
    [w2] = weighed(frame, curve.assign(gain_k=2), gap, 0, 68).values()
    assert w2.gain.lo < w.gain.lo and "at 97.5% (one of 2)" in weighed_words(w2, 68.0)


def test_no_comparison_where_it_is_not_a_near_copy_or_the_dims_weigh_nowhere(tmp_path):
    for curve in ({"near": False}, {"peak_share": 0.01}, {"peak_share_layer": np.nan}):
        frame, gap, table = _world(tmp_path / str(len(list(tmp_path.iterdir()))), **curve)
        assert weighed(frame, table, gap, 0, 68) == {}


def test_a_layer_the_grid_did_not_steer_is_said(tmp_path):
    frame, gap, curve = _world(tmp_path, peak_share_layer=7)
    [w] = weighed(frame, curve, gap, 0, 68).values()
    assert w.cleaned is None and w.gain is None and not w.compared
    assert weighed_words(w, 68.0) == (
        "at layer 7, coefficient 1, where they weigh, the grid steered nothing: add 7 to "
        "`steering.layers` to test them"
    )
    assert weighed_words(None, 68.0) is None
    # the layer steered, but not the cleaned variant at the choice's coefficient
    cells = _with(
        "mean_diff_cleaned",
        (2, 1.0, 0.8, 0.8, 90.0),
        (4, 1.5, 0.3, 0.2, 50.0),
        (2, 0.0, 0.0, 0.0, 100.0),
    )
    frame, gap, curve = _world(tmp_path / "other", cells)
    [w] = weighed(frame, curve, gap, 0, 68).values()
    assert weighed_words(w, 68.0) == (
        "at layer 4, coefficient 1, where they weigh, the grid did not steer "
        "`mean_diff_cleaned` to compare"
    )


def test_the_comparison_sits_under_its_cleaning_answer(tmp_path):
    frame, gap, curve = _world(tmp_path)
    weighs = weighed(frame, curve, gap, 0, 68)
    curve = pd.concat(
        [
            curve.assign(variant="mean_diff", dims_cleaned="0", status="ok"),
            curve.assign(status="ok", gain=0.0, gain_lo=0.0, gain_hi=0.0, gain_n=20, gain_k=1),
        ]
    ).assign(layer=2, coefficient=1.0, gain_note="", dim_set="massive", dims_removed=1)
    lines = answer_lines(gap, pd.DataFrame(columns=["model", "trait"]), curve, 68.0, weighs=weighs)
    at = next(i for i, line in enumerate(lines) if "removing massive dims" in line)
    assert "**cannot tell whether the dims matter**" in lines[at]
    assert lines[at + 2].endswith("at layer 4 (20.0% of its squared norm), compared there next")
    assert lines[at + 3].startswith("    - at layer 4, coefficient 1, where they weigh: **")


def test_the_report_records_the_comparison_where_the_dims_weigh(tmp_path):
    from steerops.report.report_metrics import best_checks as _best_checks

    frame, gap, curve = _world(tmp_path)
    weighs = weighed(frame, curve, gap, 0, 68)
    [w] = weighs.values()

    def weighed_keys(checks: dict) -> dict:
        return {k: v for k, v in checks.items() if k.startswith("weighed_")}

    assert weighed_keys(_best_checks(gap, {}, {}, weighs, 0)) == {
        "weighed_layer": 4,
        "weighed_gain": w.gain.mean,
        "weighed_gain_lo": w.gain.lo,
        "weighed_gain_hi": w.gain.hi,
        "weighed_gain_n": w.gain.n,
        "weighed_variant": "mean_diff_cleaned",
        "weighed_cleaned_coefficient": None,
    }
    assert set(weighed_keys(_best_checks(gap, {}, {}, {}, 0)).values()) == {None}


def test_a_cleaned_variant_chosen_itself_gets_its_cleaning_answer_and_comparison(tmp_path):
    """The curve keys its rows by the uncleaned method: the cleaned variant chosen finds its
    own comparison there, and where the dims weigh."""
    cells = _with(
        "mean_diff_cleaned",
        (2, 1.0, 0.9, 0.8, 90.0),  # better on the selection half: chosen
        (4, 1.0, 0.3, 0.2, 50.0),
        (2, 0.0, 0.0, 0.0, 100.0),
    )
    frame, gap, curve = _world(tmp_path, cells, chosen="mean_diff_cleaned")
    [(key, w)] = weighed(frame, curve, gap, 0, 68).items()
    assert key[2] == "mean_diff_cleaned" and (w.layer, w.method) == (4, "mean_diff")
    assert w.gain.mean == pytest.approx(-40.0)
    curve = pd.concat(
        [
            curve.assign(variant="mean_diff", dims_cleaned="0", status="ok"),
            curve.assign(status="ok", gain=10.0, gain_lo=0.0, gain_hi=20.0, gain_n=20, gain_k=1),
        ]
    ).assign(layer=2, coefficient=1.0, gain_note="", dim_set="massive", dims_removed=1)
    weighs = weighed(frame, curve, gap, 0, 68)
    lines = answer_lines(gap, pd.DataFrame(columns=["model", "trait"]), curve, 68.0, weighs=weighs)
    assert any("steer with `mean_diff_cleaned`" in line for line in lines)
    at = next(i for i, line in enumerate(lines) if "removing massive dims" in line)
    assert "(`mean_diff_cleaned` against `mean_diff`)" in lines[at]
    assert any(
        line.startswith("    - at layer 4, coefficient 1, where they weigh") for line in lines
    )


def test_the_cleaned_variant_at_the_matched_push_is_compared_where_the_grid_has_it(tmp_path):
    """20% of the squared norm removed: the renormalised cleaned vector at 1.0 x sqrt(0.8)
    pushes the other dims as hard as the uncleaned one at 1.0, so that config is compared."""
    for steered, matched in ((0.894, True), (0.88, False)):
        cells = _cleaned_also((4, steered, 0.3, 0.7, 85.0))
        frame, gap, curve = _world(tmp_path / str(steered), cells)
        [w] = weighed(frame, curve, gap, 0, 68).values()
        said = weighed_words(w, 68.0)
        if not matched:  # 1.6% off the matched push: both at the choice's coefficient
            assert w.cleaned_coefficient is None and w.gain.mean == pytest.approx(-40.0)
            assert said.startswith("at layer 4, coefficient 1, where they weigh")
            continue
        assert w.cleaned_coefficient == steered
        at = frame[frame["layer"] == 4].set_index(["method", "coefficient"])["heldout_traits"]
        cleaned, uncleaned = at.loc[("mean_diff_cleaned", steered)], at.loc[("mean_diff", 1.0)]
        d = np.array([cleaned[q] - uncleaned[q] for q in cleaned])
        assert w.gain.mean == pytest.approx(d.mean()) == pytest.approx(10.0)
        assert said.startswith(
            "at layer 4, `mean_diff_cleaned` at coefficient 0.894 against `mean_diff` at 1, "
            "where they weigh: **"
        )
        assert "`mean_diff_cleaned` held-out delta +70.0 [" in said
        assert said.endswith(
            "The same push along the other dims (the cleaned unit vector is renormalised: 1 x "
            "sqrt(1 - 0.200) = 0.8944, within 1%), so the dims are what differs"
        )


def test_the_matched_push_takes_the_closest_coefficient_at_the_layer_within_one_percent(tmp_path):
    """The dims' share 0.110635 (the main job's): 1.0 x sqrt(1 - share) = 0.94306. A grid
    coefficient 0.23% off (as 0.189 is for 0.2 there) is matched, the closest of two wins,
    and one steered at another layer is not the layer's."""
    share = {"peak_share": 0.110635}
    for extra, expected in (
        ([(4, 0.9452, 0.3, 0.7, 85.0)], 0.9452),
        ([(4, 0.9370, 0.3, 0.7, 85.0), (4, 0.9440, 0.3, 0.7, 85.0)], 0.944),
        ([(2, 0.9431, 0.3, 0.7, 85.0)], None),  # at layer 2 only
    ):
        cells = _cleaned_also(*extra)
        frame, gap, curve = _world(tmp_path / str(len(list(tmp_path.iterdir()))), cells, **share)
        [w] = weighed(frame, curve, gap, 0, 68).values()
        assert w.cleaned_coefficient == expected, extra


def test_the_comparison_says_what_it_rests_on_and_cannot_tell_where_the_method_does_not_steer(
    tmp_path,
):
    from steerops.report.report_metrics import best_checks as _best_checks

    frame, gap, curve = _world(tmp_path / "matched", _cleaned_also((4, 0.894, 0.3, 0.7, 85.0)))
    weighs = weighed(frame, curve, gap, 0, 68)
    [w] = weighs.values()
    at = frame[frame["layer"] == 4].set_index(["method", "coefficient"])["heldout_traits"]
    cleaned, uncleaned = at.loc[("mean_diff_cleaned", 0.894)], at.loc[("mean_diff", 1.0)]
    differ = sum(cleaned[q] != uncleaned[q] for q in cleaned)
    assert 0 < w.differing == differ < 20
    assert f"n 20; {differ} of the 20 questions differ); " in weighed_words(w, 68.0)
    assert _best_checks(gap, {}, {}, weighs, 0)["weighed_cleaned_coefficient"] == 0.894
    # the uncleaned method with no effect there on the selection half: no answer on the dims
    # both methods with no effect at layer 4 on the selection half
    configs = [(2, 1.0, 0.8, 0.8, 90.0), (4, 1.0, 0.0, 0.6, 80.0), (2, 0.0, 0.0, 0.0, 100.0)]
    idle = {**CELLS, **{(m, "prompt[-1]"): configs for m in ("mean_diff", "mean_diff_cleaned")}}
    frame, gap, curve = _world(tmp_path / "idle", idle)
    [w] = weighed(frame, curve, gap, 0, 68).values()
    assert weighed_words(w, 68.0).startswith(
        "at layer 4, coefficient 1, where they weigh: **cannot tell whether the dims matter: "
        "`mean_diff` has no detectable effect here on the selection half** (gain"
    )
