"""The toy world's probe data is seeded and planted as documented."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from steerops.io import read_json, read_jsonl
from steerops.probes.toy_data import write_toy_probe_data


def test_toy_data_is_seeded_and_planted_as_documented(tmp_path):
    a, b = write_toy_probe_data(tmp_path / "a", seed=3), write_toy_probe_data(tmp_path / "b", 3)
    for name in (
        "tasks.jsonl",
        "scores.csv",
        "comparisons.jsonl",
        "conditions.json",
        "rates.csv",
        "confounds.csv",
    ):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    planted = read_json(a / "planted.json")
    tasks = read_jsonl(a / "tasks.jsonl")
    mu = {r["task_id"]: float(r["mu"]) for r in csv.DictReader(open(a / "scores.csv"))}
    residual = [
        mu[t["task_id"]]
        + planted["HARM_WEIGHT"] * t["harmful"]
        - planted["VERB_WEIGHT"] * planted["verb_offset"][t["verb"]]
        for t in tasks
    ]
    assert np.std(residual) == pytest.approx(planted["NOISE"], rel=0.2)
    assert 0.3 < np.mean([t["harmful"] for t in tasks]) < 0.4
    rates = list(csv.DictReader(open(a / "rates.csv")))
    conditions = json.loads((a / "conditions.json").read_text())
    assert {r["condition_id"] for r in rates} == {"baseline"} | {
        c["id"] for c in conditions["conditions"]
    }


def test_toy_data_is_written_as_one_set_and_never_over_other_files(tmp_path, monkeypatch):
    """A write that fails part way leaves the previous seed's set whole (not files of two
    seeds side by side), and a folder holding files it does not write is refused."""
    from steerops.errors import SteeropsError
    from steerops.probes import toy_data

    folder = write_toy_probe_data(tmp_path, seed=1)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert sorted(before) == sorted(toy_data.TOY_PROBE_FILES)

    def full_disk(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(toy_data, "_rates", full_disk)  # after three files of seed 2 are written
    with pytest.raises(OSError, match="disk full"):
        write_toy_probe_data(tmp_path, seed=2)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    monkeypatch.undo()

    (folder / "mine.csv").write_text("kept\n")
    with pytest.raises(SteeropsError, match=r"holds mine.csv, which probe toy-data does not"):
        write_toy_probe_data(tmp_path, seed=2)
    assert (folder / "mine.csv").read_text() == "kept\n"
