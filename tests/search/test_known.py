"""Known results from a steering results log become trials that do not count."""

from __future__ import annotations

import json

import pytest
from synthetic import (
    BASELINE_TRAIT,
    SOURCE,
    SyntheticEvaluator,
    open_study,
    synthetic_coherence,
    synthetic_trait,
)

from steerops.errors import SteeropsError
from steerops.search.known import load_known
from steerops.search.loop import run_search


def test_known_results_become_trials_without_counting(tmp_path):
    path = tmp_path / "results.jsonl"
    rows = [{"type": "baseline", "settings_hash": "synthetic", "result": {"trait_mean": 5}}]
    for i, coef in enumerate((0.5, 1.0, 1.3, 2.5)):
        rows.append(
            {
                "type": "config",
                "settings_hash": "synthetic" if i < 3 else "other",
                "config": {
                    "coefficient": coef,
                    "vectors": [
                        {
                            "layer": 2,
                            "component": "residual",
                            "position": "prompt[-1]",
                            "method": "mean_diff",
                            "weight": coef * 10,
                        }
                    ],
                },
                "result": {
                    "trait_mean": synthetic_trait(2, coef),
                    "coherence_mean": synthetic_coherence(2, coef),
                    "n": 2,
                },
            }
        )
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    known = load_known(path, "synthetic", "mean_diff", "prompt[-1]", "residual", [2])
    assert [k.coefficient for k in known] == [0.5, 1.0, 1.3]  # the other settings left out
    assert load_known(path, "synthetic", "mean_diff", "prompt[-1]", "residual", [1]) == []
    assert load_known(tmp_path / "none.jsonl", "synthetic", "m", "p", "r", [2]) == []
    with pytest.raises(SteeropsError, match="known_results: file not found"):
        load_known(tmp_path / "none.jsonl", "synthetic", "m", "p", "r", [2], required=True)
    study = open_study(tmp_path, startup_trials=2)
    stats = run_search(
        study,
        SyntheticEvaluator(["q", "r"]),
        SOURCE,
        target=2,
        batch=2,
        direction="positive",
        known=known,
        progress=False,
    )
    assert stats.imported == 3
    records = study.records()
    imported = [r for r in records if r.source == "known"]
    assert len(imported) == 3 and study.n_done() == 2 and len(records) == 5
    assert not [r for r in records if r.source == "enqueued"]  # known results replace the design
    assert imported[2].trait_delta == pytest.approx(synthetic_trait(2, 1.3) - BASELINE_TRAIT)
    # importing twice adds nothing
    again = open_study(tmp_path)
    assert not again.add_known(2, 1.3, 13.0, 65.0, 100.0, 60.0, 2)
    path.write_text('{"type": "config"\n')
    with pytest.raises(SteeropsError, match="results.jsonl:1: malformed JSON"):
        load_known(path, "synthetic", "mean_diff", "prompt[-1]", "residual", [2])
