"""The cleaning tables' `dim_set` column: the set each side's vectors were cleaned of."""

from __future__ import annotations

import pandas as pd

from steerops.report import tables
from steerops.report.calibrated import removed_dims, with_dim_sets

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
            "variant": [
                "mean_diff",
                "mean_diff_cleaned",
                "mean_diff_cleaned",
                "probe_cleaned",
                "probe_preclean",
            ],
            "dims_cleaned": ["0", "all", "all", "all", "all"],
            "layer": [3, 3, float("nan"), 3, 3],
        }
    )
    with_dim_sets(curve, _prepost(), SETS)
    # uncleaned 0; "all" of the massive set is 1 dim here; unknown without a layer or record
    assert curve["dims_removed"].tolist()[:2] == [0, 1]
    assert curve["dims_removed"].isna().tolist() == [False, False, True, True, False]
    # which ones, in the metadata's order ("" where none or unknown)
    assert curve["removed_ids"].tolist() == ["", "7", "", "", "1, 7"]


def test_a_near_copy_at_its_uncleaned_method_s_config_repeats_its_test():
    """Only a compared variant under `tables.BARELY` of the vector, under the same settings,
    that chose its uncleaned method's layer and coefficient repeats that method's test."""
    import numpy as np

    from steerops.report.calibrated import near_copies

    key = {"model": "m", "trait": "t", "position": "p", "component": "c", "method": "md"}
    same = {"layer": 12.0, "coefficient": 0.2, "gain": 0.0, "gain_note": ""}
    rows = [
        {"variant": "md", "dims_cleaned": "0", "removed_share": np.nan} | same,
        {"variant": "md_near", "dims_cleaned": "1", "removed_share": 0.01} | same,
        {"variant": "md_far", "dims_cleaned": "2", "removed_share": 0.2} | same,
        {"variant": "md_moved", "dims_cleaned": "3", "removed_share": 0.01} | same,
        {"variant": "md_other", "dims_cleaned": "5", "removed_share": 0.01} | same,
        {"variant": "md_unpaired", "dims_cleaned": "all", "removed_share": 0.01} | same,
        {"variant": "md_deeper", "dims_cleaned": "top5", "removed_share": 0.01} | same,
        {"variant": "md_as_text", "dims_cleaned": "top8", "removed_share": 0.01} | same,
    ]
    rows[3]["coefficient"] = 0.25  # another config: another test
    rows[4]["gain_note"] = tables.SETTINGS_DIFFER
    rows[5]["gain"] = np.nan  # no question both scored
    rows[6]["layer"] = 16.0  # another layer: another test
    rows[7] |= {"layer": 12, "coefficient": "0.2"}  # the same config, spelled otherwise
    curve = pd.DataFrame([key | row for row in rows])
    near = {("m", "t", "p", "c", v): "md" for v in ("md_near", "md_as_text")}
    assert near_copies(curve) == near
    # no uncleaned row to repeat: none
    assert near_copies(curve[curve["dims_cleaned"] != "0"]) == {}
    assert near_copies(curve.iloc[:0]) == {}


def test_what_cleaning_removed_is_named_by_the_set_it_cleaned():
    assert removed_dims(["massive", ""]) == "massive dims"
    assert removed_dims(["top_mean"]) == "largest-mean dims"  # not necessarily massive
    assert removed_dims(["top_mean", "massive"]) == "largest-mean dims or massive dims"
    assert removed_dims([]) == "massive dims"  # the question, before any set is known
