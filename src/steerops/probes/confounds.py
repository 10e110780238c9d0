"""Remove what categorical confounds (topic, dataset, ...) explain of the scores.

Scores are regressed by OLS on an intercept plus a one-hot encoding of every confound column
(first level of each dropped, so the design has full rank when levels are not collinear);
the residuals become the probe's targets. A probe's regression is fitted on its training
tasks only (`residuals`) and applied to the tasks it is scored on: fitted on every task, a
group's mean would hold the held-out tasks' own scores, and their residuals would be pulled
against the training tasks' (a negative "held-out" r where there is no signal). A level no
training task has gets no coefficient of its own: its tasks are corrected as the reference
level's (the first of its column), or, when it is the reference itself, by the
least-squares minimum-norm intercept. `residualize` (every task) gives the report's r2 and
the check that the targets vary.
"""

from __future__ import annotations

import numpy as np

from steerops.errors import SteeropsError


def one_hot_design(values: list[tuple[str, ...]]) -> np.ndarray:
    """[n, 1 + sum(levels - 1)]: intercept then drop-first one-hot columns per confound."""
    n = len(values)
    columns = [np.ones(n)]
    for j in range(len(values[0]) if values else 0):
        levels = sorted({v[j] for v in values})
        for level in levels[1:]:
            columns.append(np.array([v[j] == level for v in values], dtype=np.float64))
    return np.stack(columns, axis=1)


def residualize(
    scores: dict[str, float], confounds: dict[str, tuple[str, ...]], columns: list[str]
) -> tuple[dict[str, float], dict]:
    """Scores minus their OLS fit on the confounds, and a report
    `{columns, r2, n_used, n_dropped, dropped}` (dropped = scored tasks without confounds)."""
    kept = [t for t in scores if t in confounds]
    dropped = sorted(t for t in scores if t not in confounds)
    if len(kept) < 2:
        raise SteeropsError(f"probes.confounds: only {len(kept)} scored tasks have confound rows")
    y = np.array([scores[t] for t in kept], dtype=np.float64)
    design = one_hot_design([confounds[t] for t in kept])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ coef
    ss_tot = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((resid**2).sum()) / ss_tot if ss_tot > 0 else 0.0
    report = {
        "columns": columns,
        "r2": r2,
        "n_used": len(kept),
        "n_dropped": len(dropped),
        "dropped": dropped[:50],
    }
    return dict(zip(kept, resid.tolist(), strict=True)), report


def residuals(y: np.ndarray, design: np.ndarray, fit_rows: np.ndarray) -> np.ndarray:
    """`y` minus its OLS fit on `design`, the coefficients fitted on `fit_rows` only (a
    column constant zero there gets the minimum-norm coefficient, 0)."""
    coef, *_ = np.linalg.lstsq(design[fit_rows], y[fit_rows], rcond=None)
    return y - design @ coef
