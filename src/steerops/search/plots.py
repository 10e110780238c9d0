"""search.png: coefficient vs trait delta and vs coherence, feasible trials in green."""

from __future__ import annotations

from pathlib import Path

from steerops.io import atomic_path
from steerops.search.trials import TrialRecord


def plot_search(
    path: Path,
    records: list[TrialRecord],
    chosen: TrialRecord | None,
    min_coherence: float,
    title: str,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in records if r.state == "complete" and r.trait_delta is not None]
    fig, (ax_delta, ax_coh) = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    for ok, colour, label in (
        (True, "tab:green", f"coherence >= {min_coherence:g}"),
        (False, "tab:red", "infeasible"),
    ):
        pts = [r for r in done if bool(r.feasible) == ok]
        xs = [r.coefficient for r in pts]
        ax_delta.scatter(xs, [r.trait_delta for r in pts], c=colour, label=label, s=24)
        ax_coh.scatter(xs, [r.coherence_mean for r in pts], c=colour, s=24)
    if chosen is not None and chosen.trait_delta is not None:
        star = {"marker": "*", "s": 240, "facecolors": "none", "edgecolors": "black"}
        x = [chosen.coefficient]
        ax_delta.scatter(x, [chosen.trait_delta], label=f"chosen (layer {chosen.layer})", **star)
        ax_coh.scatter(x, [chosen.coherence_mean], **star)
    ax_coh.axhline(min_coherence, color="grey", linestyle="--", linewidth=1)
    ax_delta.set(xlabel="coefficient", ylabel="trait delta vs baseline", title=title)
    ax_coh.set(
        xlabel="coefficient",
        ylabel="coherence",
        ylim=(-2, 102),
        title=f"constraint: coherence >= {min_coherence:g}",
    )
    ax_delta.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
