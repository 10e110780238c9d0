"""The best configs of a sweep at the coherence threshold, and the stage's DVC summary.

`metrics.json` of a cell names the config that moves the trait most in the steering
direction among configs with coherence >= `steering.min_coherence` (ties: the more coherent,
then the first in sweep order). `metrics/steer.json` and `metrics/steer_curves.csv` gather
every cell's metrics and curve rows (see `steerops.summary`).
"""

from __future__ import annotations

import csv
import io
from typing import Any

from steerops.io import read_json, write_json, write_text
from steerops.steering.store import CSV_FILE, METRICS_FILE
from steerops.summary import collect, summary_dir

CURVE_COLUMNS = (
    "cell trait variant method position layer coefficient trait_mean coherence_mean trait_delta"
).split()


def _rank(row: dict[str, Any], direction: str) -> tuple[float, float]:
    # Trait moved in `direction` first; among equals, the more coherent config.
    sign = 1.0 if direction == "positive" else -1.0
    return sign * row["trait_delta"], row["coherence_mean"]


def best_per_layer(
    rows: list[dict[str, Any]], min_coherence: float, direction: str = "positive"
) -> dict[Any, dict[str, Any]]:
    """Per layer, the row moving the trait most in `direction` at coherence >= the threshold."""
    best: dict[Any, dict[str, Any]] = {}
    for row in rows:
        delta, coherence = row.get("trait_delta"), row.get("coherence_mean")
        if delta is None or coherence is None or coherence < min_coherence:
            continue
        current = best.get(row["layer"])
        if current is None or _rank(row, direction) > _rank(current, direction):
            best[row["layer"]] = row
    return best


def metrics_summary(
    rows: list[dict[str, Any]],
    baseline: dict[str, Any],
    min_coherence: float,
    direction: str = "positive",
) -> dict[str, Any]:
    """The DVC metrics: the best config over all layers and the baseline it is measured from."""
    candidates = list(best_per_layer(rows, min_coherence, direction).values())
    top = max(candidates, key=lambda r: _rank(r, direction), default=None)
    summary: dict[str, Any] = {
        "baseline_trait": baseline.get("trait_mean"),
        "baseline_coherence": baseline.get("coherence_mean"),
        "min_coherence": min_coherence,
        "n_configs": len(rows),
        "n_feasible": sum(
            r.get("coherence_mean") is not None and r["coherence_mean"] >= min_coherence
            for r in rows
        ),
        "best_trait_delta": None,
        "best_trait_mean": None,
        "best_coherence": None,
        "best_layer": None,
        "best_coefficient": None,
        "best_weight": None,
    }
    if top is not None:
        summary.update(
            best_trait_delta=top["trait_delta"],
            best_trait_mean=top["trait_mean"],
            best_coherence=top["coherence_mean"],
            best_layer=top["layer"],
            best_coefficient=top["coefficient"],
            best_weight=top["weight"],
        )
    return summary


def write_steer_summary(params) -> None:
    """metrics/steer.json ({cell: its metrics.json}) and metrics/steer_curves.csv (every
    config of every cell: trait and coherence vs coefficient)."""
    root = params.out / "steering"
    write_json(
        summary_dir(params) / "steer.json",
        {cell: read_json(p) for cell, p in collect(root, METRICS_FILE).items()},
    )
    rows: list[dict[str, Any]] = []
    for cell, path in collect(root, CSV_FILE).items():
        with open(path, newline="", encoding="utf-8") as f:
            rows += [{**row, "cell": cell} for row in csv.DictReader(f)]
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, fieldnames=CURVE_COLUMNS, extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(rows)
    write_text(summary_dir(params) / "steer_curves.csv", buf.getvalue())
