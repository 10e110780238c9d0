"""heatmap.png: relative |mean| per (layer, dim) for the dims calibration singled out."""

from __future__ import annotations

from pathlib import Path

from steerops.io import atomic_path


def plot_heatmap(record: dict, path: str | Path) -> None:
    """Draw `record["aggregate"]["heatmap"]` (layers x dims), log colour scale, atomically."""
    # A bare Figure renders with Agg and leaves pyplot's global backend/state alone.
    import numpy as np
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    table = record["aggregate"]["heatmap"]
    values = np.asarray(table["relative"], dtype=float).reshape(len(table["layers"]), -1)
    positive = values[values > 0]
    floor = max(float(positive.min()), 1e-2) if positive.size else 1e-2
    top = max(float(values.max()) if values.size else 1.0, floor * 10)
    global_dims = set(record["aggregate"]["global_dims"])

    fig = Figure(
        figsize=(max(4.0, 0.45 * values.shape[1] + 2), max(2.5, 0.3 * values.shape[0] + 1.5))
    )
    ax = fig.subplots()
    image = ax.imshow(
        np.clip(values, floor, None),
        aspect="auto",
        cmap="magma",
        norm=LogNorm(vmin=floor, vmax=top),
    )
    ax.set_xticks(range(len(table["dims"])))
    ax.set_xticklabels(
        [f"{d}*" if d in global_dims else str(d) for d in table["dims"]], rotation=90, fontsize=7
    )
    ax.set_yticks(range(len(table["layers"])))
    ax.set_yticklabels([str(k) for k in table["layers"]], fontsize=7)
    ax.set_xlabel("dim (* = global)")
    ax.set_ylabel("layer")
    ax.set_title(f"{record['variant']}: |mean| / layer mean |mean| (response tokens)", fontsize=9)
    fig.colorbar(image, ax=ax, label="relative magnitude")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
