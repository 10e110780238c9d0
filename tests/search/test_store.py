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
