"""Report plots, written deterministically (no timestamps in the PNG metadata)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from steerops.io import atomic_path  # noqa: E402

_PNG_META = {"Software": None}


def save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata=_PNG_META)
    plt.close(fig)


def coefficient_curves(frame: pd.DataFrame, min_coherence: float, path: Path) -> None:
    """Trait delta and coherence vs coefficient, one line per method (at its best layer)."""
    methods = sorted(frame["method"].unique())
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    for method in methods:
        rows = frame[frame["method"] == method]
        layer = _best_layer(rows, min_coherence)
        rows = (
            rows[rows["layer"] == layer]
            .groupby("coefficient", sort=True)
            .mean(numeric_only=True)
            .reset_index()
        )
        label = f"{method} (L{layer})"
        top.plot(rows["coefficient"], rows["trait_delta"], marker="o", label=label)
        bottom.plot(rows["coefficient"], rows["coherence_mean"], marker="o", label=label)
    bottom.axhline(
        min_coherence, color="red", linestyle="--", label=f"min coherence {min_coherence:g}"
    )
    top.set_ylabel("trait delta")
    bottom.set_ylabel("coherence")
    bottom.set_xlabel("coefficient")
    top.legend(fontsize=7, ncol=2)
    bottom.legend(fontsize=7, ncol=2)
    top.set_title("Trait and coherence vs coefficient")
    save(fig, path)


def cleaning_curve(curve: pd.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    order = ["0", "1", "2", "3", "5", "all"]
    for (position, method), rows in curve.groupby(["position", "method"], sort=True):
        present = set(rows["dims_cleaned"])
        rows = rows.set_index("dims_cleaned").reindex([o for o in order if o in present])
        ax.plot(rows.index, rows["best_delta"], marker="o", label=f"{method} @ {position}")
    ax.set_xlabel("massive dims cleaned")
    ax.set_ylabel("best trait delta (coherence >= threshold)")
    ax.set_title("Cleaning curve")
    ax.legend(fontsize=7)
    save(fig, path)


def _best_layer(rows: pd.DataFrame, min_coherence: float) -> int:
    feasible = rows[rows["coherence_mean"] >= min_coherence]
    pick = feasible if not feasible.empty else rows
    pick = pick.sort_values(["trait_delta", "layer"], ascending=[False, True], kind="mergesort")
    return int(pick.iloc[0]["layer"])
