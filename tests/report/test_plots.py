"""The report's figures: what a reader can tell apart in them."""

from __future__ import annotations

import pandas as pd

from steerops.report import plots

KEY = {"model": "m", "trait": "t/x", "position": "prompt[-1]", "component": "residual"}


def _points(method: str, deltas: list[float]) -> list[dict]:
    return [
        {
            **KEY,
            "method": method,
            "layer": 3,
            "coefficient": c,
            "delta": d,
            "delta_lo": d - 10,
            "delta_hi": d + 10,
            "coherence": 80.0,
            "chosen": c == 1.0,
        }
        for c, d in zip((0.5, 1.0), deltas, strict=True)
    ]


def test_methods_with_the_same_curve_share_one_labelled_line(tmp_path, monkeypatch):
    """Two methods whose points are equal draw one line named by both: drawn apart, the
    second hid the first (the main job's mean_diff_cleaned under mean_diff_preclean)."""
    figures = []
    monkeypatch.setattr(plots, "save", lambda fig, path: figures.append(fig))
    points = pd.DataFrame(
        _points("mean_diff", [10, 30])
        + _points("mean_diff_cleaned", [10, 40])
        + _points("mean_diff_preclean", [10, 40])
    )
    plots.coefficient_curves(points, 68.0, tmp_path / "curves.png")
    (fig,) = figures
    labels = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert labels == ["mean_diff", "mean_diff_cleaned = mean_diff_preclean"]
    top = fig.axes[0]
    assert len(top.containers) == 2  # one error-bar line each
