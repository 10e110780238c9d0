"""search.png: coefficient vs trait delta and vs coherence; feasible trials apart from
infeasible ones, and, over several layers, coloured by layer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from steerops.io import atomic_path
from steerops.search.trials import TrialRecord


def plot_search(
    path: Path,
    records: list[TrialRecord],
    chosen: TrialRecord | None,
    min_coherence: float,
    title: str,
) -> None:
    fig = search_figure(records, chosen, min_coherence, title)  # selects the Agg backend
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def search_figure(
    records: list[TrialRecord],
    chosen: TrialRecord | None,
    min_coherence: float,
    title: str,
) -> Any:
    """The figure. One layer: feasible trials green, infeasible red. Trials over several
    layers: colour by layer (a colour bar), feasible as dots and infeasible as crosses, since
    a coefficient means a different strength at each layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    done = [r for r in records if r.state == "complete" and r.trait_delta is not None]
    layers = sorted({r.layer for r in done})
    by_layer = len(layers) > 1
    fig, (ax_delta, ax_coh) = plt.subplots(
        1, 2, figsize=(10.8 if by_layer else 10, 4), sharex=True, layout="constrained"
    )
    shade: dict[str, Any] = (
        {"cmap": "viridis", "vmin": min(layers), "vmax": max(layers)} if by_layer else {}
    )
    # (feasible, colour with one layer, marker over several, legend label)
    kinds = (
        (True, "tab:green", "o", f"coherence >= {min_coherence:g}"),
        (False, "tab:red", "X", "infeasible"),
    )
    drawn = None
    handles: list[Any] = []
    for ok, colour, marker, label in kinds:
        look: dict[str, Any] = {"marker": marker if by_layer else "o", "s": 30 if by_layer else 24}
        key_colour, key_marker = ("grey", marker) if by_layer else (colour, "o")
        handles.append(
            Line2D([], [], color=key_colour, marker=key_marker, linestyle="", label=label)
        )
        pts = [r for r in done if bool(r.feasible) == ok]
        if not pts:
            continue
        xs = [r.coefficient for r in pts]
        look |= {"c": [r.layer for r in pts], **shade} if by_layer else {"c": colour}
        drawn = ax_delta.scatter(xs, [r.trait_delta for r in pts], **look)
        ax_coh.scatter(xs, [r.coherence_mean for r in pts], **look)
    if by_layer and drawn is not None:
        bar = fig.colorbar(drawn, ax=[ax_delta, ax_coh], label="layer")
        if len(layers) <= 10:
            bar.set_ticks(layers)  # the layers searched, not fractions between them
        else:
            bar.locator = MaxNLocator(integer=True)
            bar.update_ticks()
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
    return fig
