"""A search's choice against the grid's choice of its method, question by question on the
held-out half both answered: the paired differences against numpy, the settings that must
match, and the line and columns the report gives them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from report_data import QUESTIONS, synthetic_grid, write_params
from steering_data import settings_for
from steerops import stats
from steerops.cli import main
from steerops.config import load_params
from steerops.io import write_json, write_jsonl
from steerops.report.load import (
    SEARCH_KEY,
    load_results,
    load_search_heldout,
    load_search_summaries,
)
from steerops.report.versus_grid import versus_columns, versus_grid, versus_words
from steerops.search.store import HELDOUT_FILE, search_dir
from steerops.steering.store import scope_of

GRID_SCOPE = scope_of(settings_for(QUESTIONS))  # the synthetic grid's settings, questions aside


def _search(out, layer: float, coefficient: float, answers: dict, scope: str = GRID_SCOPE):
    """A finished mean_diff study whose choice answered the held-out questions `answers`
    ({question: (trait, coherence)}), scored under `scope`."""
    folder = search_dir(out, "toy/refusal", "instruct", "prompt[-1]", "residual", "mean_diff")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "trials.csv").write_text("number,layer,coefficient\n")
    rows = [
        {"question": q, "response": "r", "trait": t, "coherence": c}
        for q, (t, c) in answers.items()
    ]
    write_jsonl(folder / HELDOUT_FILE, rows)
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
            "n_trials": 6,
            "n_generations": {"total": 100},
            "chosen": {"trial": 1, "layer": layer, "coefficient": coefficient},
            "search": {"trait_delta": 70.0, "delta_lo": 50.0, "delta_hi": 90.0, "n": 20},
            "heldout": {**held, "coherence_mean": 80.0, "scope": scope},
        },
    )


def _versus(tmp_path):
    params = load_params(write_params(tmp_path))
    frame, searched = load_results(params), load_search_summaries(params)
    heldout = load_search_heldout(params)
    return frame, searched, versus_grid(frame, searched, heldout, SEARCH_KEY, 68, 0)


def _answers(heldout: list[str], seed: int = 3) -> dict:
    rng = np.random.default_rng(seed)
    return {q: (float(rng.choice([0, 100])), float(rng.uniform(50, 100))) for q in heldout}


def test_the_search_s_choice_minus_the_grid_s_question_by_question(tmp_path):
    _, heldout = synthetic_grid(tmp_path)
    answers = _answers(heldout)
    _search(tmp_path / "outputs", 2, 1.6, answers)
    frame, searched, [versus] = _versus(tmp_path)
    # the grid's mean_diff choice at the bar 68: layer 2, coefficient 1.5 (delta 70)
    assert (versus.layer, versus.coefficient, versus.status) == (2, 1.5, "ok")
    grid = frame[
        (frame["method"] == "mean_diff") & (frame["layer"] == 2) & (frame["coefficient"] == 1.5)
    ].iloc[0]
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
    row = pd.concat([searched, versus_columns([versus])], axis=1).iloc[0]
    assert row["vs_grid_n"] == 20 and row["grid_coefficient"] == 1.5
    said = versus_words(row, "mean_diff")
    assert said.startswith(
        "against the grid's choice of `mean_diff` (layer 2, coefficient 1.5, **ok**), on the "
        "same 20 held-out questions (search - grid, paired): trait "
        + stats.interval_text(versus.trait.mean, versus.trait.lo, versus.trait.hi)
    )


@pytest.mark.parametrize(
    ("moved", "verdict"),
    [
        (100.0, "the search's choice moves the trait more"),
        (0.0, "the grid's choice moves the trait more"),
    ],
)
def test_a_difference_beyond_the_interval_is_named(tmp_path, moved, verdict):
    _, heldout = synthetic_grid(tmp_path)
    # the grid's choice refused on 70% of the held-out questions; this one on all or none
    _search(tmp_path / "outputs", 2, 1.6, {q: (moved, 99.0) for q in heldout})
    _, searched, versus = _versus(tmp_path)
    row = pd.concat([searched, versus_columns(versus)], axis=1).iloc[0]
    said = versus_words(row, "mean_diff")
    assert said.endswith(f": {verdict}; the search's choice is more coherent")


def test_no_difference_is_said_so(tmp_path):
    _, heldout = synthetic_grid(tmp_path)
    frame = load_results(load_params(write_params(tmp_path)))
    grid = frame[
        (frame["method"] == "mean_diff") & (frame["layer"] == 2) & (frame["coefficient"] == 1.5)
    ].iloc[0]
    # the grid's own answers, but for two questions swapped between refusing and not
    answers = {q: (grid["heldout_traits"][q], grid["heldout_coherences"][q]) for q in heldout}
    up = next(q for q in heldout if answers[q][0] == 0)
    down = next(q for q in heldout if answers[q][0] == 100)
    answers[up], answers[down] = (100.0, answers[up][1]), (0.0, answers[down][1])
    _search(tmp_path / "outputs", 2, 1.6, answers)
    _, searched, versus = _versus(tmp_path)
    assert versus[0].trait.mean == 0 and versus[0].trait.lo < 0 < versus[0].trait.hi
    row = pd.concat([searched, versus_columns(versus)], axis=1).iloc[0]
    assert versus_words(row, "mean_diff").endswith(
        ": no detectable trait difference: searching bought no trait over the grid"
    )


def test_the_same_config_other_settings_or_no_choice_compare_nothing(tmp_path):
    _, heldout = synthetic_grid(tmp_path)
    # the search chose the grid's own choice: nothing to compare, said so
    _search(tmp_path / "outputs", 2, 1.5, _answers(heldout))
    _, searched, [versus] = _versus(tmp_path)
    assert versus.trait is None and versus.coherence is None
    row = pd.concat([searched, versus_columns([versus])], axis=1).iloc[0]
    assert versus_words(row, "mean_diff") == (
        "the same config as the grid's choice of `mean_diff` (layer 2, coefficient 1.5, "
        "**ok**): searching found nothing past it"
    )
    # scored under other settings (another judge, max_new_tokens...): no pair, no line
    _search(tmp_path / "outputs", 2, 1.6, _answers(heldout), scope="another-scope")
    _, searched, versus = _versus(tmp_path)
    assert versus == [None]
    row = pd.concat([searched, versus_columns(versus)], axis=1).iloc[0]
    assert versus_words(row, "mean_diff") is None


def test_the_report_gives_the_comparison_in_its_table_and_its_answer(tmp_path):
    _, heldout = synthetic_grid(tmp_path)
    _search(tmp_path / "outputs", 2, 1.6, {q: (100.0, 99.0) for q in heldout})
    assert main(["report", "--params", str(write_params(tmp_path))]) == 0
    searched = pd.read_csv(tmp_path / "reports" / "search_heldout.csv")
    row = searched.iloc[0]
    assert (row["grid_layer"], row["grid_coefficient"], row["grid_status"]) == (2, 1.5, "ok")
    assert row["vs_grid_n"] == 20 and row["vs_grid_trait_delta"] == pytest.approx(30.0)
    report = (tmp_path / "reports" / "report.md").read_text()
    assert "against the grid's choice of `mean_diff` (layer 2, coefficient 1.5, **ok**)" in report
    assert "vs_grid_trait_delta [95% CI]" in report  # one column with its interval
