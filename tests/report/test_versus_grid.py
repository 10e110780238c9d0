"""A search's choice against the grid's choice of its method, question by question on the
held-out half both answered: the paired differences against numpy, the settings that must
match, and the line and columns the report gives them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from report_data import synthetic_grid, write_params
from steering_data import baseline_entry, config_entry, settings_for, write_log
from steerops import stats
from steerops.cli import main
from steerops.config import load_params
from steerops.io import write_json
from steerops.report.load import (
    NOT_LOGGED,
    REBUILT,
    SEARCH_KEY,
    UNREADABLE,
    load_results,
    load_search_heldout,
    load_search_summaries,
)
from steerops.report.versus_grid import (
    COMPARED,
    NO_GRID_CHOICE,
    OTHER_SETTINGS,
    SAME_CONFIG,
    versus_columns,
    versus_grid,
    versus_words,
)
from steerops.search.store import search_dir


def _search(
    out,
    layer: float,
    coefficient: float,
    answers: dict,
    changes: dict | None = None,
    min_coherence: float = 68.0,
    md5: str = "md5",
) -> Path:
    """A finished mean_diff study whose choice answered the held-out questions `answers`
    ({question: (trait, coherence)}) under the grid's settings with `changes`, logged in
    the search's own results log as `steerops search` logs it; returns the log."""
    folder = search_dir(out, "toy/refusal", "instruct", "prompt[-1]", "residual", "mean_diff")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "trials.csv").write_text("number,layer,coefficient\n")
    questions = list(answers)
    settings = settings_for(questions, **(changes or {}))
    files = {"mean_diff|prompt[-1]|residual": md5}
    scores = [answers[q] for q in questions]
    entries = [
        baseline_entry(settings, questions, [(0.0, 100.0)] * len(questions)),
        config_entry(
            settings, "mean_diff", "prompt[-1]", layer, coefficient, scores, vector_files=files
        ),
    ]
    log = write_log(folder / "results.jsonl", entries)
    held = {"trait_delta": 60.0, "delta_lo": 40.0, "delta_hi": 80.0, "n": len(answers)}
    write_json(
        folder / "best.json",
        {
            "trait": "toy/refusal",
            "variant": "instruct",
            "method": "mean_diff",
            "position": "prompt[-1]",
            "component": "residual",
            "direction": "positive",
            "status": "ok",
            "feasible": True,
            "min_coherence": min_coherence,
            "n_trials": 6,
            "n_generations": {"total": 100},
            "chosen": {"trial": 1, "layer": layer, "coefficient": coefficient},
            "search": {"trait_delta": 70.0, "delta_lo": 50.0, "delta_hi": 90.0, "n": 20},
            "heldout": {
                **held,
                "coherence_mean": 80.0,
                "settings_hash": entries[0]["settings_hash"],
            },
        },
    )
    return log


def _versus(tmp_path, **blocks):
    params = load_params(write_params(tmp_path, **blocks))
    frame, searched = load_results(params), load_search_summaries(params)
    answers = load_search_heldout(params)
    versus = versus_grid(frame, searched, answers, SEARCH_KEY, 68, 0)
    return frame, pd.concat([searched, versus_columns(versus)], axis=1), versus


def _answers(heldout: list[str], seed: int = 3) -> dict:
    rng = np.random.default_rng(seed)
    return {q: (float(rng.choice([0, 100])), float(rng.uniform(50, 100))) for q in heldout}


def _grid_choice(frame, coefficient=1.5):
    return frame[
        (frame["method"] == "mean_diff")
        & (frame["layer"] == 2)
        & (frame["coefficient"] == coefficient)
    ].iloc[0]


def test_the_search_s_choice_minus_the_grid_s_question_by_question(tmp_path):
    _, heldout = synthetic_grid(tmp_path)
    answers = _answers(heldout)
    _search(tmp_path / "outputs", 2, 1.6, answers)
    frame, searched, [versus] = _versus(tmp_path)
    # the grid's mean_diff choice at the search's bar 68: layer 2, coefficient 1.5 (delta 70)
    assert (versus.state, versus.layer, versus.coefficient, versus.status) == (
        COMPARED,
        2,
        1.5,
        "ok",
    )
    grid = _grid_choice(frame)
    traits = np.array([answers[q][0] - grid["heldout_traits"][q] for q in heldout])
    cohs = np.array([answers[q][1] - grid["heldout_coherences"][q] for q in heldout])
    assert versus.trait.n == versus.coherence.n == len(heldout) == 20
    assert versus.trait.mean == pytest.approx(traits.mean())
    assert versus.coherence.mean == pytest.approx(cohs.mean())
    for got, diffs in ((versus.trait, traits), (versus.coherence, cohs)):
        # a percentile bootstrap of the mean (numpy, other draws) lands within a step of it
        rng = np.random.default_rng(11)
        means = diffs[rng.integers(0, len(diffs), size=(20000, len(diffs)))].mean(axis=1)
        lo, hi = np.quantile(means, [0.025, 0.975])
        step = np.ptp(diffs) / len(diffs)
        assert got.lo <= diffs.mean() <= got.hi
        assert got.lo <= lo + step and got.hi >= hi - step  # expanded for n: never narrower
    # as the search table's columns, and as the line under the search's answer
    row = searched.iloc[0]
    assert row["vs_grid"] == COMPARED and row["vs_grid_n"] == 20
    assert row["grid_coefficient"] == 1.5
    said = versus_words(row, 68)
    assert said.startswith(
        "against the grid's choice of `mean_diff` at coherence >= 68 (layer 2, coefficient "
        "1.5, **ok**), on the same 20 held-out questions (search - grid, paired): trait "
        + stats.interval_text(versus.trait.mean, versus.trait.lo, versus.trait.hi)
    )


def test_the_difference_is_of_the_scores_the_search_s_verdict_rests_on(tmp_path):
    """With one baseline under both, search - grid is the search's held-out delta minus
    the grid's (the baseline cancels): the log's scores, not a file beside it."""
    _, heldout = synthetic_grid(tmp_path)
    answers = _answers(heldout, seed=5)
    _search(tmp_path / "outputs", 2, 1.6, answers)
    frame, _, [versus] = _versus(tmp_path)
    grid = _grid_choice(frame)
    ours = np.mean([answers[q][0] for q in heldout]) - 0.0  # the baseline scores 0
    assert versus.trait.mean == pytest.approx(ours - grid["heldout_trait_delta"])


@pytest.mark.parametrize(
    ("moved", "verdict"),
    [
        (100.0, "the search's choice moves the trait further in the steering direction"),
        (0.0, "the grid's choice moves the trait further in the steering direction"),
    ],
)
def test_a_difference_beyond_the_interval_is_named(tmp_path, moved, verdict):
    _, heldout = synthetic_grid(tmp_path)
    # the grid's choice refused on 70% of the held-out questions; this one on all or none
    _search(tmp_path / "outputs", 2, 1.6, {q: (moved, 99.0) for q in heldout})
    _, searched, _ = _versus(tmp_path)
    said = versus_words(searched.iloc[0], 68)
    # coherence 99 against the grid's 80 on every question: an interval of no width
    assert ", coherence +19.0 [+19.0, +19.0] (every question gave the same delta" in said
    assert said.endswith(f": {verdict}; the search's choice is more coherent")


def test_no_difference_is_not_called_alike(tmp_path):
    _, heldout = synthetic_grid(tmp_path)
    frame = load_results(load_params(write_params(tmp_path)))
    grid = _grid_choice(frame)
    # the grid's own answers, but for two questions swapped between refusing and not
    answers = {q: (grid["heldout_traits"][q], grid["heldout_coherences"][q]) for q in heldout}
    up = next(q for q in heldout if answers[q][0] == 0)
    down = next(q for q in heldout if answers[q][0] == 100)
    answers[up], answers[down] = (100.0, answers[up][1]), (0.0, answers[down][1])
    _search(tmp_path / "outputs", 2, 1.6, answers)
    _, searched, versus = _versus(tmp_path)
    assert versus[0].trait.mean == 0 and versus[0].trait.lo < 0 < versus[0].trait.hi
    assert versus_words(searched.iloc[0], 68).endswith(
        ": no trait difference detected on these 20 questions (the interval spans zero: not "
        "evidence the two are alike)"
    )


def test_every_question_scored_alike_is_said_so(tmp_path):
    _, heldout = synthetic_grid(tmp_path)
    frame = load_results(load_params(write_params(tmp_path)))
    grid = _grid_choice(frame)
    _search(tmp_path / "outputs", 2, 1.6, {q: (grid["heldout_traits"][q], 90.0) for q in heldout})
    _, searched, _ = _versus(tmp_path)
    said = versus_words(searched.iloc[0], 68)
    assert said.endswith(
        ": no trait difference on these 20 questions: each scored alike under both; the "
        "search's choice is more coherent"
    )


# the log helper's trait mean of an entry whose answers have no trait score
@pytest.mark.filterwarnings("ignore:Mean of empty slice", "ignore:invalid value encountered")
def test_no_trait_score_on_either_side_compares_nothing(tmp_path):
    _, heldout = synthetic_grid(tmp_path)
    _search(tmp_path / "outputs", 2, 1.6, {q: (None, 90.0) for q in heldout})
    _, searched, [versus] = _versus(tmp_path)
    assert versus.trait.n == 0
    said = versus_words(searched.iloc[0], 68)
    assert said.endswith(": no held-out question has a trait score from both, nothing compared")


def test_a_margin_the_search_chose_at_is_named(tmp_path):
    _, heldout = synthetic_grid(tmp_path)
    log = _search(tmp_path / "outputs", 2, 1.6, _answers(heldout))
    best = _best(log)
    write_json(log.parent / "best.json", {**best, "coherence_margin": 10.0})
    _, searched, _ = _versus(tmp_path)
    assert versus_words(searched.iloc[0], 68).startswith(
        "against the grid's choice of `mean_diff` at coherence >= 68 (layer 2, coefficient "
        "1.5, **ok**; the search chose at >= 78 on its half), on the same 20 held-out"
    )


def test_the_grid_is_chosen_at_the_search_s_bar(tmp_path):
    _, heldout = synthetic_grid(tmp_path)
    # at coherence >= 50 the grid's mean_diff choice is 2.0 (delta 90, coherence 50)
    _search(tmp_path / "outputs", 2, 1.6, _answers(heldout), min_coherence=50.0)
    _, searched, [versus] = _versus(tmp_path)
    assert (versus.layer, versus.coefficient) == (2, 2.0)
    assert "the grid's choice of `mean_diff` at coherence >= 50 (layer 2, coefficient 2," in (
        versus_words(searched.iloc[0], 50)
    )
    # no grid config reaches the bar: said so, the search's choice has nothing to beat
    _search(tmp_path / "outputs", 2, 1.6, _answers(heldout), min_coherence=99.5)
    _, searched, [versus] = _versus(tmp_path)
    assert versus.state == NO_GRID_CHOICE and versus.status == "needs finer coefficients"
    assert versus_words(searched.iloc[0], 99.5) == (
        "the grid of `mean_diff` chose nothing at coherence >= 99.5 (**needs finer "
        "coefficients**): the search's choice has no grid choice to beat"
    )


def test_the_same_config_other_settings_or_rebuilt_vectors_compare_nothing(tmp_path):
    _, heldout = synthetic_grid(tmp_path)
    # the search chose the grid's own choice: nothing to compare, said so
    _search(tmp_path / "outputs", 2, 1.5, _answers(heldout))
    _, searched, [versus] = _versus(tmp_path)
    assert versus.state == SAME_CONFIG and versus.trait is None
    assert versus_words(searched.iloc[0], 68) == (
        "the same config as the grid's choice of `mean_diff` at coherence >= 68 (layer 2, "
        "coefficient 1.5, **ok**): searching found nothing past it"
    )
    # scored under other settings (another generation length): no pair
    log = _search(tmp_path / "outputs", 2, 1.6, _answers(heldout), {"max_new_tokens": 48})
    _, searched, [versus] = _versus(tmp_path)
    assert versus.state == OTHER_SETTINGS
    assert versus_words(searched.iloc[0], 68).startswith(
        "not compared with the grid's choice of `mean_diff`: the grid was scored under other "
        "settings"
    )
    # measured with vectors rebuilt since (a later entry of the log names their new md5)
    log.unlink()
    log = _search(tmp_path / "outputs", 2, 1.6, _answers(heldout), md5="old")
    settings = settings_for(heldout)
    newer = config_entry(
        settings,
        "mean_diff",
        "prompt[-1]",
        2,
        0.4,
        [(0.0, 99.0)] * 20,
        vector_files={"mean_diff|prompt[-1]|residual": "new"},
    )
    write_log(log, [newer])
    _, searched, [versus] = _versus(tmp_path)
    assert versus.state == REBUILT
    assert versus_words(searched.iloc[0], 68) == (
        "not compared with the grid's choice of `mean_diff`: its choice was measured with "
        "vectors (or a unit) rebuilt since (a rerun of the search measures it again)"
    )
    # a grid that never steered the method: no line at all
    log.unlink()
    _search(tmp_path / "outputs", 2, 1.6, _answers(heldout))
    params = load_params(write_params(tmp_path))
    _, searched, versus = _versus(tmp_path)
    spec = {"probe": ([5, 30, 60, 95], [99, 95, 85, 70])}
    other = tmp_path / "other"
    synthetic_grid(other, spec)
    answers = load_search_heldout(params)
    assert answers and all(not a.missing for a in answers.values())
    assert versus_grid(
        load_results(load_params(write_params(other))), searched, answers, SEARCH_KEY, 68, 0
    ) == [None]


def _best(log):
    return json.loads((log.parent / "best.json").read_text())


@pytest.mark.parametrize(
    "damage", ["no log", "other coefficient", "other weight", "no coefficient"]
)
def test_a_choice_the_log_does_not_hold_is_said_so(tmp_path, damage):
    _, heldout = synthetic_grid(tmp_path)
    log = _search(tmp_path / "outputs", 2, 1.6, _answers(heldout))
    best = _best(log)
    if damage == "no log":
        log.unlink()
    elif damage == "other coefficient":
        best["chosen"]["coefficient"] = 1.7
    elif damage == "other weight":  # the log's entry steered 16 (1.6 x 10 per unit)
        best["chosen"]["weight"] = 24.0
    else:  # a damaged best.json: said, not a traceback
        best["chosen"]["coefficient"] = None
    write_json(log.parent / "best.json", best)
    _, searched, [versus] = _versus(tmp_path)
    assert versus.state == NOT_LOGGED
    assert versus_words(searched.iloc[0], 68) == (
        "not compared with the grid's choice of `mean_diff`: its results log holds no scored "
        "held-out entry of the choice"
    )
    best["chosen"]["weight"] = 16.0  # the weight it steered: matched
    best["chosen"]["layer"], best["chosen"]["coefficient"] = 2, 1.6
    write_json(log.parent / "best.json", best)
    if damage != "no log":
        assert _versus(tmp_path)[2][0].state == COMPARED


def test_a_grid_the_judge_never_scored_is_not_beaten(tmp_path):
    spec = {"mean_diff": ([10, 40, 70, 90], [95, 90, 80, 50])}
    synthetic_grid(tmp_path, spec)
    row = {
        "method": "mean_diff",
        "vs_grid": NO_GRID_CHOICE,
        "grid_status": stats.UNSCORED,
    }
    assert versus_words(row, 68) == (
        "not compared with the grid's choice of `mean_diff`: the grid has none at coherence "
        ">= 68 (**trait unscored**: the judge scored none of its configs)"
    )
    row["grid_status"] = stats.BASELINE_INCOHERENT
    assert versus_words(row, 68).endswith("the search's choice has no grid choice to beat")


@pytest.mark.parametrize("text", [b"{not json\n", b"\xff\xfe not utf-8\n"])
def test_an_unreadable_search_log_is_said_and_the_report_still_written(tmp_path, capsys, text):
    _, heldout = synthetic_grid(tmp_path)
    log = _search(tmp_path / "outputs", 2, 1.6, _answers(heldout))
    log.write_bytes(text)
    params = write_params(tmp_path)
    assert main(["report", "--params", str(params)]) == 0
    [warning] = [line for line in capsys.readouterr().err.splitlines() if str(log) in line]
    assert warning.startswith("steerops report: warning: ")
    assert f"the search is not compared with the grid (repair or remove {log}" in warning
    assert f"`steerops search --params {params} --pipeline` then scores its choice" in warning
    row = pd.read_csv(tmp_path / "reports" / "search_heldout.csv").iloc[0]
    assert row["vs_grid"] == UNREADABLE and pd.isna(row["vs_grid_n"])


def test_the_report_gives_the_comparison_in_its_table_and_its_answer(tmp_path):
    _, heldout = synthetic_grid(tmp_path)
    _search(tmp_path / "outputs", 2, 1.6, {q: (100.0, 99.0) for q in heldout})
    assert main(["report", "--params", str(write_params(tmp_path))]) == 0
    searched = pd.read_csv(tmp_path / "reports" / "search_heldout.csv")
    row = searched.iloc[0]
    assert (row["grid_layer"], row["grid_coefficient"], row["grid_status"]) == (2, 1.5, "ok")
    assert row["vs_grid_n"] == 20 and row["vs_grid_trait_delta"] == pytest.approx(30.0)
    report = (tmp_path / "reports" / "report.md").read_text()
    assert "against the grid's choice of `mean_diff` at coherence >= 68 (layer 2," in report
    # counted for `dvc metrics diff`: refusing on all 20 beats the grid's 14 of 20
    metrics = json.loads((tmp_path / "reports" / "metrics.json").read_text())
    assert row["vs_grid_trait_delta_lo"] > 0
    assert metrics["searches_vs_grid_compared"] == metrics["searches_beating_grid"] == 1
    assert metrics["searches_beaten_by_grid"] == 0
    assert "vs_grid_trait_delta [95% CI]" in report  # one column with its interval
