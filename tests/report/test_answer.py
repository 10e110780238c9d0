"""The results page's answer first: the config to steer with is the selection half's choice,
said with its held-out verdict; the search and the cleaning of that method beside it."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd

from steerops.report import tables
from steerops.report.answer import answer_lines


def _gap_row(method: str, **values) -> dict:
    row = {
        "model": "m",
        "trait": "t",
        "position": "prompt[-1]",
        "component": "residual",
        "method": method,
        "alias_of": "",
        "status": "ok",
        "layer": 12,
        "coefficient": 0.2,
        "selection_delta": 40.0,
        "selection_delta_lo": 10.0,
        "delta": 30.0,
        "delta_lo": 5.0,
        "delta_hi": 55.0,
        "coherence": 80.0,
        "coherence_scored": 20,
        "under_bar": 0,
        "under_bar_moved": 0,
        "credited_delta": 30.0,
        "credited_lo": 5.0,
        "credited_hi": 55.0,
        "n": 20,
    }
    return row | values


def _search_row(**values) -> dict:
    row = {
        "model": "m",
        "trait": "t",
        "position": "prompt[-1]",
        "component": "residual",
        "method": "mean_diff",
        "status": "ok",
        "layer": 12,
        "coefficient": 0.25,
        "heldout_trait_delta": 35.0,
        "heldout_delta_lo": 10.0,
        "heldout_delta_hi": 60.0,
        "heldout_coherence": 75.0,
        "heldout_coherence_scored": 20,
        "heldout_under_bar": 3,
        "heldout_under_bar_moved": 2,
        "heldout_credited_delta": 25.0,
        "heldout_credited_lo": 0.0,
        "heldout_credited_hi": 50.0,
        "heldout_n": 20,
    }
    return row | values


NO_SEARCH = pd.DataFrame(columns=list(_search_row()))
NO_CURVE = pd.DataFrame(columns=["model", "trait", "position", "component", "method"])


def test_the_config_to_steer_with_is_the_selection_half_s_choice():
    """probe has the larger held-out delta, mean_diff the larger selection delta: the
    answer is mean_diff (choosing on held-out deltas would pick on the held-out half)."""
    gap = pd.DataFrame(
        [
            _gap_row(
                "mean_diff",
                selection_delta=60.0,
                under_bar=5,
                under_bar_moved=1,
                credited_delta=20.0,
                selection_coherence=90.63,
                baseline_trait=5.0,
                baseline_coherence=100.0,
            ),
            _gap_row("probe", delta=70.0, delta_lo=40.0, delta_hi=90.0, layer=9),
            _gap_row("mean_diff_preclean", alias_of="mean_diff", selection_delta=90.0),
        ]
    )
    lines = answer_lines(gap, NO_SEARCH, NO_CURVE, 68.0)
    assert lines == [
        "- **t** on `m`:",
        "  - **steer with `mean_diff` at prompt[-1], layer 12, coefficient 0.2**",
        "    - held-out delta +30.0 [+5.0, +55.0], n 20; unsteered on the same questions: "
        "trait 5, coherence 100.00",
        "    - held-out coherence 80.00 (5 of 20 answers under 68); with the 5 answers under 68 "
        "counted as unmoved (1 had moved along the steering), delta +20.0 [+5.0, +55.0]",
        "    - chosen on the selection half (selection delta +60.0, coherence 90.63) among 2 "
        "methods (`mean_diff`, `probe`)",  # the alias is no method of its own
    ]


def test_a_choice_among_tied_selection_deltas_says_coherence_decided_it():
    """Methods tied on the selection delta: the choice fell to coherence, which the reader
    must know before preferring one method to another (an alias is no method of its own,
    a tie without an effect is no contender)."""
    gap = pd.DataFrame(
        [
            _gap_row("mean_diff", selection_coherence=79.9),
            _gap_row("probe", selection_coherence=100.0, layer=9),
            _gap_row("pca", selection_coherence=70.0, position="response[:5]"),
            _gap_row("probe_preclean", alias_of="probe", selection_coherence=100.0),
            _gap_row("random_baseline", selection_delta_lo=0.0, selection_coherence=99.0),
            _gap_row("mean_diff_cleaned", selection_delta=35.0, selection_coherence=99.0),
        ]
    )
    [picked] = [x for x in answer_lines(gap, NO_SEARCH, NO_CURVE, 68.0) if "chosen on" in x]
    assert picked.startswith(
        "    - chosen on the selection half (selection delta +40.0, coherence "
    )
    assert picked.endswith(
        "methods (`mean_diff`, `probe`, `pca`, `random_baseline` (the control), "
        "`mean_diff_cleaned`), tied on that delta with `mean_diff` (layer 12, coherence "
        "79.90), `pca` at response[:5] (layer 12, coherence 70.00): chosen on coherence"
    )
    untied = gap[gap["method"].isin(["probe", "mean_diff_cleaned"])]
    [picked] = [x for x in answer_lines(untied, NO_SEARCH, NO_CURVE, 68.0) if "chosen on" in x]
    assert "tied" not in picked
    # coherence level too: the table's order chose; a row the choice never weighed (no
    # trait score) is no contender, whatever its coherence
    level = pd.DataFrame(
        [
            _gap_row("mean_diff", selection_coherence=100.0),
            _gap_row("probe", selection_coherence=100.0),
            _gap_row("pca", status="trait unscored", selection_coherence=100.0),
        ]
    )
    [picked] = [x for x in answer_lines(level, NO_SEARCH, NO_CURVE, 68.0) if "chosen on" in x]
    assert picked.endswith(
        "tied on that delta with `probe` (layer 12, coherence 100.00): chosen on coherence, "
        "then the table's order"
    )
    # float noise is no lead, in delta or coherence: the table's order chose, and says so
    noise = pd.DataFrame(
        [
            _gap_row("mean_diff", selection_coherence=92.54),
            _gap_row("probe", selection_delta=40.0 + 1e-12, selection_coherence=92.54 + 1e-12),
        ]
    )
    assert tables.selection_choice(noise)["method"] == "mean_diff"
    [picked] = [x for x in answer_lines(noise, NO_SEARCH, NO_CURVE, 68.0) if "chosen on" in x]
    assert picked.endswith(
        "tied on that delta with `probe` (layer 12, coherence 92.54): chosen on coherence, "
        "then the table's order"
    )


def test_a_choice_that_fails_held_out_is_no_recommendation():
    gap = pd.DataFrame(
        [
            _gap_row("mean_diff", status="no effect", delta=0.0, delta_lo=-10.0, delta_hi=15.0),
            _gap_row("probe", selection_delta=20.0, delta=60.0, delta_lo=30.0),  # held: not it
        ]
    )
    (_, steer, held, *rest) = answer_lines(gap, NO_SEARCH, NO_CURVE, 68.0)
    assert steer == (
        "  - **no config to recommend**: the selection half's choice, `mean_diff` at "
        "prompt[-1], layer 12, coefficient 0.2, is **no effect**"
    )
    assert held == "    - held-out delta +0.0 [-10.0, +15.0], n 20"
    assert all(line.startswith("    - ") for line in rest)  # its details, nothing else
    # probe is among the methods compared, never put in the choice's place
    assert not any("probe" in line for line in [steer, held, *rest] if "among" not in line)
    assert any("among 2 methods (`mean_diff`, `probe`)" in line for line in rest)
    # no cell with an effect on the selection half: nothing was chosen at all
    gap = pd.DataFrame(
        [
            _gap_row("mean_diff", status="no effect", selection_delta_lo=-5.0),
            _gap_row("probe", status="needs finer coefficients", selection_delta=np.nan),
        ]
    )
    (_, steer) = answer_lines(gap, NO_SEARCH, NO_CURVE, 68.0)
    assert steer == (
        "  - **no config to recommend**: no cell's choice has an effect on the selection half "
        "(verdicts: no effect 1, needs finer coefficients 1)"
    )


def test_the_search_is_said_beside_with_its_own_held_out_verdict():
    gap = pd.DataFrame([_gap_row("mean_diff")])
    searched = pd.DataFrame(
        [
            _search_row(),
            _search_row(method="probe", status="incoherent held out", heldout_coherence=60.0),
            _search_row(method="pca", status="no feasible steering found", layer=np.nan),
        ]
    )
    lines = answer_lines(gap, searched, NO_CURVE, 68.0)
    at = next(i for i, line in enumerate(lines) if "the search of `mean_diff`" in line)
    assert lines[at : at + 3] == [
        "  - the search of `mean_diff` at prompt[-1]: **layer 12, coefficient 0.25**, ok held out",
        "    - held-out delta +35.0 [+10.0, +60.0], n 20",
        "    - held-out coherence 75.00 (3 of 20 answers under 68); with the 3 answers under 68 "
        "counted as unmoved (2 had moved along the steering), delta +25.0 [+0.0, +50.0]",
    ]
    assert lines[at + 3] == (
        "  - the search of `probe` at prompt[-1] chose layer 12, coefficient 0.25: "
        "**incoherent held out**, not a recommended coefficient"
    )
    assert lines[at + 4].startswith("    - held-out delta +35.0")
    assert lines[at + 6 :] == [
        "  - the search of `pca` at prompt[-1]: **no feasible steering found**, nothing chosen"
    ]
    # a search at its own bar says it: its answers under the bar were counted there
    searched = pd.DataFrame([_search_row(min_coherence=75.0)])
    own = answer_lines(gap, searched, NO_CURVE, 68.0)
    assert own[-1].startswith("    - held-out coherence 75.00 (3 of 20 answers under 75); with")
    # and its headline, where the grid's verdict beside it is at another bar
    assert own[-3] == (
        "  - the search of `mean_diff` at prompt[-1] (judged at its own bar, coherence >= 75; "
        "this report judges the grid at 68): **layer 12, coefficient 0.25**, ok held out"
    )
    # chosen with a margin over the bar: said, its answers judged at the bar, its trials
    # read at the raised bar they were chosen at
    trials = pd.DataFrame(
        {
            "layer": [12, 12, 12],
            "coefficient": [0.2, 0.25, 0.3],
            "trait_delta": [20.0, 35.0, 60.0],
            "coherence_mean": [90.0, 76.0, 70.0],
            "state": ["complete"] * 3,
        }
    )
    key = ("m", "t", "prompt[-1]", "residual", "mean_diff")
    searched = pd.DataFrame([_search_row(min_coherence=68.0, coherence_margin=5.0)])
    lines = answer_lines(gap, searched, NO_CURVE, 68.0, trials={key: trials})
    at = next(i for i, line in enumerate(lines) if "the search of `mean_diff`" in line)
    assert lines[at + 1].startswith(
        "    - chosen at coherence >= 73 on the search half (`search.coherence_margin` 5 over "
        "the bar 68, which judges it held out); held-out delta +35.0 [+10.0, +60.0], n 20"
    )
    assert "(3 of 20 answers under 68)" in lines[at + 2]
    assert not lines[at + 2].endswith("was chosen at")  # a best.json without the count
    assert "best coherent delta +35.0 at 0.25 (coherence 76.00)" in lines[at + 3]
    # with its answers read: those under the raised bar too, which its mean can hide
    row = _search_row(min_coherence=68.0, coherence_margin=5.0, heldout_under_margin=8.0)
    lines = answer_lines(gap, pd.DataFrame([row]), NO_CURVE, 68.0, trials={key: trials})
    assert lines[at + 2].endswith(
        "; 8 of 20 answers under 73, the bar its search-half mean was chosen at"
    )
    assert "coherence falls under 73 between 0.25" in lines[at + 3]
    # a study that stopped short of its target: said under its held-out numbers
    assert not any("short of `search.trials`" in line for line in lines)
    row |= {"range_exhausted": True, "n_trials": 6}
    lines = answer_lines(gap, pd.DataFrame([row]), NO_CURVE, 68.0, trials={key: trials})
    assert lines[at + 3] == (
        "    - the study stopped after 6 new trials, short of `search.trials`: its sampler kept "
        "proposing configs already tried, so the range holds nothing new for it (a wider "
        "range or more layers is a new study)"
    )
    assert "coherence falls under 73 between 0.25" in lines[at + 4]


def test_the_cleaning_answer_is_of_the_chosen_method_and_one_bullet_per_trait():
    gap = pd.DataFrame([_gap_row("mean_diff"), _gap_row("mean_diff", trait="u", status="ok")])
    base = {k: v for k, v in _gap_row("mean_diff").items() if k in NO_CURVE.columns}
    curve = pd.DataFrame(
        [
            base | {"dims_cleaned": "0", "variant": "mean_diff", "status": "ok"},
            base
            | {"dims_cleaned": "1", "variant": "mean_diff_top1", "status": "ok"}
            | {"gain": 20.0, "gain_lo": 5.0, "gain_hi": 35.0, "gain_n": 20, "gain_k": 1},
            base
            | {"method": "probe", "dims_cleaned": "1", "variant": "probe_top1", "status": "ok"}
            | {"gain": -20.0, "gain_lo": -35.0, "gain_hi": -5.0, "gain_n": 20, "gain_k": 1},
        ]
    ).assign(
        layer=12,
        coefficient=0.2,
        gain_note="",
        removed_share=0.3,
        dim_set="massive",
        dims_removed=1,
        removed_ids="507",
    )
    lines = answer_lines(gap, NO_SEARCH, curve, 68.0)
    assert [line for line in lines if line.startswith("- ")] == [
        "- **t** on `m`:",
        "- **u** on `m`:",
    ]
    at = next(i for i, line in enumerate(lines) if "removing massive dims" in line)
    assert lines[at : at + 4] == [
        "  - removing massive dims (`mean_diff_top1` against `mean_diff`): **cleaning helps**",
        "    - cleaned: 1 dims of the `massive` set, 1 removed from the vector at layer 12 (507)",
        "    - the cleaned vector, renormalised, pushes 1.195x harder along the other dims at "
        "a coefficient, so the gain holds that push too (the cleaned one at the coefficient x "
        "0.837 matches it)",
        "- **u** on `m`:",
    ]
    assert not any("probe_top1" in line for line in lines)  # not the chosen method's
    # a `top_mean` set is the largest by mean, not necessarily massive: said so
    lines = answer_lines(gap, NO_SEARCH, curve.assign(dim_set="top_mean"), 68.0)
    assert not any("massive" in line for line in lines)
    assert any(
        line.startswith("  - removing largest-mean dims (`mean_diff_top1` against")
        for line in lines
    )


def test_the_answer_says_what_the_grid_steered_and_where_coherence_ran_out():
    """The choice is the best of its grid, which is said (one layer here: the page cannot
    compare layers it never tried); the next larger coefficient incoherent on the selection
    half makes it the grid's last coherent step."""
    from steerops.report.grid_words import grids

    frame = pd.DataFrame(
        [
            _gap_row("mean_diff", coefficient=c, selection_coherence_mean=coherence)
            for c, coherence in ((0.0, 99.0), (0.2, 90.0), (0.25, 60.0))
        ]
    )
    gap = pd.DataFrame([_gap_row("mean_diff")])
    *_, picked, cliff = answer_lines(gap, NO_SEARCH, NO_CURVE, 68.0, grids(frame, 68.0))
    # one coherent config of two is no comparison, and says so
    assert picked.endswith(
        "among 1 method; the only coherent one of 2 steered configs (layer 12; coefficients "
        "0.2, 0.25); 0.2 is the smallest coefficient steered here: nothing smaller was tried"
    )
    assert cliff == (
        "    - the next larger coefficient here (0.25) is incoherent on the selection half, so "
        "this one is the grid's last coherent step: coherence is lost between the two (a finer "
        "grid or `steerops search` finds where)"
    )
    # a larger coefficient coherent again: the fall is a dip, not the grid's last step
    frame = pd.concat(
        [
            frame,
            pd.DataFrame([_gap_row("mean_diff", coefficient=0.3, selection_coherence_mean=70.0)]),
        ]
    )
    *_, cliff = answer_lines(gap, NO_SEARCH, NO_CURVE, 68.0, grids(frame, 68.0))
    assert cliff == (
        "    - the next larger coefficient here (0.25) is incoherent on the selection half, "
        "but 0.3 is coherent again: coherence is not lost at one edge here"
    )


def test_the_page_says_which_way_a_positive_delta_points():
    from steerops.report.results import _direction_line

    assert _direction_line(pd.DataFrame({"sign": [1.0, 1.0]})) == [
        "- Steering direction: positive (a positive delta is more of the trait)"
    ]
    assert _direction_line(pd.DataFrame({"sign": [-1.0]})) == [
        "- Steering direction: negative (a positive delta is less of the trait)"
    ]
    assert _direction_line(pd.DataFrame(columns=["sign"])) == []


def test_the_page_says_how_a_coefficient_and_a_layer_apply():
    from steerops.report.results import _steering_line

    (line,) = _steering_line({"unit": "norm", "scope": "response", "max_new_tokens": 24})
    assert line.startswith("- Steering: coefficients in `norm` units (the unit vector's weight is")
    assert "HF's `hidden_states[L + 1]`" in line and "scope `response`; 24 new tokens" in line
    (line,) = _steering_line({"unit": "absolute", "scope": "all", "max_new_tokens": 8})
    assert "(the unit vector's weight is the coefficient)" in line
    assert _steering_line(None) == []  # a run's page: its flags may have steered otherwise


def test_the_page_says_when_the_questions_are_a_subset_of_the_trait_s():
    from steerops.report.results import _subset_words

    assert _subset_words({"subset": 40}) == (
        ", of each trait's steering questions the first 40 (`steering.subset`)"
    )
    assert _subset_words({"subset": None}) == _subset_words({"subset": 0}) == ""
    assert _subset_words(None) == ""  # a run's page: its flags may have steered otherwise


def test_the_recommendation_gives_its_answers_moved_its_test_and_its_coherence_interval():
    """On a 0/100 judge a delta is answers moved; the bar decides the verdict, so the
    coherence carries its interval; and the choice's test with its q, over the family that
    leaves a near copy out (it stands in for its twin)."""
    chosen = _gap_row(
        "mean_diff",
        moved_along=11,
        moved_against=1,
        unmoved=8,
        coherence=83.228,
        coherence_lo=70.551,
        coherence_hi=93.58,
        heldout_p=0.0031738,
        heldout_q=0.0063477,
        near_copy_of="",
    )
    copy = _gap_row("mean_diff_cleaned", selection_delta=10.0, heldout_p=0.0031738)
    copy |= {"heldout_q": 0.0063477, "near_copy_of": "mean_diff"}
    control = _gap_row("random_baseline", status="no effect", selection_delta=1.0)
    control |= {"heldout_p": 1.0, "heldout_q": 1.0, "near_copy_of": ""}
    gap = pd.DataFrame([chosen, copy, control])
    _, steer, delta, coherence, *_ = answer_lines(gap, NO_SEARCH, NO_CURVE, 68.0)
    assert steer == "  - **steer with `mean_diff` at prompt[-1], layer 12, coefficient 0.2**"
    assert delta == (
        "    - held-out delta +30.0 [+5.0, +55.0], n 20 (11 answers moved along the steering, 1 "
        "against, 8 not at all); sign-flip p 0.00318 one-sided, q 0.00635 over the report's 2 "
        "cells (`mean_diff`, `random_baseline`)"
    )
    assert coherence == "    - held-out coherence 83.22 [70.55, 93.58]"
    # a graded judge's small moves are said apart (none on a 0/100 judge: not said)
    graded = pd.DataFrame([chosen | {"moved_little": 3}, copy, control])
    delta = answer_lines(graded, NO_SEARCH, NO_CURVE, 68.0)[2]
    assert "1 against, 8 not at all; 3 of these moves by less than 10 points); sign-flip" in delta
    # a row without them (a search's) says neither
    assert (
        "moved"
        not in answer_lines(pd.DataFrame([_gap_row("mean_diff")]), NO_SEARCH, NO_CURVE, 68.0)[2]
    )


def _curve_row(**changes) -> SimpleNamespace:
    """A cleaning-curve row of a near copy at layer 12 (what `cleaning_parts` reads)."""
    row = dict(gain=0.0, gain_lo=0.0, gain_hi=0.0, gain_n=20, gain_k=1, status="ok")
    row |= dict(variant="v", method="m", layer=12, coefficient=0.2, removed_share=0.0076)
    return SimpleNamespace(**(row | dict(peak_share_layer=17.0, peak_share=0.111) | changes))


def test_a_near_copy_says_where_the_same_dims_weigh_enough_to_test():
    from steerops.report.answer import cleaning_parts

    row = _curve_row()
    base = SimpleNamespace(status="ok", layer=12, coefficient=0.2)
    verdict, why, configs = cleaning_parts(row, base)
    assert verdict == "cannot tell whether the dims matter" and configs == ""
    assert why.endswith(
        "says nothing of them; they hold the most of it at layer 17 (11.1% of its squared "
        "norm), where a comparison would test them"
    )
    # nowhere more than a near copy's share: no layer to point at
    row.peak_share = 0.04
    assert cleaning_parts(row, base)[1].endswith("says nothing of them")


def test_a_cleaned_vector_with_nothing_removed_at_its_chosen_layer_is_no_test_of_the_dims():
    """The dims of its set are massive at other layers only: at the chosen one it is the
    uncleaned vector, and a gain (here one the interval claims) is not read as the dims'."""
    from steerops.report.answer import _cleaned, cleaning_parts

    row = _curve_row(
        gain=12.5,
        gain_lo=2.5,
        gain_hi=25.0,
        variant="mean_diff_cleaned",
        method="mean_diff",
        layer=4,
        dims_cleaned="2",
        dim_set="massive",
        dims_removed=0.0,
        removed_ids="",
        removed_share=0.0,
        peak_share_layer=np.nan,
        peak_share=np.nan,
    )
    base = SimpleNamespace(status="ok", layer=4, coefficient=0.2)
    verdict, why, _ = cleaning_parts(row, base)
    assert verdict == "cannot tell whether the dims matter"
    assert why.startswith("the cleaned vector is nearly the uncleaned one (cosine 1.000), so its")
    assert "(cleaning helps) says nothing of them" in why
    assert _cleaned(row) == (
        "cleaned: 2 dims of the `massive` set, 0 removed from the vector at layer 4"
    )


def test_a_search_s_trials_are_read_at_the_search_s_own_bar():
    """Its trials were kept or dropped at the search's bar, so its lines use that bar."""
    trials = pd.DataFrame(
        [
            {"layer": 12, "coefficient": c, "trait_delta": d, "coherence_mean": h}
            | {"state": "complete"}
            for c, d, h in ((0.2, 30.0, 90.0), (0.25, 40.0, 72.0), (0.3, 50.0, 60.0))
        ]
    )
    gap = pd.DataFrame([_gap_row("mean_diff")])
    searched = pd.DataFrame([_search_row(min_coherence=75.0, search_n=20)])
    key = ("m", "t", "prompt[-1]", "residual", "mean_diff")
    lines = answer_lines(gap, searched, NO_CURVE, 68.0, trials={key: trials})
    (line,) = [x for x in lines if "search-half trials" in x]
    assert line == (
        "    - search-half trials at layer 12 (3 trials of this study, n 20 each; not held out): "
        "best coherent "
        "delta +30.0 at 0.2 (coherence 90.00); coherence falls under 75 between 0.2 (coherence "
        "90.00, delta +30.0) and 0.25 (coherence 72.00, delta +40.0)"
    )


def test_two_searches_differing_only_in_component_keep_their_own_trials():
    def tried(layer: int) -> pd.DataFrame:
        row = {"coefficient": 0.2, "trait_delta": 30.0, "coherence_mean": 90.0}
        return pd.DataFrame([row | {"layer": layer, "state": "complete"}])

    searched = pd.DataFrame(
        [_search_row(component=c, min_coherence=68.0, search_n=20) for c in ("residual", "attn")]
    )
    key = ("m", "t", "prompt[-1]")
    trials = {(*key, "residual", "mean_diff"): tried(12), (*key, "attn", "mean_diff"): tried(3)}
    gap = pd.DataFrame([_gap_row("mean_diff")])
    lines = [x for x in answer_lines(gap, searched, NO_CURVE, 68.0, trials=trials)]
    said = [x.split(" (")[0] for x in lines if "search-half trials" in x]
    assert said == ["    - search-half trials at layer 12", "    - search-half trials at layer 3"]


def test_a_search_s_held_out_coherence_carries_its_interval():
    gap = pd.DataFrame([_gap_row("mean_diff")])
    row = _search_row(heldout_coherence_lo=60.123, heldout_coherence_hi=88.0)
    lines = answer_lines(gap, pd.DataFrame([row]), NO_CURVE, 68.0)
    assert (
        "    - held-out coherence 75.00 [60.12, 88.00] (3 of 20 answers under 68); "
        in "\n".join(lines)
    )


def test_a_held_out_half_read_for_earlier_searches_choices_is_said():
    """The search's log held held-out reads of other choices (an earlier study's): its
    figure is not a first look at those questions, and the page says so; none, nothing."""
    gap = pd.DataFrame([_gap_row("mean_diff")])
    earlier = "layer 12 coefficient 0.2333 (delta +55.0, coherence 65.17)"
    lines = answer_lines(
        gap, pd.DataFrame([_search_row(heldout_read_before=earlier)]), NO_CURVE, 68.0
    )
    said = (
        "    - the held-out half was read before, for other choices of earlier searches: "
        f"{earlier}; a search setting changed since (a margin, a range) may have been chosen "
        "knowing how they did, so this held-out figure is not a first look"
    )
    assert said in lines
    for none in ("", float("nan")):
        lines = answer_lines(
            gap, pd.DataFrame([_search_row(heldout_read_before=none)]), NO_CURVE, 68.0
        )
        assert not any("read before" in line for line in lines)


def test_a_norm_coefficient_gives_the_weight_it_stands_for():
    """A `norm` coefficient is relative to the layer's residual norm: the headline gives the
    weight on the unit vector too, to steer with it elsewhere; an absolute one is its
    weight, and a failed choice is no recommendation to port."""
    row = _gap_row("mean_diff", unit="norm", weight=28.688412)
    (_, steer, *_) = answer_lines(pd.DataFrame([row]), NO_SEARCH, NO_CURVE, 68.0)
    assert steer == (
        "  - **steer with `mean_diff` at prompt[-1], layer 12, coefficient 0.2** (`norm` "
        "units: a weight of 28.69 on the unit vector)"
    )
    for other in ({"unit": "absolute", "weight": 0.2}, {"unit": "norm", "weight": np.nan}):
        (_, steer, *_) = answer_lines(pd.DataFrame([row | other]), NO_SEARCH, NO_CURVE, 68.0)
        assert steer.endswith("coefficient 0.2**")
    (_, steer, *_) = answer_lines(
        pd.DataFrame([row | {"weight": "28.688412475585938+30.12345", "layer": "12+14"}]),
        NO_SEARCH,
        NO_CURVE,
        68.0,
    )
    assert steer.endswith("(`norm` units: a weight of 28.69+30.12 on each unit vector)")


def test_the_q_family_is_named_by_method_by_place_or_by_trait_and_counted_when_large():
    from steerops.report.answer import family, test_words

    row = {"model": "m", "trait": "t", "position": "p", "component": "residual"}
    row |= {"alias_of": "", "near_copy_of": "", "heldout_q": 0.01}
    gap = pd.DataFrame([row | {"method": "a"}, row | {"method": "b"}])
    assert family(gap) == ["`a`", "`b`"]
    # a near copy stands in for its twin and an alias has no q: neither is named
    copy = row | {"method": "a_cleaned", "near_copy_of": "a"}
    alias = row | {"method": "a_pre", "alias_of": "a", "heldout_q": None}
    assert family(pd.concat([gap, pd.DataFrame([copy, alias])])) == ["`a`", "`b`"]
    # cells at two positions: each where it is; two traits: the trait too
    apart = gap.assign(position=["p", "q"])
    assert family(apart) == ["`a` at p", "`b` at q"]
    assert family(apart.assign(trait=["t", "u"])) == ["`a` at p (t)", "`b` at q (u)"]
    # one cell on two models: the model tells them apart
    models = pd.DataFrame([row | {"method": "a"}, row | {"method": "a", "model": "n"}])
    assert family(models) == ["`a` at p (m)", "`a` at p (n)"]
    # a table without positions names the method alone
    assert family(apart.drop(columns="position").assign(trait=["t", "u"])) == [
        "`a` (t)",
        "`b` (u)",
    ]
    # the words: named up to four, counted beyond
    ok = SimpleNamespace(heldout_p=0.001, heldout_q=0.002, delta_lo=5.0, near_copy_of="")
    assert "over the report's 2 cells (`a`, `b`)" in test_words(ok, family(gap))
    four, five = [f"`{m}`" for m in "abcd"], [f"`{m}`" for m in "abcde"]
    assert "over the report's 4 cells (`a`, `b`, `c`, `d`)" in test_words(ok, four)
    assert "over the report's 5 cells (the gap analysis lists them)" in test_words(ok, five)
    assert "over the report's one cell;" in test_words(ok, ["`a`"]) + ";"
