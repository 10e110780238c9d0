"""The report's tables as pure functions of a tidy results frame.

The frame has one row per evaluated steering config: model, trait, position, component,
method, layer, coefficient, weight, trait_mean, coherence_mean, trait_delta, n, source
("grid" or "search"). Every function is deterministic (sorted keys, stable tie-breaks), so
the same inputs give byte-identical reports.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

KEY = ["model", "trait", "position"]
GROUP = KEY + ["method"]
CURVE_STEPS: list[tuple[str, str]] = [
    ("0", ""),
    ("1", "_top1"),
    ("2", "_top2"),
    ("3", "_top3"),
    ("5", "_top5"),
    ("all", "_cleaned"),
]
BASES = ("mean_diff", "probe")


def best_feasible(rows: pd.DataFrame, min_coherence: float) -> pd.Series | None:
    """The row with the largest trait delta among those with coherence >= threshold."""
    feasible = rows[rows["coherence_mean"] >= min_coherence]
    if feasible.empty:
        return None
    ordered = feasible.sort_values(
        ["trait_delta", "coherence_mean", "coefficient", "layer"],
        ascending=[False, False, True, True],
        kind="mergesort",
    )
    return ordered.iloc[0]


def gap_analysis(frame: pd.DataFrame, min_coherence: float) -> pd.DataFrame:
    """Per (model, trait, position, method): best feasible delta and its coefficient, or a note
    that the grid never reached the coherence threshold."""
    out = []
    for key, rows in frame.groupby(GROUP, sort=True):
        best = best_feasible(rows, min_coherence)
        row = dict(zip(GROUP, key, strict=True))
        if best is None:
            top = rows.sort_values(
                ["coherence_mean", "coefficient"], ascending=[False, True], kind="mergesort"
            ).iloc[0]
            row.update(
                status="needs finer coefficients",
                best_delta=np.nan,
                layer=np.nan,
                coefficient=np.nan,
                coherence=np.nan,
                best_coherence_reached=float(top["coherence_mean"]),
            )
        else:
            row.update(
                status="ok",
                best_delta=float(best["trait_delta"]),
                layer=int(best["layer"]),
                coefficient=float(best["coefficient"]),
                coherence=float(best["coherence_mean"]),
                best_coherence_reached=float(rows["coherence_mean"].max()),
            )
        row["n_configs"] = int(len(rows))
        out.append(row)
    return pd.DataFrame(
        out,
        columns=GROUP
        + [
            "status",
            "best_delta",
            "layer",
            "coefficient",
            "coherence",
            "best_coherence_reached",
            "n_configs",
        ],
    )


def _best_by_method(frame: pd.DataFrame, min_coherence: float) -> dict[tuple, pd.Series]:
    best = {}
    for key, rows in frame.groupby(GROUP, sort=True):
        hit = best_feasible(rows, min_coherence)
        if hit is not None:
            best[key] = hit
    return best


def preclean_vs_clean_after(
    frame: pd.DataFrame, min_coherence: float, flag_points: float = 20.0
) -> pd.DataFrame:
    """Delta and coherence of `<m>_preclean` vs `<m>_cleaned` (all global dims removed
    before vs after extraction). mean_diff is linear in the activations, so the two must
    agree; a gap above `flag_points` is flagged as a likely implementation problem."""
    best = _best_by_method(frame, min_coherence)
    out = []
    for key in sorted(_pairs(frame)):
        for base in BASES:
            pre = best.get((*key, f"{base}_preclean"))
            post = best.get((*key, f"{base}_cleaned"))
            if pre is None and post is None:
                continue
            gap = (
                float(pre["trait_delta"]) - float(post["trait_delta"])
                if pre is not None and post is not None
                else np.nan
            )
            flag = base == "mean_diff" and not np.isnan(gap) and abs(gap) > flag_points
            out.append(
                {
                    **dict(zip(KEY, key, strict=True)),
                    "method": base,
                    "preclean_delta": _get(pre, "trait_delta"),
                    "preclean_coherence": _get(pre, "coherence_mean"),
                    "clean_after_delta": _get(post, "trait_delta"),
                    "clean_after_coherence": _get(post, "coherence_mean"),
                    "gap": gap,
                    "flag": "likely implementation problem" if flag else "",
                }
            )
    return pd.DataFrame(
        out,
        columns=KEY
        + [
            "method",
            "preclean_delta",
            "preclean_coherence",
            "clean_after_delta",
            "clean_after_coherence",
            "gap",
            "flag",
        ],
    )


def cleaning_curve(frame: pd.DataFrame, min_coherence: float) -> pd.DataFrame:
    """Best feasible delta against the number of massive dims cleaned (0,1,2,3,5,all)."""
    best = _best_by_method(frame, min_coherence)
    out = []
    for key in sorted(_pairs(frame)):
        for base in sorted({_base(m) for m in frame["method"].unique()}):
            for dims, suffix in CURVE_STEPS:
                method = base + suffix
                if not (frame["method"] == method).any():
                    continue
                hit = best.get((*key, method))
                out.append(
                    {
                        **dict(zip(KEY, key, strict=True)),
                        "method": base,
                        "dims_cleaned": dims,
                        "variant": method,
                        "best_delta": _get(hit, "trait_delta"),
                        "coefficient": _get(hit, "coefficient"),
                    }
                )
    return pd.DataFrame(
        out, columns=KEY + ["method", "dims_cleaned", "variant", "best_delta", "coefficient"]
    )


def coefficient_table(frame: pd.DataFrame, min_coherence: float) -> pd.DataFrame:
    """Optimal coefficient per (model, trait, position, method), the mean_diff/probe ratio of the
    base methods, and the shift cleaning causes relative to the uncleaned base method."""
    best = _best_by_method(frame, min_coherence)
    out = []
    for (*key, method), hit in sorted(best.items()):
        base = _base(method)
        base_hit = best.get((*key, base))
        md, pr = best.get((*key, "mean_diff")), best.get((*key, "probe"))
        out.append(
            {
                **dict(zip(KEY, key, strict=True)),
                "method": method,
                "layer": int(hit["layer"]),
                "coefficient": float(hit["coefficient"]),
                "weight": float(hit["weight"]),
                "best_delta": float(hit["trait_delta"]),
                "mean_diff_probe_ratio": (
                    float(md["coefficient"]) / float(pr["coefficient"])
                    if md is not None and pr is not None and float(pr["coefficient"]) != 0
                    else np.nan
                ),
                "cleaning_shift": (
                    float(hit["coefficient"]) - float(base_hit["coefficient"])
                    if base_hit is not None and method != base
                    else np.nan
                ),
            }
        )
    return pd.DataFrame(
        out,
        columns=KEY
        + [
            "method",
            "layer",
            "coefficient",
            "weight",
            "best_delta",
            "mean_diff_probe_ratio",
            "cleaning_shift",
        ],
    )


def _base(method: str) -> str:
    """The registered method a (possibly cleaned) method name builds on."""
    from steerops.errors import SteeropsError
    from steerops.specs import parse_method

    try:
        return parse_method(method).base
    except SteeropsError:  # a method this install does not know: report it on its own
        return method


def _pairs(frame: pd.DataFrame) -> set[tuple]:
    return set(map(tuple, frame[KEY].drop_duplicates().to_numpy().tolist()))


def _get(row: pd.Series | None, key: str) -> float:
    return float(row[key]) if row is not None else np.nan
