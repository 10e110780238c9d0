"""The cleaning tables' `dim_set` column: the set each side's vectors were cleaned of."""

from __future__ import annotations

import pandas as pd

from steerops.report import tables
from steerops.report.calibrated import with_dim_sets

SETS = {
    ("t", "p", "mean_diff_cleaned"): "massive",
    ("t", "p", "probe_preclean"): "top_mean",
    ("t", "p", "probe_cleaned"): "massive",
}


def _prepost(*rows: tuple[str, str, str]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"trait": "t", "position": "p", "method": m, "preclean_status": pre}
            | {"clean_after_status": post}
            for m, pre, post in rows
        ]
    )


def test_a_one_sided_row_names_only_the_side_that_ran():
    prepost = _prepost(("mean_diff", tables.NOT_STEERED, "ok"), ("probe", "ok", "no effect"))
    with_dim_sets(pd.DataFrame(columns=["trait", "position", "variant"]), prepost, SETS)
    assert list(prepost["dim_set"]) == ["massive", "preclean top_mean, clean-after massive"]


def test_a_side_that_ran_without_metadata_is_marked_unknown():
    prepost = _prepost(("mean_diff", "ok", "ok"))
    with_dim_sets(pd.DataFrame(columns=["trait", "position", "variant"]), prepost, SETS)
    assert list(prepost["dim_set"]) == ["preclean ?, clean-after massive"]
