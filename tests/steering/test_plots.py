"""A steering cell's curve.png: its choice marked by the verdict, and what it pools said."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest
from matplotlib.collections import PathCollection

from steerops.steering import plots

ROWS = [
    {"layer": 12, "coefficient": c, "trait_mean": t, "coherence_mean": h}
    for c, t, h in ((0.2, 5.0, 97.0), (0.25, 7.5, 84.7))
]


@pytest.mark.parametrize("status, ring", [("ok", True), ("no effect", False)])
def test_the_choice_is_ringed_only_when_ok_and_the_title_says_the_verdict(
    tmp_path, monkeypatch, status, ring
):
    """The main job's random_baseline (no effect at 0.2) had no mark at all, and its curve
    pools both halves (40 questions) where the report reads the held-out 20."""
    figures = []
    monkeypatch.setattr(plt, "close", lambda fig: figures.append(fig))
    used = (12, 0.2) if status == "ok" else (None, None)  # as the cell's metrics.json
    verdict = {
        "status": status,
        **dict(zip(("layer", "coefficient"), used, strict=True)),
        "tried_layer": 12,
        "tried_coefficient": 0.2,
        "n_questions": 40,
    }
    plots.coefficient_curve(ROWS, {}, 68.0, tmp_path / "curve.png", "t", verdict)
    (fig,) = figures
    top = fig.axes[0]
    [mark] = [c for c in top.collections if isinstance(c, PathCollection)]
    assert [tuple(map(float, p)) for p in mark.get_offsets()] == [(0.2, 5.0)]
    is_cross = len(mark.get_paths()[0].vertices) == 4  # a circle has more
    assert is_cross != ring
    assert top.get_title() == (
        f"t\nall 40 questions, both halves; verdict: {status} (ring: chosen, ok; x: chosen, not ok)"
    )
    assert (tmp_path / "curve.png").is_file()
