"""search.png: trials of different layers are told apart."""

from __future__ import annotations

import matplotlib.pyplot as plt

from steerops.search.plots import plot_search, search_figure
from steerops.search.trials import TrialRecord


def _trial(number: int, layer: int, coefficient: float, delta: float, feasible: bool):
    return TrialRecord(
        number=number,
        layer=layer,
        coefficient=coefficient,
        weight=None,
        trait_mean=None,
        coherence_mean=80.0 if feasible else 40.0,
        trait_delta=delta,
        feasible=feasible,
        state="complete",
        source="search",
        rows=20,
    )


def _markers(ax) -> dict[tuple[float, float], str]:
    """Each plotted point -> its marker's path, as a comparable key."""
    out = {}
    for coll in ax.collections:
        path = coll.get_paths()[0]
        for x, y in coll.get_offsets():
            out[float(x), float(y)] = str(path.vertices.round(3).tolist())
    return out


def test_layers_get_their_own_markers_and_legend_entries():
    trials = [
        _trial(0, 12, 0.2, 50.0, True),
        _trial(1, 16, 0.195, 15.0, True),
        _trial(2, 16, 0.3, 45.0, False),
    ]
    fig = search_figure(trials, trials[0], 68.0, "t")
    ax_delta = fig.axes[0]
    points = _markers(ax_delta)
    assert points[0.195, 15.0] == points[0.3, 45.0]  # one layer, one marker
    assert points[0.195, 15.0] != points[0.2, 50.0]
    labels = [t.get_text() for t in ax_delta.get_legend().get_texts()]
    assert labels == [
        "coherence >= 68",
        "infeasible",
        "layer 12",
        "layer 16",
        "chosen (layer 12)",
    ]
    plt.close(fig)


def test_one_layer_adds_no_layer_legend(tmp_path):
    trials = [_trial(0, 12, 0.2, 50.0, True), _trial(1, 12, 0.3, 60.0, False)]
    fig = search_figure(trials, None, 68.0, "t")
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["coherence >= 68", "infeasible"]
    plt.close(fig)
    plot_search(tmp_path / "search.png", trials, None, 68.0, "t")
    assert (tmp_path / "search.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
