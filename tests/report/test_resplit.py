"""The report's choice made again on other splits of the same questions, checked against
the whole report run with each of those split seeds."""

from __future__ import annotations

import pandas as pd
import pytest

from report_data import QUESTIONS, write_params
from steering_data import write_grid
from steerops.cli import main
from steerops.config import load_params
from steerops.io import read_json
from steerops.report import tables
from steerops.report.load import load_results
from steerops.report.resplit import THIS, Resplit, resplit, resplit_words

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
        "this config on 15, layer 8, coefficient 0.2 on 3, nothing on 2; the choice was ok "
        "held out on 14 of 18, held-out delta from +10.0 to +55.0 (median +40.0)"
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
    assert metrics["resplits"] == 5 and 0 <= metrics["resplits_same_config"] <= 5
    params = write_params(tmp_path, report={"results": "docs/results.md", "resplits": 0})
    assert main(["report", "--params", str(params)]) == 0
    assert "other splits" not in (tmp_path / "docs" / "results.md").read_text()
    assert read_json(tmp_path / "reports" / "metrics.json")["resplits"] == 0


def test_a_frame_without_per_question_scores_has_no_resplit():
    frame = pd.DataFrame([{"model": "m", "trait": "t", "alias_of": ""}])
    assert resplit(frame, pd.Series({"model": "m", "trait": "t"}), 68, 0.5, 0, 5) is None
