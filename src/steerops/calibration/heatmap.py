"""heatmap.png: two panels per (layer, dim), log colour scales.

Left, the massive set: peak |x| / the layer's median |x| (massive dims marked `!` with the
token and position their peak sits at, and the (layer, dim) cells that passed the rule
outlined: a dim is massive at some layers only; the rule's ratio marked on the colour bar).
Right, the top_mean set: |mean| / the layer's mean |mean| (global dims marked `*`).
"""

from __future__ import annotations

from pathlib import Path

from steerops.io import atomic_path


def plot_heatmap(record: dict, path: str | Path) -> None:
    """Draw `aggregate.massive_heatmap` and `aggregate.heatmap` side by side, atomically."""
    # A bare Figure renders with Agg and leaves pyplot's global backend/state alone.
    from matplotlib.figure import Figure

    agg = record["aggregate"]
    peaks, means = agg["massive_heatmap"], agg["heatmap"]
    n_layers = len(means["layers"])
    width = 0.45 * (len(peaks["dims"]) + len(means["dims"])) + 5
    fig = Figure(figsize=(max(7.0, width), max(2.5, 0.3 * n_layers + 1.5)))
    left, right = fig.subplots(1, 2, width_ratios=[max(len(peaks["dims"]), 1), len(means["dims"])])
    massive = set(peaks["massive"])
    by_layer = agg.get("massive_by_layer") or {}
    passed = [
        (i, j)
        for i, layer in enumerate(peaks["layers"])
        for j, dim in enumerate(peaks["dims"])
        if dim in by_layer.get(str(layer), [])
    ]
    settings = record.get("settings") or {}
    ratio, threshold = settings.get("massive_ratio"), settings.get("massive_threshold")
    rule = f" (massive: > {ratio:g} and |x| > {threshold:g})" if ratio and threshold else ""
    _panel(
        fig,
        left,
        peaks["ratio"],
        peaks["layers"],
        [f"{d}! {_peak_token(record, d)}" if d in massive else str(d) for d in peaks["dims"]],
        "peak |x| / layer median |x|  (! = massive; outlined: where)",
        "max / median" + rule,
        outlined=passed,
        mark=ratio,
    )
    global_dims = set(agg["global_dims"])
    _panel(
        fig,
        right,
        means["relative"],
        means["layers"],
        [f"{d}*" if d in global_dims else str(d) for d in means["dims"]],
        "|mean| / layer mean |mean|  (* = global)",
        "relative |mean|",
    )
    fig.suptitle(f"{record['variant']}: calibration over all tokens", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        # tight: a short model's figure would clip the colour bar's label
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")


def _peak_token(record: dict, dim: int) -> str:
    """Where a massive dim peaks at the layers it is massive: "<|im_start|>@0" (its token and
    position in the sequence), or "several tokens" when they differ."""
    where = {
        (str(hit.get("token")), hit.get("position"))
        for layer in record.get("layers", {}).values()
        if (hit := (layer.get("massive") or {}).get(str(dim))) is not None
    }
    if len(where) != 1:
        return "several tokens" if where else ""
    ((token, position),) = where
    return f"{token}@{position}"


def _panel(fig, ax, rows, layers, labels, title, colour_label, outlined=(), mark=None) -> None:
    """`outlined`: (row, column) cells boxed; `mark`: a value lined on the colour bar."""
    import numpy as np
    from matplotlib.colors import LogNorm
    from matplotlib.patches import Rectangle

    values = np.nan_to_num(np.asarray(rows, dtype=float).reshape(len(layers), -1))
    positive = values[values > 0]
    floor = max(float(positive.min()), 1e-2) if positive.size else 1e-2
    top = max(float(values.max()) if values.size else 1.0, floor * 10)
    image = ax.imshow(
        np.clip(values, floor, None), aspect="auto", cmap="magma", norm=LogNorm(floor, top)
    )
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(layers)))
    ax.set_yticklabels([str(k) for k in layers], fontsize=7)
    ax.set_xlabel("dim")
    ax.set_ylabel("layer")
    ax.set_title(title, fontsize=8)
    for i, j in outlined:
        box = Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="cyan", linewidth=1.2)
        ax.add_patch(box)
    bar = fig.colorbar(image, ax=ax, label=colour_label)
    if mark is not None and floor <= mark <= top:
        bar.ax.axhline(mark, color="cyan", linewidth=1.5)
