"""The search store: trials.csv round trips."""

from __future__ import annotations

import csv
import math

from synthetic import record

from steerops.search.store import write_trials_csv


def test_trials_csv_round_trips(tmp_path):
    records = [record(1, 40.0, 90.0), record(0, 70.0, 50.0)]
    write_trials_csv(tmp_path / "trials.csv", records)
    rows = list(csv.DictReader((tmp_path / "trials.csv").open()))
    assert [int(r["number"]) for r in rows] == [0, 1]
    assert [r["feasible"] for r in rows] == ["False", "True"]
    assert math.isclose(float(rows[1]["trait_delta"]), 40.0)
    assert rows[1]["delta_lo"] == rows[1]["delta_hi"] == ""  # no interval given: blank
    write_trials_csv(tmp_path / "trials.csv", records, {1: (25.0, 55.0)})
    rows = list(csv.DictReader((tmp_path / "trials.csv").open()))
    assert (rows[1]["delta_lo"], rows[1]["delta_hi"]) == ("25.0", "55.0")
    assert rows[0]["delta_lo"] == ""


def test_a_best_json_of_the_wrong_shape_is_one_line_naming_it(tmp_path):
    """The report and the search summary read every study's best.json: one they cannot read
    (hand-edited, cut short by another tool) is one line naming the file and the key."""
    import json

    import pytest

    from steerops.errors import SteeropsError
    from steerops.search.store import search_dir, searches

    folder = search_dir(tmp_path, "t/x", "instruct", "prompt[-1]", "residual", "mean_diff")
    folder.mkdir(parents=True)
    (folder / "trials.csv").write_text("number\n")
    good = {
        "trait": "t/x",
        "variant": "instruct",
        "method": "mean_diff",
        "position": "prompt[-1]",
        "component": "residual",
        "status": "ok",
        "feasible": True,
        "chosen": None,
        "search": None,
        "heldout": None,
        "n_trials": 3,
        "n_generations": {"total": 10},
    }
    (folder / "best.json").write_text(json.dumps(good))
    assert searches(tmp_path)[0][1] == good
    for bad, key in [
        ([good], "a JSON object"),
        ({k: v for k, v in good.items() if k != "n_trials"}, "n_trials"),
        ({**good, "n_generations": None}, "n_generations"),
        ({**good, "n_generations": {}}, "n_generations"),
        ({**good, "chosen": [1]}, "chosen"),
        ({**good, "heldout": "x"}, "heldout"),
        ({**good, "trait": 3}, "trait"),
    ]:
        (folder / "best.json").write_text(json.dumps(bad))
        with pytest.raises(SteeropsError) as err:
            searches(tmp_path)
        assert "best.json" in str(err.value) and key in str(err.value), key
        assert "\n" not in str(err.value)


def test_an_old_best_json_claiming_ok_on_too_few_questions_reads_too_few():
    """A best.json written before the "too few held out" verdict kept `ok` on 4 held-out
    questions until the search reran; read now, it says too few (and an ok on enough
    questions stays ok)."""
    from steerops import stats
    from steerops.search.store import best_row

    best = {
        **dict.fromkeys("trait variant method position component".split(), ""),
        "status": stats.OK,
        "feasible": True,
        "n_trials": 8,
        "n_generations": {"total": 40},
        "heldout": {"n": 4, "trait_delta": 60.0, "delta_lo": 10.0, "delta_hi": 90.0},
    }
    assert best_row(best)["status"] == stats.TOO_FEW
    best["heldout"]["n"] = stats.MIN_HELDOUT
    assert best_row(best)["status"] == stats.OK
