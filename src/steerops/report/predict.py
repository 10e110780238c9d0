"""Can the optimal steering weight be predicted from vector and activation properties?

Each candidate predictor is a least-squares fit of the optimal absolute weight on a few
features of the (layer, vector) it was found at; leave-one-out mean absolute error says how
well it generalises, compared against predicting the mean. Few points (one per method x
position x model), so predictors stay small: a scale on one norm, or a 2-feature linear fit.

The rows are the report's "ok" cells only (an effect held out), and distinct ones: an alias
(the same vectors under another name), a near copy (a cleaned variant that barely differs
from its method and chose its config: the same point again) and, per predictor, a row
equal to another in the features it reads and the weight are left out, so a held-out row
never has its twin in the fit (rows of two methods at one layer share its norms). Nothing
is fitted where the weights leave nothing to predict: all equal (a mean error of 0 would
read as a perfect predictor), or all at their grid's largest coefficient (each optimum may
lie beyond it: a lower bound, not a target).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import LeaveOneOut

# name -> (features, fit_intercept)
PREDICTORS: dict[str, tuple[list[str], bool]] = {
    "mean": ([], True),
    "k * layer_norm": (["layer_norm"], False),
    "k * layer_norm_clean": (["layer_norm_clean"], False),
    "a + b * |mean_proj|": (["abs_mean_proj"], True),
    "linear(layer_norm, layer_norm_clean)": (["layer_norm", "layer_norm_clean"], True),
}


FEATURES = ["layer_norm", "layer_norm_clean", "abs_mean_proj"]
MIN_ROWS = 3  # leave-one-out fits each point from the others: one fit of 2 is a line


def distinct(
    features: pd.DataFrame, target: str = "weight", columns: list[str] | None = None
) -> pd.DataFrame:
    """Rows that are neither aliases nor copies of an earlier row in the model, the target
    and `columns` (default: every feature). A predictor's rows are distinct in the columns
    it reads: rows that differ only in a feature it ignores are one point to it (the mean,
    reading none, keeps the rows distinct in every feature: different cells)."""
    if "alias_of" in features:
        features = features[features["alias_of"].fillna("") == ""]
    if "near_copy_of" in features:  # its twin's point, where the twin is an ok cell too
        features = features[~_twin_present(features)]
    used = FEATURES if columns is None else columns
    keys = [c for c in ["model", *used, target] if c in features]
    return features.drop_duplicates(subset=keys, keep="first")


COLUMNS = ["predictor", "n", "loo_mae", "loo_mae_relative", "not_fitted"]


def unfit_reason(data: pd.DataFrame, target: str = "weight") -> str:
    """Why no predictor is fitted on `data` ("": it can be)."""
    if len(data) < MIN_ROWS:
        cells = "cell" if len(data) == 1 else "cells"
        return f"{len(data)} distinct ok {cells} (leave-one-out needs {MIN_ROWS})"
    if data[target].nunique() == 1:
        return "every ok cell chose the same weight: nothing to predict"
    if "at_largest_coefficient" in data and data["at_largest_coefficient"].astype(bool).all():
        return (
            "every ok cell chose its grid's largest coefficient: each optimum may lie beyond "
            "it (a lower bound, not a target)"
        )
    return ""


def _twin_present(features: pd.DataFrame) -> pd.Series:
    """Whether each row is a near copy whose uncleaned method has a row here (same model
    and position): a near copy without one is the only point of that test."""
    place = [c for c in ("model", "position") if c in features]
    rows = set(map(tuple, features[[*place, "method"]].astype(str).to_numpy()))
    twins = features["near_copy_of"].fillna("").astype(str)
    return pd.Series(
        [
            bool(twin) and (*key, twin) in rows
            for key, twin in zip(
                map(tuple, features[place].astype(str).to_numpy()), twins, strict=True
            )
        ],
        index=features.index,
        dtype=bool,  # an empty frame's mask too: an object Series would select columns
    )


def loo_errors(features: pd.DataFrame, target: str = "weight") -> pd.DataFrame:
    """Leave-one-out MAE of every predictor on the distinct rows (rows with missing features
    are skipped); `not_fitted` says why a predictor has none."""
    out = []
    for name, (cols, intercept) in PREDICTORS.items():
        # a left-out row must not keep a twin (in what this predictor reads) in the fit
        data = distinct(features, target, cols or None).dropna(subset=cols + [target])
        y = data[target].to_numpy(float)
        reason = unfit_reason(data, target)
        if reason:
            out.append(
                {
                    "predictor": name,
                    "n": len(data),
                    "loo_mae": np.nan,
                    "loo_mae_relative": np.nan,
                    "not_fitted": reason,
                }
            )
            continue
        errors = []
        for train, test in LeaveOneOut().split(y):
            pred = _fit_predict(data, cols, intercept, train, test, y)
            errors.append(abs(pred - y[test][0]))
        mae = float(np.mean(errors))
        out.append(
            {
                "predictor": name,
                "n": len(data),
                "loo_mae": mae,
                "loo_mae_relative": mae / float(np.mean(np.abs(y))),
                "not_fitted": "",
            }
        )
    return pd.DataFrame(out, columns=COLUMNS)


def _fit_predict(data, cols, intercept, train, test, y) -> float:
    if not cols:
        return float(np.mean(y[train]))
    x = data[cols].to_numpy(float)
    model = LinearRegression(fit_intercept=intercept).fit(x[train], y[train])
    return float(model.predict(x[test])[0])


def fit_predictor(features: pd.DataFrame, name: str, target: str = "weight"):
    """Fit predictor `name` on all rows; returns a callable features-frame -> predictions."""
    cols, intercept = PREDICTORS[name]
    data = distinct(features, target, cols or None).dropna(subset=cols + [target])
    y = data[target].to_numpy(float)
    if not cols:
        mean = float(np.mean(y))
        return lambda frame: np.full(len(frame), mean)
    model = LinearRegression(fit_intercept=intercept).fit(data[cols].to_numpy(float), y)

    def predict_rows(frame: pd.DataFrame) -> np.ndarray:
        x = frame[cols].to_numpy(float)
        pred = np.full(len(frame), np.nan)
        ok = ~np.isnan(x).any(axis=1)
        if ok.any():
            pred[ok] = model.predict(x[ok])
        return pred

    return predict_rows


def recommendations(features: pd.DataFrame, errors: pd.DataFrame) -> pd.DataFrame:
    """A starting coefficient per (model, method, coefficient unit): the median optimal
    coefficient (never across units: a norm multiple and an absolute weight do not mix),
    and the weight the best leave-one-out predictor gives at the median feature values (a
    weight, so every unit's cells fit it). The optimum
    of a cell chosen at its layer's largest coefficient may lie beyond the grid, so a start
    from such cells is a lower bound: `n_at_largest_coefficient` counts them. `near_copy_of`
    names the uncleaned method(s) whose near copies all its cells are: its start repeats
    theirs, not a second support for it."""
    # aliases only: a method whose cells equal another's in every feature is one point to
    # a predictor (fit_predictor drops its twins) but still a method to start
    if "alias_of" in features:
        features = features[features["alias_of"].fillna("") == ""]
    scored = errors.dropna(subset=["loo_mae"])
    best_name = None  # no predictor scored (too few cells): no predicted weight at all; the
    # mean of every cell's weight, of every model and layer, is no prediction for any of them
    if not scored.empty:
        # on a tie (up to rounding) the simplest predictor wins: PREDICTORS' order
        least = float(scored["loo_mae"].min())
        tied = set(scored[scored["loo_mae"] <= least * (1 + 1e-9) + 1e-12]["predictor"])
        best_name = next(name for name in PREDICTORS if name in tied)
    predict = fit_predictor(features, best_name) if len(features) and best_name else None
    out = []
    if "unit" not in features:  # a frame that names no unit: one unit throughout
        features = features.assign(unit="")
    for (model, method, unit), rows in features.groupby(["model", "method", "unit"], sort=True):
        typical = rows.median(numeric_only=True).to_frame().T
        predicted = float(predict(typical)[0]) if predict is not None else np.nan
        out.append(
            {
                "model": model,
                "method": method,
                "n": len(rows),
                "start_coefficient": float(rows["coefficient"].median()),
                "unit": unit,
                "predicted_weight": predicted,
                "predictor": best_name,
                "n_at_largest_coefficient": int(rows["at_largest_coefficient"].astype(bool).sum())
                if "at_largest_coefficient" in rows
                else 0,
                "near_copy_of": _copied(rows),
            }
        )
    columns = ["model", "method", "n", "start_coefficient", "unit", "predicted_weight", "predictor"]
    return pd.DataFrame(out, columns=[*columns, "n_at_largest_coefficient", "near_copy_of"])


def _copied(rows: pd.DataFrame) -> str:
    """The twins named where every one of `rows` is a near copy ("" where any is not)."""
    twins = rows["near_copy_of"].fillna("").astype(str) if "near_copy_of" in rows else None
    if twins is None or (twins == "").any():
        return ""
    return ",".join(sorted(set(twins)))
