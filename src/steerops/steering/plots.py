"""The coefficient curve of a steering cell: trait and coherence vs coefficient per layer,
on all the cell's questions (every config is drawn, so nothing here is a selected maximum),
with the cell's choice marked by its verdict (held out, as metrics.json has it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from steerops.io import save_png  # noqa: E402


def coefficient_curve(
    rows: list[dict[str, Any]],
    baseline: dict[str, Any],
    min_coherence: float,
    path: str | Path,
    title: str = "",
    verdict: dict[str, Any] | None = None,
) -> None:
    """Two panels sharing the coefficient axis, one line per layer; the baseline as a dotted
    line and the coherence threshold as a dashed red line. `verdict`: the cell's
    metrics.json (status, tried_layer, tried_coefficient, n_questions): its choice is ringed when ok
    and crossed out otherwise (a ring reads as "use this one"), and the title says the
    verdict (held out, or on the selection half when nothing was chosen) and that the
    curve pools both halves of the questions."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8.5, 6.5), sharex=True)
    layers = sorted({r["layer"] for r in rows}, key=str)
    colours = plt.get_cmap("tab20" if len(layers) > 10 else "tab10")
    for k, layer in enumerate(layers):
        points = sorted(
            (r["coefficient"], r["trait_mean"], r["coherence_mean"])
            for r in rows
            if r["layer"] == layer and r["coefficient"] is not None
        )
        if not points:
            continue
        coefs = [p[0] for p in points]
        style = {"marker": "o", "label": f"layer {layer}", "color": colours(k % colours.N)}
        top.plot(coefs, [_nan(p[1]) for p in points], **style)
        bottom.plot(coefs, [_nan(p[2]) for p in points], **style)
        choice = verdict or {}
        tried = choice.get("tried_coefficient")
        if choice.get("tried_layer") == layer and tried in coefs:
            y = points[coefs.index(tried)][1]
            ok = choice.get("status") == "ok"
            mark_choice(top, [tried], [_nan(y)], ok, style["color"])
    if baseline.get("trait_mean") is not None:
        top.axhline(baseline["trait_mean"], color="gray", linestyle=":", label="unsteered")
    if baseline.get("coherence_mean") is not None:
        bottom.axhline(baseline["coherence_mean"], color="gray", linestyle=":", label="unsteered")
    bottom.axhline(
        min_coherence, color="red", linestyle="--", label=f"min coherence {min_coherence:g}"
    )
    top.set_ylabel("trait (0-100)")
    bottom.set_ylabel("coherence (0-100)")
    bottom.set_xlabel("coefficient")
    for ax in (top, bottom):
        ax.set_ylim(-5, 105)
        ax.grid(alpha=0.3)
    for ax in (top, bottom):  # outside the data, right of the panels
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if verdict and verdict.get("status"):
        n = verdict.get("n_questions")
        pooled = f"all {n} questions" if n else "all questions"
        title += f"\n{pooled}, both halves; verdict: {verdict['status']}"
        if verdict.get("tried_layer") is not None:
            title += " (ring: chosen, ok; x: chosen, not ok)"
    if title:
        top.set_title(title, fontsize=10)
    fig.tight_layout()
    # No timestamp in the PNG metadata, so identical results give identical files.
    save_png(fig, path, metadata={"Software": None})


def mark_choice(ax, xs, ys, ok: bool, colour) -> None:
    """A cell's chosen config: ringed when its verdict is ok, crossed out otherwise (no
    effect, incoherent held out...): a ring reads as "use this one"."""
    look = {"facecolors": "none", "edgecolors": colour} if ok else {"marker": "x", "color": colour}
    ax.scatter(xs, ys, s=160, linewidths=1.5, zorder=3, **look)


def _nan(value: float | None) -> float:
    return float("nan") if value is None else value
