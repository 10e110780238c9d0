"""Coefficient predictors: leave-one-out errors against an independent computation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from steerops.report import predict


def test_predictor_loo_matches_independent_computation():
    rng = np.random.default_rng(0)
    norms = rng.uniform(5, 50, 12)
    features = pd.DataFrame(
        {
            "model": "m",
            "method": ["mean_diff", "probe"] * 6,
            "position": "p",
            "layer": 1,
            "coefficient": 1.0,
            "layer_norm": norms,
            "layer_norm_clean": norms * 0.5,
            "abs_mean_proj": rng.uniform(0, 1, 12),
            "weight": 0.8 * norms + rng.normal(0, 0.1, 12),
        }
    )
    errors = predict.loo_errors(features).set_index("predictor")
    # independent LOO for the one-parameter scale k * layer_norm: k = <x,y>/<x,x> without i
    x, y = features["layer_norm"].to_numpy(), features["weight"].to_numpy()
    ref = np.mean(
        [
            abs(
                y[i]
                - x[i]
                * np.dot(np.delete(x, i), np.delete(y, i))
                / np.dot(np.delete(x, i), np.delete(x, i))
            )
            for i in range(len(x))
        ]
    )
    assert errors.loc["k * layer_norm", "loo_mae"] == pytest.approx(ref, rel=1e-9)
    mean_ref = np.mean([abs(y[i] - np.delete(y, i).mean()) for i in range(len(y))])
    assert errors.loc["mean", "loo_mae"] == pytest.approx(mean_ref, rel=1e-9)
    # relative: the error as a share of the typical weight
    scale = np.mean(np.abs(y))
    assert errors.loc["k * layer_norm", "loo_mae_relative"] == pytest.approx(ref / scale, rel=1e-9)
    assert errors.loc["mean", "loo_mae_relative"] == pytest.approx(mean_ref / scale, rel=1e-9)
    assert errors.loc["k * layer_norm", "loo_mae"] < 0.2 < errors.loc["mean", "loo_mae"]
    recs = predict.recommendations(features, errors.reset_index())
    md = recs[recs["method"] == "mean_diff"].iloc[0]
    assert md["predictor"] in ("k * layer_norm", "k * layer_norm_clean")
    expected = 0.8 * np.median(norms[::2])
    assert md["predicted_weight"] == pytest.approx(expected, rel=0.05)


def test_equal_errors_recommend_the_simplest_predictor():
    # the weight is the layer norm: every predictor reading a norm or a multiple of it is
    # exact (LOO error 0), and the first of them in PREDICTORS' order is recommended
    norms = np.array([3.0, 4.0, 6.0, 7.0])
    features = pd.DataFrame(
        {
            "model": "m",
            "method": ["mean_diff", "probe", "pca", "gradient"],
            "layer": [1, 2, 3, 4],
            "coefficient": 2.0,
            "layer_norm": norms,
            "layer_norm_clean": 0.5 * norms,
            "abs_mean_proj": 0.1 * norms,
            "weight": norms,
        }
    )
    errors = predict.loo_errors(features).set_index("predictor")
    assert errors.drop(index="mean")["loo_mae"].max() == pytest.approx(0, abs=1e-9)
    assert errors.loc["mean", "loo_mae"] > 1
    recs = predict.recommendations(features, errors.reset_index())
    assert set(recs["predictor"]) == {"k * layer_norm"}


def _cells(**columns) -> pd.DataFrame:
    base = {
        "model": "m",
        "method": ["mean_diff", "probe", "pca", "gradient"],
        "layer": [1, 2, 3, 4],
        "coefficient": 2.0,
        "layer_norm": [3.0, 4.0, 6.0, 7.0],
        "layer_norm_clean": [2.5, 3.0, 5.5, 6.0],
        "abs_mean_proj": [0.1, 0.4, 0.2, 0.3],
        "weight": [2.0, 3.0, 4.5, 5.0],
        "at_largest_coefficient": False,
    }
    return pd.DataFrame(base | columns)


@pytest.mark.parametrize(
    ("columns", "why"),
    [
        ({"weight": 2.0}, "every ok cell chose the same weight"),
        ({"at_largest_coefficient": True}, "every ok cell chose its grid's largest coefficient"),
    ],
)
def test_weights_that_leave_nothing_to_predict_are_not_fitted(columns, why):
    # all equal, a mean error of 0 would read as a perfect predictor; all at the grid's
    # edge, each optimum may lie beyond it
    errors = predict.loo_errors(_cells(**columns))
    assert errors["loo_mae"].isna().all() and (errors["n"] == 4).all()
    assert errors["not_fitted"].str.startswith(why).all()
    recs = predict.recommendations(_cells(**columns), errors)
    assert recs["predictor"].isna().all() and recs["predicted_weight"].isna().all()
    fitted = predict.loo_errors(_cells(at_largest_coefficient=[True, True, True, False]))
    assert fitted["loo_mae"].notna().all() and (fitted["not_fitted"] == "").all()


def test_a_near_copy_is_its_methods_point_in_the_fit():
    # a near copy chose its method's config: the same weight again, features a hair apart
    cells = _cells(near_copy_of=["", "", "", ""])
    copy = cells.iloc[[0]].assign(
        method="mean_diff_cleaned", near_copy_of="mean_diff", abs_mean_proj=0.1001
    )
    both = pd.concat([cells, copy], ignore_index=True)
    errors = predict.loo_errors(both)
    assert (errors["n"] == 4).all()
    assert errors.equals(predict.loo_errors(cells))
    recs = predict.recommendations(both, errors)
    assert "mean_diff_cleaned" in set(recs["method"])  # still a method to start
    # ... and said to repeat its twin's start, where every cell behind it is a near copy
    named = recs.set_index("method")["near_copy_of"]
    assert named["mean_diff_cleaned"] == "mean_diff" and named["mean_diff"] == ""
    mixed = pd.concat([both, copy.assign(near_copy_of="", layer=9)], ignore_index=True)
    named = predict.recommendations(mixed, errors).set_index("method")["near_copy_of"]
    assert named["mean_diff_cleaned"] == ""  # one cell of its own: a support of its own
    # its method not an ok cell here: the copy is the only point of that test, and kept
    alone = both[both["method"] != "mean_diff"]
    assert (predict.loo_errors(alone)["n"] == 4).all()


def test_a_start_from_optima_at_the_grid_edge_says_how_many():
    features = pd.DataFrame(
        {
            "model": "m",
            "method": ["mean_diff", "mean_diff", "mean_diff", "probe"],
            "layer": [1, 2, 3, 1],
            "coefficient": [2.0, 3.0, 4.0, 1.0],
            "weight": [2.0, 3.0, 4.0, 1.0],
            "at_largest_coefficient": [True, False, True, False],
            "layer_norm": [3.0, 4.0, 5.0, 3.0],
            "layer_norm_clean": [2.5, 3.5, 4.5, 2.5],
            "abs_mean_proj": [0.1, 0.4, 0.2, 0.3],
        }
    )
    recs = predict.recommendations(features, predict.loo_errors(features)).set_index("method")
    assert recs.loc["mean_diff", "n_at_largest_coefficient"] == 2
    assert recs.loc["probe", "n_at_largest_coefficient"] == 0
    assert recs.loc["mean_diff", "start_coefficient"] == 3.0


def test_a_left_out_row_keeps_no_twin_in_what_its_predictor_reads():
    # two layers' norms, each shared by 8 methods at the same weight: 2 points, not 16
    rows = []
    for layer, (norm, clean, weight) in {1: (3.0, 2.0, 1.5), 2: (5.0, 4.5, 2.5)}.items():
        for k in range(8):
            rows.append(
                {
                    "model": "m",
                    "method": f"method{k}",
                    "layer": layer,
                    "coefficient": 2.0,
                    "layer_norm": norm,
                    "layer_norm_clean": clean,
                    "abs_mean_proj": 0.1 * k + layer,
                    "weight": weight,
                }
            )
    errors = predict.loo_errors(pd.DataFrame(rows)).set_index("predictor")
    assert errors.loc["linear(layer_norm, layer_norm_clean)", "n"] == 2
    assert np.isnan(errors.loc["linear(layer_norm, layer_norm_clean)", "loo_mae"])
    assert errors.loc["a + b * |mean_proj|", "n"] == 16  # its feature tells the rows apart


def test_start_coefficients_never_mix_coefficient_units():
    """Cells steered with coefficients in norm multiples and in absolute weights: each unit
    gets its own start, the median of its own cells only."""
    features = pd.DataFrame(
        {
            "model": "m",
            "method": "mean_diff",
            "layer": [1, 2, 3, 4],
            "coefficient": [0.2, 0.4, 8.0, 12.0],
            "unit": ["norm", "norm", "absolute", "absolute"],
            "weight": [6.0, 12.0, 8.0, 12.0],
            "at_largest_coefficient": False,
            "layer_norm": [30.0, 30.0, 40.0, 60.0],
            "layer_norm_clean": [20.0, 20.0, 30.0, 50.0],
            "abs_mean_proj": [1.0, 2.0, 3.0, 4.0],
        }
    )
    recs = predict.recommendations(features, predict.loo_errors(features)).set_index("unit")
    assert recs.loc["norm", "start_coefficient"] == pytest.approx(0.3)
    assert recs.loc["absolute", "start_coefficient"] == pytest.approx(10.0)
    assert (recs["n"] == 2).all()


def test_no_scored_predictor_predicts_no_weight():
    """Two ok cells of two models (weights 28.6 and 1000): too few to score any predictor,
    so no predicted weight, not the mean of both models' weights for each."""
    features = pd.DataFrame(
        {
            "model": ["small", "large"],
            "method": "mean_diff",
            "layer": [12, 30],
            "coefficient": [0.2, 0.2],
            "weight": [28.6, 1000.0],
            "at_largest_coefficient": False,
            "layer_norm": [143.0, 5000.0],
            "layer_norm_clean": [140.0, 4900.0],
            "abs_mean_proj": [1.0, 2.0],
        }
    )
    errors = predict.loo_errors(features)
    assert errors["loo_mae"].isna().all()
    recs = predict.recommendations(features, errors)
    assert recs["predicted_weight"].isna().all() and recs["predictor"].isna().all()
    assert sorted(recs["start_coefficient"]) == [0.2, 0.2]
    from steerops.report.markdown import markdown_table

    assert "None" not in markdown_table(recs)  # shown empty, as a missing number is


def test_every_method_with_an_ok_cell_gets_a_start_even_with_a_twins_features():
    """Two methods whose ok cells read the same norms and weight (cleaning before or after a
    linear mean) are one point to a predictor, but each method still gets its own start;
    an alias (the same vectors under another name) gets none."""
    base = {
        "model": "m",
        "layer": 12,
        "coefficient": 0.2,
        "weight": 23.4,
        "at_largest_coefficient": False,
        "layer_norm": 117.2,
        "layer_norm_clean": 103.4,
        "abs_mean_proj": 31.9,
    }
    features = pd.DataFrame(
        [
            {**base, "method": "mean_diff", "layer_norm_clean": 110.0, "alias_of": ""},
            {**base, "method": "mean_diff_cleaned", "alias_of": ""},
            {**base, "method": "mean_diff_preclean", "alias_of": ""},
            {**base, "method": "copy_of_cleaned", "alias_of": "mean_diff_cleaned"},
        ]
    )
    recs = predict.recommendations(features, predict.loo_errors(features))
    assert sorted(recs["method"]) == ["mean_diff", "mean_diff_cleaned", "mean_diff_preclean"]
    assert (recs["n"] == 1).all()
