"""search.png: coefficient vs trait delta and vs coherence, feasible trials in green, one
marker per layer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from steerops.io import atomic_path
from steerops.search.trials import TrialRecord

# one marker per layer: trials of two layers on one coefficient axis are two curves
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "h")


def plot_search(
    path: Path,
    records: list[TrialRecord],
    chosen: TrialRecord | None,
    min_coherence: float,
    title: str,
) -> None:
    import matplotlib.pyplot as plt

    fig = search_figure(records, chosen, min_coherence, title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def search_figure(
    records: list[TrialRecord],
    chosen: TrialRecord | None,
    min_coherence: float,
    title: str,
) -> Any:
    """The figure: feasibility by colour and, when trials span layers, layer by marker
    (a coefficient means a different strength at each layer)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    done = [r for r in records if r.state == "complete" and r.trait_delta is not None]
    layers = sorted({r.layer for r in done})
    marker = {layer: MARKERS[i % len(MARKERS)] for i, layer in enumerate(layers)}
    fig, (ax_delta, ax_coh) = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    colours = {True: "tab:green", False: "tab:red"}
    for ok in (True, False):
        for layer in layers:
            pts = [r for r in done if bool(r.feasible) == ok and r.layer == layer]
            xs = [r.coefficient for r in pts]
            style = {"c": colours[ok], "marker": marker[layer], "s": 24}
            ax_delta.scatter(xs, [r.trait_delta for r in pts], **style)
            ax_coh.scatter(xs, [r.coherence_mean for r in pts], **style)
    handles = [
        Line2D(
            [],
            [],
            color=colours[True],
            marker="o",
            linestyle="",
            label=f"coherence >= {min_coherence:g}",
        ),
        Line2D([], [], color=colours[False], marker="o", linestyle="", label="infeasible"),
    ]
    if len(layers) > 1:
        handles += [
            Line2D([], [], color="grey", marker=marker[layer], linestyle="", label=f"layer {layer}")
            for layer in layers
        ]
    if chosen is not None and chosen.trait_delta is not None:
        star = {"marker": "*", "s": 240, "facecolors": "none", "edgecolors": "black"}
        x = [chosen.coefficient]
        handles.append(
            ax_delta.scatter(
                x, [chosen.trait_delta], label=f"chosen (layer {chosen.layer})", **star
            )
        )
        ax_coh.scatter(x, [chosen.coherence_mean], **star)
    ax_coh.axhline(min_coherence, color="grey", linestyle="--", linewidth=1)
    ax_delta.set(xlabel="coefficient", ylabel="trait delta vs baseline", title=title)
    ax_coh.set(
        xlabel="coefficient",
        ylabel="coherence",
        ylim=(-2, 102),
        title=f"constraint: coherence >= {min_coherence:g}",
    )
    ax_delta.legend(handles=handles, fontsize=8)
    fig.tight_layout()
    return fig
