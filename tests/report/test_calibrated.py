"""The cleaning tables' `dim_set` column: the set each side's vectors were cleaned of."""

from __future__ import annotations

import pandas as pd

from steerops.report import tables
from steerops.report.calibrated import with_dim_sets

SETS = {
    ("t", "p", "c", "mean_diff_cleaned"): {"dim_set": "massive", "dims_removed": {"3": [7]}},
    ("t", "p", "c", "probe_preclean"): {"dim_set": "top_mean", "dims_removed": {"3": [1, 7]}},
    ("t", "p", "c", "probe_cleaned"): {"dim_set": "massive"},
}


def _prepost(*rows: tuple[str, str, str]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"trait": "t", "position": "p", "component": "c", "method": m}
            | {"preclean_status": pre}
            | {"clean_after_status": post}
            for m, pre, post in rows
        ]
    )


def test_a_one_sided_row_names_only_the_side_that_ran():
    prepost = _prepost(("mean_diff", tables.NOT_STEERED, "ok"), ("probe", "ok", "no effect"))
    with_dim_sets(
        pd.DataFrame(
            columns=["trait", "position", "component", "variant", "dims_cleaned", "layer"]
        ),
        prepost,
        SETS,
    )
    assert list(prepost["dim_set"]) == ["massive", "preclean top_mean, clean-after massive"]


def test_a_side_that_ran_without_metadata_is_marked_unknown():
    prepost = _prepost(("mean_diff", "ok", "ok"))
    with_dim_sets(
        pd.DataFrame(
            columns=["trait", "position", "component", "variant", "dims_cleaned", "layer"]
        ),
        prepost,
        SETS,
    )
    assert list(prepost["dim_set"]) == ["preclean ?, clean-after massive"]


def test_the_curve_counts_the_dims_removed_at_the_chosen_layer():
    curve = pd.DataFrame(
        {
            "trait": "t",
            "position": "p",
            "component": "c",
            "variant": ["mean_diff", "mean_diff_cleaned", "mean_diff_cleaned", "probe_cleaned"],
            "dims_cleaned": ["0", "all", "all", "all"],
            "layer": [3, 3, float("nan"), 3],
        }
    )
    with_dim_sets(curve, _prepost(), SETS)
    # uncleaned 0; "all" of the massive set is 1 dim here; unknown without a layer or record
    assert curve["dims_removed"].tolist()[:2] == [0, 1]
    assert curve["dims_removed"].isna().tolist() == [False, False, True, True]
