"""The report's choice made again on other splits of the same questions, checked against
the whole report run with each of those split seeds."""

from __future__ import annotations

import random

import pandas as pd
import pytest

from report_data import QUESTIONS, write_params
from steering_data import (
    baseline_entry,
    cell_log,
    config_entry,
    settings_for,
    write_grid,
    write_log,
)
from steerops import stats
from steerops.cli import main
from steerops.config import load_params
from steerops.io import read_json
from steerops.report import tables
from steerops.report.load import load_results
from steerops.report.resplit import (
    _HALF_KEYS,
    THIS,
    Resplit,
    _AtSplit,
    _words,
    resplit,
    resplit_words,
)

# (layer, coefficient, selection refusal fraction, held-out fraction, coherence) under the
# seed-0 split: the fractions differ by half, so another split mixes them and may choose
# the other method, another coefficient, or nothing
CELLS = {
    ("mean_diff", "prompt[-1]"): [
        (2, 1.0, 0.9, 0.3, 90.0),
        (2, 1.5, 0.6, 0.6, 80.0),
        (2, 2.0, 0.95, 0.95, 50.0),  # incoherent everywhere
        (2, 0.0, 0.0, 0.0, 100.0),
    ],
    ("probe", "prompt[-1]"): [(2, 1.0, 0.45, 0.8, 90.0), (2, 0.0, 0.0, 0.0, 100.0)],
    ("random_baseline", "prompt[-1]"): [(2, 1.0, 0.05, 0.0, 95.0), (2, 0.0, 0.0, 0.0, 100.0)],
}


def _grid(tmp_path) -> None:
    write_grid(tmp_path / "outputs", CELLS, QUESTIONS)


def _choice(tmp_path, seed: int):
    params = load_params(write_params(tmp_path, seed=seed))
    frame = load_results(params)
    return frame, tables.selection_choice(tables.gap_analysis(frame, 68, seed))


def _config(row) -> tuple:
    return (row["method"], str(row["layer"]), float(row["coefficient"]))


def test_each_split_s_choice_is_the_report_s_choice_at_that_seed(tmp_path):
    _grid(tmp_path)
    frame, choice = _choice(tmp_path, 0)
    r = resplit(frame, choice, 68, 0.5, 0, 6)
    # the reference: the whole report's choice with params' seed set to each split's
    want, oks, deltas = [], 0, []
    for seed in range(1, 7):
        _, other = _choice(tmp_path, seed)
        want.append(None if other is None else _config(other))
        if other is not None:
            oks += other["status"] == "ok"
            deltas.append(float(other["delta"]))
    assert len(set(want)) > 1  # the splits disagree, or this test shows nothing
    got = dict(r.chosen)
    assert got.get(THIS, 0) == want.count(_config(choice)) == r.same_config
    assert r.nothing == want.count(None)
    assert sum(got.values()) + r.nothing == r.splits == 6 and r.first_seed == 1
    assert r.ok == oks and sorted(r.deltas) == pytest.approx(sorted(deltas))


def test_the_main_seed_gives_back_the_report_s_own_choice(tmp_path):
    _grid(tmp_path)
    frame, choice = _choice(tmp_path, 3)
    r = resplit(frame, choice, 68, 0.5, 2, 1)  # one split, drawn with seed 3
    assert r.chosen == ((THIS, 1),) and r.nothing == 0
    assert r.ok == (choice["status"] == "ok") and r.deltas == pytest.approx((choice["delta"],))


def test_the_words_name_each_choice_and_the_spread_of_its_held_out_delta():
    r = Resplit(20, 1, ((THIS, 15), ("layer 8, coefficient 0.2", 3)), 2, 14, (10.0, 55.0, 40.0))
    assert resplit_words(r) == (
        "on 20 other splits of the same questions (seeds 1-20), the selection half chose "
        "this config on 15, layer 8, coefficient 0.2 on 3, nothing on 2; the split's choice "
        "was ok held out on 14 of 18, its held-out delta (of 3), ok or not, from +10.0 to +55.0 "
        "(median "
        "+40.0) (the splits share their questions: how much the choice owes to the draw, not "
        "replications)"
    )
    assert resplit_words(None) is None


def test_the_report_says_it_and_records_it_and_none_are_asked_of_it_at_zero(tmp_path):
    _grid(tmp_path)
    params = write_params(tmp_path, report={"results": "docs/results.md", "resplits": 5})
    assert main(["report", "--params", str(params)]) == 0
    text = (tmp_path / "docs" / "results.md").read_text()
    [line] = [x for x in text.splitlines() if "other splits of the same questions" in x]
    assert line.startswith("    - on 5 other splits of the same questions (seeds 1-5), ")
    metrics = read_json(tmp_path / "reports" / "metrics.json")
    frame, choice = _choice(tmp_path, 0)
    r = resplit(frame, choice, 68, 0.5, 0, 5)
    assert metrics["resplits"] == 5
    assert (metrics["resplits_same_config"], metrics["resplits_ok"]) == (r.same_config, r.ok)
    assert r.same_config < 5  # not every split: a count that could be another
    params = write_params(tmp_path, report={"results": "docs/results.md", "resplits": 0})
    assert main(["report", "--params", str(params)]) == 0
    assert "other splits" not in (tmp_path / "docs" / "results.md").read_text()
    assert read_json(tmp_path / "reports" / "metrics.json")["resplits"] == 0


def test_a_frame_without_per_question_scores_has_no_resplit():
    frame = pd.DataFrame([{"model": "m", "trait": "t", "alias_of": ""}])
    assert resplit(frame, pd.Series({"model": "m", "trait": "t"}), 68, 0.5, 0, 5) is None


def _noisy_grid(tmp_path, direction: str, coherence_range=(55, 95)) -> None:
    """Three cells of random per-question scores: a tenth of the traits and a twentieth of
    the coherences unscored, two questions asked twice, `mean_diff_cleaned` an alias of
    `mean_diff` (the same vectors, other scores)."""
    rng = random.Random(5)
    questions = [f"question {i}" for i in range(24)] + ["question 3", "question 7"]
    settings = settings_for(questions, direction=direction)
    plain, moved = (100.0, 0.0) if direction == "negative" else (0.0, 100.0)
    base = [(plain, rng.uniform(80, 100)) for _ in questions]
    for method in ("mean_diff", "probe", "mean_diff_cleaned"):
        entries = [baseline_entry(settings, questions, base)]
        for layer in (2, 4):
            for coef in (0.5, 1.0, 1.5):
                level, coherence = rng.uniform(0, 0.7), rng.uniform(*coherence_range)
                scores = [
                    (
                        None if rng.random() < 0.1 else moved if rng.random() < level else plain,
                        None if rng.random() < 0.05 else min(100, max(0, rng.gauss(coherence, 15))),
                    )
                    for _ in questions
                ]
                same = "mean_diff" if method == "mean_diff_cleaned" else method
                entry = config_entry(
                    settings, method, "prompt[-1]", layer, coef, base, f"{same}-{layer}"
                )
                entry["scores"] = [list(x) for x in scores]  # with the unscored ones
                entries.append(entry)
        write_log(cell_log(tmp_path / "outputs", method, "prompt[-1]"), entries)


def _frame(tmp_path, seed: int, direction: str, fraction: float):
    params = write_params(
        tmp_path,
        seed=seed,
        steering={"direction": direction},
        search={"heldout_fraction": fraction},
    )
    return load_results(load_params(params))


@pytest.mark.parametrize("direction", ["negative", "positive"])
def test_every_number_of_a_split_is_config_rows_at_that_seed(tmp_path, direction):
    """Field by field, each config's numbers on another split are the ones the results
    logs give when the params' seed is that split's (sign, unscored answers, repeated
    questions and a held-out fraction other than half included)."""
    _noisy_grid(tmp_path, direction)
    rows = _frame(tmp_path, 0, direction, 0.4).to_dict("records")
    assert any(r["alias_of"] for r in rows)
    keys = [k for k in _HALF_KEYS if not k.endswith("_p")] + ["selection_baseline_coherence"]
    for seed in (1, 2, 3):
        wanted = _frame(tmp_path, seed, direction, 0.4).to_dict("records")
        assert len(wanted) == len(rows) == 3 * 6
        for row, want in zip(rows, wanted, strict=True):
            assert (row["method"], row["layer"], row["coefficient"]) == (
                want["method"],
                want["layer"],
                want["coefficient"],
            )
            halves = stats.split_questions(list(row["scores"]), 0.4, seed)
            got = _AtSplit(row, halves, seed)
            for k in keys:
                if want[k] is None or want[k] != want[k]:  # None, or NaN in the frame
                    assert got[k] is None, (seed, k)
                else:
                    assert got[k] == pytest.approx(want[k], rel=1e-12), (seed, k)


@pytest.mark.parametrize("direction", ["negative", "positive"])
def test_the_tally_is_the_report_rerun_at_each_seed_on_noisy_scores(tmp_path, direction):
    _noisy_grid(tmp_path, direction)
    frame = _frame(tmp_path, 0, direction, 0.4)
    choice = tables.selection_choice(tables.gap_analysis(frame, 68, 0))
    assert choice is not None
    r = resplit(frame, choice, 68, 0.4, 0, 5)
    words, ok, deltas = [], 0, []
    for seed in range(1, 6):
        other = _frame(tmp_path, seed, direction, 0.4)
        picked = tables.selection_choice(tables.gap_analysis(other, 68, seed))
        words.append(_words(picked, choice))
        if picked is not None:
            ok += picked["status"] == "ok"
            if picked["delta"] == picked["delta"]:
                deltas.append(float(picked["delta"]))
    got = dict(r.chosen) | ({"nothing": r.nothing} if r.nothing else {})
    assert got == {w: words.count(w) for w in set(words)}
    assert r.ok == ok and sorted(r.deltas) == pytest.approx(sorted(deltas))


def test_cells_tied_on_the_selection_delta_go_to_the_more_coherent():
    """Between cells, as within one: the larger selection delta, then the more coherent,
    then the table's order."""
    row = {"alias_of": "", "status": "ok", "selection_delta": 50.0, "selection_delta_lo": 20.0}
    gap = pd.DataFrame(
        [row | {"method": "a", "selection_coherence": 80.0}]
        + [row | {"method": "b", "selection_coherence": 90.0}]
        + [row | {"method": "c", "selection_coherence": 90.0}]
    )
    assert tables.selection_choice(gap)["method"] == "b"
    gap.loc[0, "selection_delta"] = 55.0
    assert tables.selection_choice(gap)["method"] == "a"


def test_a_near_copy_chosen_at_this_config_is_named_as_one():
    choice = pd.Series(
        {"model": "m", "trait": "t", "position": "p", "component": "residual"}
        | {"method": "mean_diff", "layer": 12, "coefficient": 0.2}
    )
    twin = choice.copy()
    twin["method"] = "mean_diff_cleaned"
    near = frozenset({"mean_diff_cleaned"})
    assert _words(twin, choice, near) == "its near copy `mean_diff_cleaned` at this config"
    assert _words(twin, choice) == "`mean_diff_cleaned` at p (layer 12, coefficient 0.2)"
    twin["coefficient"] = 0.25
    assert _words(twin, choice, near).startswith("`mean_diff_cleaned` at p (layer 12")


def test_only_splits_whose_choice_is_ok_held_out_count_as_ok(tmp_path):
    """Coherence near the bar: some splits choose a config coherent on their selection half
    and not on their held-out half ("incoherent held out"), others one with no effect;
    `ok` counts the splits whose choice is ok held out, the report rerun at each seed."""
    _noisy_grid(tmp_path, "positive", coherence_range=(62, 76))
    frame = _frame(tmp_path, 0, "positive", 0.4)
    choice = tables.selection_choice(tables.gap_analysis(frame, 68, 0))
    r = resplit(frame, choice, 68, 0.4, 0, 8)
    statuses = []
    for seed in range(1, 9):
        other = _frame(tmp_path, seed, "positive", 0.4)
        picked = tables.selection_choice(tables.gap_analysis(other, 68, seed))
        statuses.append(None if picked is None else picked["status"])
    assert {stats.OK, stats.NO_EFFECT, stats.INCOHERENT} <= set(statuses)
    assert r.ok == statuses.count(stats.OK)
