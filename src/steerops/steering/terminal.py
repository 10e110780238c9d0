"""What `steerops steer` prints per grid cell: a layer x coefficient table of trait and
coherence (and n when configs differ in it), the baseline, the best config and where the
files are, with paths relative to the working directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def cell_table(
    title: str,
    baseline: Any,
    results: list[Any],
    metrics: dict[str, Any],
    folder: str | Path,
) -> str:
    """`results`: ConfigResults of single-vector configs (layer, coefficient)."""
    cells = {(r.config.vectors[0].layer, r.config.coefficient): r for r in results}
    layers = sorted({layer for layer, _ in cells})
    coefficients = sorted({c for _, c in cells})
    counts = {r.n for r in results}
    same_n = len(counts) == 1
    best = (metrics.get("best_layer"), metrics.get("best_coefficient"))
    head = (
        f"{title}: trait / coherence per layer x coefficient"
        + (f" (n {counts.pop()} per config)" if same_n else "")
        + f"; baseline {_num(baseline.trait_mean)} / {_num(baseline.coherence_mean)}"
    )
    rows = [["", *(f"c={c:g}" for c in coefficients)]]
    for layer in layers:
        row = [f"L{layer}"]
        for c in coefficients:
            r = cells.get((layer, c))
            text = "" if r is None else f"{_num(r.trait_mean)} / {_num(r.coherence_mean)}"
            if r is not None and not same_n:
                text += f" n{r.n}"
            row.append(text + (" *" if (layer, c) == best else "  "))
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [head] + [
        "  " + "  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    if metrics.get("best_layer") is None:
        lines.append(
            f"  no config reached coherence >= {metrics['min_coherence']:g}: try smaller "
            "coefficients"
        )
    else:
        lines.append(
            f"  * best: L{metrics['best_layer']} c={metrics['best_coefficient']:g}: trait "
            f"{_num(metrics['best_trait_mean'])} (delta {metrics['best_trait_delta']:+.1f}), "
            f"coherence {_num(metrics['best_coherence'])} >= {metrics['min_coherence']:g}"
        )
    lines.append(f"  files: {folder}")
    return "\n".join(lines)
