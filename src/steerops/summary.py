"""Stage-level DVC metrics and plots, gathered from the per-cell files a stage writes.

`steerops steer` and `steerops search` write one folder per (trait, variant, position,
component, method) under the outputs root, inside directories DVC caches as outputs. DVC
cannot declare a metrics file inside a cached output, so each stage also gathers its cells
into `metrics/` next to the params file (small, kept in git):

    metrics/steer.json         {cell: status, layer and coefficient (null unless ok),
                                tried_layer, tried_coefficient, held-out delta, delta_lo,
                                delta_hi, coherence, under_bar, credited_*, n, p,
                                unscored}   (steering.best)
    metrics/steer_curves.csv   every config: trait and coherence vs coefficient on all
                               questions, n and n_unscored, a `series` per method, position
                               and layer (plots)
    metrics/search.json        {cell: the same fields for the study, but unscored}
                               (search.store)

A handful of held-out numbers per cell keeps `dvc metrics show` readable; the full per-cell
record stays in each cell's metrics.json or best.json.
"""

from __future__ import annotations

from pathlib import Path

from steerops.config import SUMMARY_DIR


def summary_dir(params) -> Path:
    """metrics/ next to the params file, or in a scratch run's own folder."""
    return params.run_root / SUMMARY_DIR


def collect(root: Path, name: str) -> dict[str, Path]:
    """{cell (folder relative to root): path} for every file called `name` under root."""
    if not root.is_dir():
        return {}
    return {p.parent.relative_to(root).as_posix(): p for p in sorted(root.rglob(name))}
