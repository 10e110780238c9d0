"""Report tables on a synthetic results frame with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from steerops.report import tables

COEFS = [0.5, 1.0, 1.5, 2.0]


# method -> (trait deltas, coherences) at COEFS, layer 2
SYNTHETIC = {
    "mean_diff": ([10, 40, 70, 90], [95, 90, 80, 50]),  # best feasible 70 @ 1.5
    "probe": ([5, 30, 60, 95], [99, 95, 85, 70]),  # best feasible 95 @ 2.0
    "mean_diff_top1": ([10, 50, 75, 95], [95, 90, 70, 40]),  # 75 @ 1.5
    "mean_diff_top2": ([20, 80, 85, 95], [95, 90, 60, 40]),  # 80 @ 1.0
    "mean_diff_top3": ([20, 60, 85, 95], [95, 90, 60, 40]),  # 60 @ 1.0
    "mean_diff_top5": ([20, 50, 85, 95], [95, 90, 60, 40]),  # 50 @ 1.0
    "mean_diff_cleaned": ([15, 65, 85, 95], [95, 90, 60, 40]),  # 65 @ 1.0
    "mean_diff_preclean": ([20, 70, 80, 95], [95, 30, 20, 10]),  # 20 @ 0.5 -> gap -45, flagged
    "probe_cleaned": ([10, 50, 70, 90], [95, 90, 80, 60]),  # 70 @ 1.5
    "probe_preclean": ([5, 20, 40, 90], [95, 90, 80, 60]),  # 40 @ 1.5 -> gap -30, no flag
    "random_baseline": ([0, 1, 2, 3], [60, 50, 40, 30]),  # never feasible; best coh 60
}


def synthetic_frame(model: str = "m", position: str = "prompt[-1]") -> pd.DataFrame:
    rows = []
    for method, (deltas, cohs) in SYNTHETIC.items():
        for coef, delta, coh in zip(COEFS, deltas, cohs, strict=True):
            rows.append(
                {
                    "model": model,
                    "trait": "toy/refusal",
                    "variant": "instruct",
                    "vector_variant": "base",
                    "position": position,
                    "component": "residual",
                    "method": method,
                    "layer": 2,
                    "coefficient": coef,
                    "weight": coef * 10.0,
                    "trait_mean": delta,
                    "coherence_mean": coh,
                    "trait_delta": delta,
                    "n": 20,
                    "source": "grid",
                }
            )
    # a worse layer that must never win
    rows.append({**rows[0], "layer": 1, "trait_delta": 5.0, "coherence_mean": 99.0})
    return pd.DataFrame(rows)


def _row(table, **keys):
    hit = table
    for k, v in keys.items():
        hit = hit[hit[k] == v]
    assert len(hit) == 1, keys
    return hit.iloc[0]


def test_gap_analysis_known_answers():
    gap = tables.gap_analysis(synthetic_frame(), 68)
    md = _row(gap, method="mean_diff")
    assert (md["status"], md["best_delta"], md["coefficient"], md["layer"]) == ("ok", 70, 1.5, 2)
    assert _row(gap, method="probe")["best_delta"] == 95
    rb = _row(gap, method="random_baseline")
    assert rb["status"] == "needs finer coefficients"
    assert np.isnan(rb["best_delta"]) and rb["best_coherence_reached"] == 60


def test_threshold_changes_the_answer():
    gap = tables.gap_analysis(synthetic_frame(), 85)
    assert _row(gap, method="mean_diff")["best_delta"] == 40
    assert _row(gap, method="probe")["coefficient"] == 1.5


def test_preclean_vs_clean_after_flags_mean_diff_only():
    table = tables.preclean_vs_clean_after(synthetic_frame(), 68)
    md = _row(table, method="mean_diff")
    assert (md["preclean_delta"], md["clean_after_delta"], md["gap"]) == (20, 65, -45)
    assert md["flag"] == "likely implementation problem"
    pr = _row(table, method="probe")
    assert (pr["preclean_delta"], pr["clean_after_delta"]) == (40, 70)
    assert pr["flag"] == ""


def test_cleaning_curve_known_answers():
    curve = tables.cleaning_curve(synthetic_frame(), 68)
    md = curve[curve["method"] == "mean_diff"].set_index("dims_cleaned")["best_delta"]
    assert md.to_dict() == {"0": 70, "1": 75, "2": 80, "3": 60, "5": 50, "all": 65}
    pr = curve[curve["method"] == "probe"].set_index("dims_cleaned")["best_delta"]
    assert pr.to_dict() == {"0": 95, "all": 70}


def test_coefficient_table_ratio_and_shift():
    table = tables.coefficient_table(synthetic_frame(), 68)
    md = _row(table, method="mean_diff")
    assert md["coefficient"] == 1.5 and md["mean_diff_probe_ratio"] == pytest.approx(0.75)
    assert np.isnan(md["cleaning_shift"])
    assert _row(table, method="mean_diff_top2")["cleaning_shift"] == pytest.approx(-0.5)
    assert _row(table, method="probe_cleaned")["cleaning_shift"] == pytest.approx(-0.5)
    assert "random_baseline" not in set(table["method"])
