"""search.png: trials of different layers are told apart, and feasible ones from the rest."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

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


def _points(ax) -> dict[tuple[float, float], tuple[str, tuple]]:
    """Each trial point drawn (the chosen star left out) -> (its marker's outline, its
    colour), as comparable keys."""
    out = {}
    for coll in ax.collections:
        if coll.get_sizes()[0] >= 200:  # the chosen config's star
            continue
        outline = str(coll.get_paths()[0].vertices.round(3).tolist())
        colours = coll.get_facecolors()
        for k, (x, y) in enumerate(coll.get_offsets()):
            colour = tuple(np.round(colours[k % len(colours)], 3))
            out[float(x), float(y)] = (outline, colour)
    return out


TRIALS = [
    _trial(0, 12, 0.2, 50.0, True),
    _trial(1, 16, 0.195, 15.0, True),
    _trial(2, 16, 0.3, 45.0, False),
    _trial(3, 12, 0.25, 65.0, False),
]


def test_layers_get_their_own_colours_and_feasibility_its_own_markers():
    for chosen in (None, TRIALS[0]):
        fig = search_figure(TRIALS, chosen, 68.0, "t")
        fig.canvas.draw()  # colours from the colour map are set when drawn
        for ax in fig.axes[:2]:
            coherence = ax is fig.axes[1]
            at = {
                t.number: (t.coefficient, t.coherence_mean if coherence else t.trait_delta)
                for t in TRIALS
            }
            drawn = _points(ax)
            marker = {n: drawn[xy][0] for n, xy in at.items()}
            colour = {n: drawn[xy][1] for n, xy in at.items()}
            # one layer, one colour; the two layers apart
            assert colour[1] == colour[2] and colour[0] == colour[3] and colour[0] != colour[1]
            # feasible dots, infeasible crosses, whatever the layer
            assert marker[0] == marker[1] and marker[2] == marker[3] and marker[0] != marker[2]
        assert fig.axes[2].get_ylabel() == "layer"  # the colour bar, ticked at the layers
        assert list(fig.axes[2].get_yticks()) == [12, 16]
        labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
        assert labels == ["coherence >= 68", "infeasible"] + (
            ["chosen (layer 12)"] if chosen else []
        )
        plt.close(fig)


def test_one_layer_is_green_and_red_without_a_colour_bar(tmp_path):
    trials = [_trial(0, 12, 0.2, 50.0, True), _trial(1, 12, 0.3, 60.0, False)]
    fig = search_figure(trials, None, 68.0, "t")
    fig.canvas.draw()
    assert len(fig.axes) == 2
    drawn = _points(fig.axes[0])
    assert drawn[0.2, 50.0][1] != drawn[0.3, 60.0][1]
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == ["coherence >= 68", "infeasible"]
    plt.close(fig)
    plot_search(tmp_path / "search.png", trials, None, 68.0, "t")
    assert (tmp_path / "search.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_chosen_trial_shows_its_held_out_result_and_the_verdict():
    """A star on the search half can fail held out (the main job's 0.2333: coherence 65.2,
    under the bar): the held-out delta with its interval and coherence sit beside it, and
    the verdict heads the figure; zero (no effect) is on the delta axis."""
    held = {"trait_delta": 55.0, "delta_lo": 25.0, "delta_hi": 80.0, "coherence_mean": 65.2}
    best = {
        "status": "incoherent held out",
        "coefficient_unit": "norm",
        "heldout": held | {"n": 20},
        "search": {"n_questions": 20},
    }
    fig = search_figure(TRIALS, TRIALS[0], 68.0, "t", best)
    ax_delta, ax_coh = fig.axes[:2]
    [bars] = [c for c in ax_delta.containers if c.has_yerr]
    (segment,) = bars.lines[2][0].get_segments()
    assert segment[:, 0].tolist() == [0.2, 0.2] and segment[:, 1].tolist() == [25.0, 80.0]
    assert bars.lines[0].get_xydata().tolist() == [[0.2, 55.0]]
    [coherence] = [c for c in ax_coh.containers if c.lines[0].get_xydata().tolist()]
    assert coherence.lines[0].get_xydata().tolist() == [[0.2, 65.2]]
    labels = [t.get_text() for t in ax_delta.get_legend().get_texts()]
    assert labels[-1] == "held out (n 20): incoherent held out"
    assert fig._suptitle.get_text() == (
        "search: chosen on the search half; held out: incoherent held out"
    )
    assert ax_delta.get_ylim()[0] <= 0 and ax_delta.get_xlabel() == "coefficient (norm)"
    assert ax_delta.get_ylabel() == "trait delta vs baseline (search half, 20 questions)"
    plt.close(fig)


def test_a_margin_draws_the_held_out_bar_beside_the_search_s():
    best = {"status": "ok", "min_coherence": 68.0, "search": {"n_questions": 20}}
    fig = search_figure(TRIALS, TRIALS[0], 78.0, "t", best)
    ax_coh = fig.axes[1]
    levels = sorted(
        line.get_ydata()[0] for line in ax_coh.get_lines() if len(set(line.get_ydata())) == 1
    )
    assert 68.0 in levels and 78.0 in levels
    assert "held-out bar 68" in [t.get_text() for t in ax_coh.texts]
    assert ax_coh.get_title() == "constraint: coherence >= 78"
    plt.close(fig)
    # without a margin, one bar
    fig = search_figure(TRIALS, TRIALS[0], 68.0, "t", best)
    assert not fig.axes[1].texts
    plt.close(fig)
