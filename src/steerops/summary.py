"""Stage-level DVC metrics and plots, gathered from the per-cell files a stage writes.

`steerops steer` and `steerops search` write one folder per (trait, variant, position,
component, method) under the outputs root, inside directories DVC caches as outputs. DVC
cannot declare a metrics file inside a cached output, so each stage also gathers its cells
into `metrics/` next to the params file (small, kept in git):

    metrics/steer.json         {cell: the cell's metrics.json (best config at min coherence)}
    metrics/steer_curves.csv   every config: trait and coherence vs coefficient (DVC plots)
    metrics/search.json        {cell: the chosen config, search-half and held-out numbers}
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from steerops.io import read_json, write_json, write_text

SUMMARY_DIR = "metrics"
CURVE_COLUMNS = ["cell", "trait", "variant", "method", "position", "layer", "coefficient",
                 "trait_mean", "coherence_mean", "trait_delta"]


def summary_dir(params) -> Path:
    return params.root / SUMMARY_DIR


def collect(root: Path, name: str) -> dict[str, Path]:
    """{cell (folder relative to root): path} for every file called `name` under root."""
    if not root.is_dir():
        return {}
    return {p.parent.relative_to(root).as_posix(): p for p in sorted(root.rglob(name))}


def write_steer_summary(params) -> Path:
    root = params.out / "steering"
    write_json(summary_dir(params) / "steer.json",
               {cell: read_json(p) for cell, p in collect(root, "metrics.json").items()})
    rows: list[dict[str, Any]] = []
    for cell, path in collect(root, "results.csv").items():
        with open(path, newline="", encoding="utf-8") as f:
            rows += [{**row, "cell": cell} for row in csv.DictReader(f)]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CURVE_COLUMNS, extrasaction="ignore",
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(summary_dir(params) / "steer_curves.csv", buf.getvalue())
    return summary_dir(params) / "steer.json"


def write_search_summary(params) -> Path:
    from steerops.search.results import best_row

    root = params.out / "search"
    path = summary_dir(params) / "search.json"
    write_json(path, {cell: best_row(read_json(p))
                      for cell, p in collect(root, "best.json").items()})
    return path
