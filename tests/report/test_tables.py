"""Report tables on a synthetic grid with known answers: chosen on the selection half,
reported held out, "no effect" and "needs finer coefficients" never give a coefficient."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from report_data import SYNTHETIC, synthetic_grid, write_params
from steering_data import reference_interval
from steerops import stats
from steerops.config import load_params
from steerops.report import tables
from steerops.report.load import load_results


@pytest.fixture(scope="module")
def frame(tmp_path_factory):
    folder = tmp_path_factory.mktemp("grid")
    synthetic_grid(folder, same_vectors={"mean_diff_preclean": "mean_diff_cleaned"})
    return load_results(load_params(write_params(folder)))


def _row(table, **keys):
    hit = table
    for k, v in keys.items():
        hit = hit[hit[k] == v]
    assert len(hit) == 1, keys
    return hit.iloc[0]


def test_gap_analysis_known_answers(frame):
    gap = tables.gap_analysis(frame, 68)
    md = _row(gap, method="mean_diff")
    assert (md["status"], md["delta"], md["coefficient"], md["layer"]) == ("ok", 70, 1.5, 2)
    assert (md["n"], md["selection_n"]) == (20, 20) and 0 < md["delta_lo"] < 70 < md["delta_hi"]
    assert _row(gap, method="probe")["delta"] == 95
    # probe's optimum is the grid's largest coefficient (2.0): it may lie beyond the grid
    assert _row(gap, method="probe")["at_largest_coefficient"]
    assert not md["at_largest_coefficient"]
    # coherent but without an effect: "no effect"
    rb = _row(gap, method="random_baseline")
    assert rb["status"] == "no effect" and rb["delta_lo"] <= 0
    # never coherent when steered: the unsteered config's coherence 100 is not "reached"
    gr = _row(gap, method="gradient")
    assert gr["status"] == "needs finer coefficients" and np.isnan(gr["delta"])
    assert gr["best_coherence_reached"] == 60
    assert _row(gap, method="mean_diff_preclean")["alias_of"] == "mean_diff_cleaned"


def test_each_chosen_config_is_tested_held_out_and_adjusted_over_the_report_s_cells(frame):
    gap = tables.gap_analysis(frame, 68)
    md = _row(gap, method="mean_diff")
    chosen = frame[
        (frame["method"] == "mean_diff") & (frame["layer"] == 2) & (frame["coefficient"] == 1.5)
    ].iloc[0]
    # the baseline scores 0 on every question: a held-out delta is the config's trait score
    deltas = list(chosen["heldout_traits"].values())
    moved = sum(d > 0 for d in deltas)  # 70% of the held-out questions refuse: 14 of 20
    assert moved == 14 and set(deltas) == {0.0, 100.0}
    # only the unflipped signs of the 14 reach the mean: p 0.5**14, counted exactly (n 20
    # is within `stats.EXACT_FLIPS`)
    assert md["heldout_p"] == pytest.approx(0.5**14, rel=1e-9)
    assert _row(gap, method="random_baseline")["heldout_p"] > 0.05
    # q: Benjamini-Hochberg by its definition over every tested cell but the alias
    alias = gap["alias_of"] != ""
    tested = gap[~alias & gap["heldout_p"].notna()].sort_values("heldout_p")
    p, m = tested["heldout_p"].to_numpy(), len(tested)
    q = [min(1.0, min(p[j] * m / (j + 1) for j in range(i, m))) for i in range(m)]
    assert tested["heldout_q"].to_numpy() == pytest.approx(q)
    [twin] = gap[alias].itertuples()  # its twin's test: counted once
    assert np.isnan(twin.heldout_q) and not np.isnan(twin.heldout_p)
    # a cell with no coherent steered config has no choice to test
    assert np.isnan(_row(gap, method="gradient")["heldout_p"])


def test_a_near_copy_s_test_is_counted_once_in_the_q_values(frame):
    """A near copy's p stays on its row, but it is left out of the Benjamini-Hochberg family
    (scipy's, an independent reference), so two near-identical p's do not lower each
    other's q."""
    from scipy.stats import false_discovery_control

    key = tuple(frame[frame["method"] == "mean_diff_top2"][tables.GROUP].iloc[0])
    gap = tables.gap_analysis(frame, 68, near_copies={key: "mean_diff"})
    copy = _row(gap, method="mean_diff_top2")
    assert copy["near_copy_of"] == "mean_diff"
    assert set(gap[gap["method"] != "mean_diff_top2"]["near_copy_of"]) == {""}
    family = gap[(gap["alias_of"] == "") & (gap["near_copy_of"] == "")]
    family = family[family["heldout_p"].notna()]
    assert len(family) == int(gap["heldout_q"].notna().sum()) - 1 >= 3
    expected = false_discovery_control(family["heldout_p"].to_numpy(), method="bh")
    assert family["heldout_q"].to_numpy() == pytest.approx(expected)
    # the copy's q: its own p in its twin's place, the family's size unchanged
    stand_in = family["heldout_p"].where(family["method"] != "mean_diff", copy["heldout_p"])
    [q] = false_discovery_control(stand_in.to_numpy(), method="bh")[
        (family["method"] == "mean_diff").to_numpy()
    ]
    assert copy["heldout_p"] != _row(gap, method="mean_diff")["heldout_p"]
    assert copy["heldout_q"] == pytest.approx(q)
    # counted, the copy lowers the q of the method it copies
    counted = _row(tables.gap_analysis(frame, 68), method="mean_diff")["heldout_q"]
    assert counted < _row(gap, method="mean_diff")["heldout_q"]
    # an alias is one test already: never a near copy too
    twin = tuple(frame[frame["method"] == "mean_diff_preclean"][tables.GROUP].iloc[0])
    gap = tables.gap_analysis(frame, 68, near_copies={twin: "mean_diff"})
    assert _row(gap, method="mean_diff_preclean")["near_copy_of"] == ""


def test_threshold_changes_the_answer(frame):
    gap = tables.gap_analysis(frame, 85)
    assert _row(gap, method="mean_diff")["delta"] == 40
    assert _row(gap, method="probe")["coefficient"] == 1.5


def test_preclean_vs_clean_after_gap_is_paired_on_held_out_questions(frame):
    table = tables.preclean_vs_clean_after(frame, 68, seed=0)
    md = _row(table, method="mean_diff")
    assert (md["preclean_delta"], md["clean_after_delta"], md["gap"]) == (20, 65, -45)
    assert md["gap_hi"] < 0 and md["n"] == 20
    assert md["flag"] == "likely implementation problem"
    pr = _row(table, method="probe")
    assert (pr["preclean_delta"], pr["clean_after_delta"]) == (40, 70)
    assert pr["flag"] == ""
    # each side carries its own held-out interval, the gap analysis's for that variant
    gap = tables.gap_analysis(frame, 68).set_index("method")
    for side, variant in (("preclean", "mean_diff_preclean"), ("clean_after", "mean_diff_cleaned")):
        held = gap.loc[variant, ["delta", "delta_lo", "delta_hi", "coherence"]].to_numpy(float)
        said = md[[f"{side}_{k}" for k in ("delta", "delta_lo", "delta_hi", "coherence")]]
        assert said.to_numpy(float) == pytest.approx(held)
        assert held[1] < held[0] < held[2]


@pytest.mark.parametrize(
    ("mean", "lo", "hi", "flagged"),
    [
        (-45.0, -70.0, -20.0, True),  # large, and its interval excludes zero
        (-45.0, -90.0, 5.0, False),  # large but noisy: the interval reaches past zero
        (30.0, -2.0, 60.0, False),
        (-15.0, -25.0, -5.0, False),  # excludes zero, but under the 20 points
    ],
)
def test_only_a_large_gap_whose_interval_excludes_zero_is_flagged(
    frame, monkeypatch, mean, lo, hi, flagged
):
    """The flag's rule (README): |gap| above 20 points AND its 95% interval excluding zero,
    on enough questions: a large noisy gap is no evidence of an implementation problem."""
    monkeypatch.setattr(tables, "paired_gap", lambda *a, **k: stats.Interval(20, mean, lo, hi))
    md = _row(tables.preclean_vs_clean_after(frame, 68, seed=0), method="mean_diff")
    assert (md["gap"], md["gap_lo"], md["gap_hi"]) == (mean, lo, hi)
    assert (md["flag"] == "likely implementation problem") == flagged


def test_a_preclean_side_the_grid_did_not_steer_reads_not_steered(tmp_path):
    spec = {m: v for m, v in SYNTHETIC.items() if m != "mean_diff_preclean"}
    synthetic_grid(tmp_path, spec)
    one_sided = load_results(load_params(write_params(tmp_path)))
    table = tables.preclean_vs_clean_after(one_sided, 68, seed=0)
    md = _row(table, method="mean_diff")
    assert (md["preclean_status"], md["clean_after_status"]) == (tables.NOT_STEERED, "ok")
    assert np.isnan(md["preclean_delta"]) and md["clean_after_delta"] == 65
    assert np.isnan(md["n"]) and np.isnan(md["gap"]) and md["flag"] == ""  # nothing compared
    assert _row(table, method="probe")["preclean_status"] == "ok"


def test_cells_run_under_other_settings_are_not_compared(tmp_path):
    """A scratch `--pipeline` steer of the cleaned method with another scope: its gain over
    the uncleaned method, its gap to preclean and its coefficient shift compare nothing."""
    synthetic_grid(
        tmp_path,
        same_vectors={"mean_diff_preclean": "mean_diff_cleaned"},
        settings_of={"mean_diff_cleaned": {"scope": "response"}},
    )
    frame = load_results(load_params(write_params(tmp_path)))
    curve = tables.cleaning_curve(frame, 68)
    other = _row(curve, variant="mean_diff_cleaned")
    assert np.isnan(other["gain"]) and np.isnan(other["gain_n"])
    assert other["gain_note"] == tables.SETTINGS_DIFFER
    assert other["delta"] == 65  # its own numbers stand
    same = _row(curve, variant="mean_diff_top1")
    assert same["gain_note"] == "" and same["gain_n"] == 20 and not np.isnan(same["gain"])
    gap = _row(tables.preclean_vs_clean_after(frame, 68, seed=0), method="mean_diff")
    assert np.isnan(gap["gap"]) and gap["flag"] == tables.SETTINGS_DIFFER
    coefficients = tables.coefficient_table(frame, 68)
    # the report hands over the gap analysis it has: the same table
    given = tables.coefficient_table(frame, 68, tables.gap_analysis(frame, 68))
    pd.testing.assert_frame_equal(given, coefficients)
    assert np.isnan(_row(coefficients, method="mean_diff_cleaned")["cleaning_shift"])
    assert _row(coefficients, method="mean_diff_top1")["cleaning_shift"] == 0.0
    from steerops.report.results import _cleaning_lines

    lines = _cleaning_lines(curve.assign(dims_removed=np.nan))
    assert any("`mean_diff_cleaned`" in x and "**not compared**" in x for x in lines)
    assert not any("`mean_diff_cleaned`" in x and "cleaning" in x.split("**")[-2] for x in lines)


def test_best_coefficients_carry_the_answers_under_the_bar_of_the_gap_analysis(frame):
    """A best coefficient at a coherence cliff (many held-out answers under the bar) shows it
    where the coefficient is read, with the delta coherent answers carry: the gap analysis's
    own figures for the same cell, not recomputed."""
    gap = tables.gap_analysis(frame, 68)
    best = tables.coefficient_table(frame, 68, gap)
    assert len(best)
    for _, row in best.iterrows():
        cell = gap[(gap[tables.GROUP] == row[tables.GROUP]).all(axis=1)].iloc[0]
        for column in tables.UNDER_BAR:
            assert row[column] == cell[column] or (pd.isna(row[column]) and pd.isna(cell[column]))
        assert row["under_bar"] <= row["coherence_scored"] == row["n"]


def test_cleaning_curve_known_answers(frame):
    curve = tables.cleaning_curve(frame, 68)
    md = curve[curve["method"] == "mean_diff"].set_index("dims_cleaned")["delta"]
    assert md.to_dict() == {"0": 70, "1": 75, "2": 80, "3": 60, "5": 50, "all": 65}
    pr = curve[curve["method"] == "probe"].set_index("dims_cleaned")["delta"]
    assert pr.to_dict() == {"0": 95, "all": 70}
    assert set(curve[curve["method"].isin(["mean_diff", "probe"])]["status"]) == {"ok"}
    # a method with no cleaned variant has nothing to compare: no curve
    assert "random_baseline" in set(frame["method"])
    assert "random_baseline" not in set(curve["method"])


def test_the_cleaning_gain_is_paired_against_the_uncleaned_choice(frame):
    curve = tables.cleaning_curve(frame, 68, seed=4)
    md = curve[curve["method"] == "mean_diff"].set_index("dims_cleaned")

    def held_out(variant: str) -> dict:
        step = md.loc[md["variant"] == variant].iloc[0]
        [row] = frame[
            (frame["method"] == variant)
            & (frame["layer"] == step["layer"])
            & (frame["coefficient"] == step["coefficient"])
        ].to_dict("records")
        return row["heldout_traits"]

    uncleaned = held_out("mean_diff")
    assert np.isnan(md.loc["0", "gain"])  # the uncleaned step is the reference
    # five cleaned variants of mean_diff are compared with it: each interval is at
    # 1 - 0.05/5, so that all five hold together at 95% (a claim among five is no 1-in-20
    # chance per variant); probe's one cleaned variant stays at 95%
    assert set(md["gain_k"].dropna()) == {5}
    assert set(curve[curve["method"] == "probe"]["gain_k"].dropna()) == {1}
    for dims, variant in (("1", "mean_diff_top1"), ("all", "mean_diff_cleaned")):
        cleaned = held_out(variant)
        common = [q for q in cleaned if q in uncleaned]
        d = np.array([cleaned[q] - uncleaned[q] for q in common], dtype=float)
        mean, lo, hi = reference_interval(d, seed=4, confidence=1 - 0.05 / 5)
        assert md.loc[dims, "gain_n"] == len(common) > 0
        assert (md.loc[dims, "gain"], md.loc[dims, "gain_lo"], md.loc[dims, "gain_hi"]) == (
            pytest.approx((mean, lo, hi))
        )
    # the held-out deltas differ by the gain (both against the same baseline)
    assert md.loc["all", "gain"] == pytest.approx(md.loc["all", "delta"] - md.loc["0", "delta"])


def test_coefficient_table_has_ok_cells_only(frame):
    table = tables.coefficient_table(frame, 68)
    md = _row(table, method="mean_diff")
    assert md["coefficient"] == 1.5 and md["mean_diff_probe_ratio"] == pytest.approx(0.75)
    # each ok cell carries its test and its q over the report's cells, as gap_analysis has it
    gap = tables.gap_analysis(frame, 68).set_index("method")
    for row in table.itertuples():
        assert (row.heldout_p, row.heldout_q) == pytest.approx(
            (gap.loc[row.method, "heldout_p"], gap.loc[row.method, "heldout_q"]), nan_ok=True
        )
    assert md["heldout_q"] < 0.05
    assert np.isnan(md["cleaning_shift"])
    assert _row(table, method="mean_diff_top2")["cleaning_shift"] == pytest.approx(-0.5)
    assert _row(table, method="probe_cleaned")["cleaning_shift"] == pytest.approx(-0.5)
    assert not {"random_baseline", "gradient"} & set(table["method"])
    # the grid-edge flag travels with the optimum (probe's is at its largest coefficient)
    assert _row(table, method="probe")["at_largest_coefficient"]
    assert not md["at_largest_coefficient"]


def test_a_chosen_config_of_two_vectors_is_a_row_not_a_crash():
    """The results-log format allows configs of several vectors (layer "4+8", weights
    "10.5+12.25"); one chosen ok is a coefficient-table row with no single weight."""
    import pandas as pd

    def half(steered):
        return stats.half_stats(steered, [(0.0, 95.0)] * 10, 0)

    sel = half([(100.0, 90.0)] * 10)
    row = dict(
        model="m",
        trait="t",
        position="p",
        component="residual",
        method="mean_diff",
        layer="4+8",
        coefficient=1.0,
        weight="10.5+12.25",
        alias_of="",
        unit="norm",
        settings="H",
        sign=1.0,
        **sel.prefixed("selection"),
        **sel.prefixed("heldout"),
    )
    table = tables.coefficient_table(pd.DataFrame([row]), 68)
    assert len(table) == 1 and table["layer"][0] == "4+8" and np.isnan(table["weight"][0])
    assert table["coefficient"][0] == 1.0


def test_cleaned_variants_that_are_one_tensor_are_one_comparison(tmp_path):
    """top2 and top3 the same tensors as top1 (the set had one dim to clean): their gains
    are one test, so the Bonferroni k counts distinct vectors (3 of mean_diff's 5)."""
    same = {"mean_diff_top2": "mean_diff_top1", "mean_diff_top3": "mean_diff_top1"}
    synthetic_grid(tmp_path, same_vectors=same)
    frame = load_results(load_params(write_params(tmp_path)))
    curve = tables.cleaning_curve(frame, 68, seed=4)
    md = curve[curve["method"] == "mean_diff"]
    assert set(md["gain_k"].dropna()) == {3}


def test_a_preclean_gap_on_too_few_questions_is_not_flagged(tmp_path):
    """5 held-out questions, 4 of them apart by 100 points: the interval excludes zero, but
    no test could tell a gap on 5 questions; the flag waits for `stats.min_questions()`."""
    from report_data import cells
    from steering_data import write_grid

    spec = {
        "mean_diff": ([60], [95]),
        "mean_diff_cleaned": ([100], [95]),
        "mean_diff_preclean": ([20], [95]),
    }
    write_grid(tmp_path / "outputs", cells(spec), [f"q{i}" for i in range(10)])
    frame = load_results(load_params(write_params(tmp_path)))
    md = _row(tables.preclean_vs_clean_after(frame, 68, seed=0), method="mean_diff")
    assert (md["n"], md["gap"]) == (5, -80) and md["gap_hi"] < 0
    assert md["flag"] == ""


def test_the_choice_counts_its_held_out_answers_under_the_bar(frame):
    """A mean coherence over the bar can hide answers under it: the gap table counts them
    from the held-out scores (none here: every answer of a synthetic config scores alike)."""
    md = _row(tables.gap_analysis(frame, 68), method="mean_diff")
    assert (md["coherence_scored"], md["under_bar"]) == (20, 0)
    # every answer coherent: the credited delta is the held-out delta, interval and all
    credited = (md["credited_delta"], md["credited_lo"], md["credited_hi"])
    assert credited == pytest.approx((md["delta"], md["delta_lo"], md["delta_hi"]))
    chosen = _row(frame, method="mean_diff", layer=2, coefficient=1.5)
    assert sorted(chosen["heldout_coherences"].values()) == [80.0] * 20
    # at a bar of 81 the same answers would all be under it, but the choice moves to 1.0
    assert _row(tables.gap_analysis(frame, 81), method="mean_diff")["coefficient"] == 1.0


def test_the_gap_table_draws_the_credited_interval_with_the_split_s_seed(frame):
    """Graded held-out deltas (so the bootstrap's bounds depend on its seed), five answers
    under the bar: the gap table's credited interval is the documented bootstrap of the
    deltas with those five counted as unmoved, drawn with the seed it is given."""
    graded = frame.copy()
    md = graded["method"] == "mean_diff"
    questions = list(graded.loc[md, "heldout_coherences"].iloc[0])  # each answer at 80
    assert len(questions) == 20

    def each(values):
        row = dict(zip(questions, values, strict=True))
        return pd.Series([row] * int(md.sum()), index=graded.index[md])

    d = np.array([5.0 * i + 0.37 * i * i for i in range(20)])
    graded.loc[md, "heldout_deltas"] = each(list(d))
    graded.loc[md, "heldout_coherences"] = each([50.0] * 5 + [80.0] * 15)
    credited = np.where(np.arange(20) < 5, np.minimum(d, 0.0), d)
    assert not np.array_equal(credited, d)
    for seed in (0, 7):
        row = _row(tables.gap_analysis(graded, 68, seed=seed), method="mean_diff")
        got = (row["credited_delta"], row["credited_lo"], row["credited_hi"])
        assert got == pytest.approx(reference_interval(credited, seed))
    zero, seven = reference_interval(credited, 0), reference_interval(credited, 7)
    assert zero[1:] != pytest.approx(seven[1:])


def test_the_gap_table_counts_the_answers_moved_and_gives_the_coherence_an_interval(frame):
    """How the chosen config's held-out answers moved (along, against, not at all; an
    unscored one is none of them), and its held-out coherence's interval: the bootstrap of
    the mean over the answers scored, drawn with the split's seed, checked against an
    independent implementation."""
    graded = frame.copy()
    md = graded["method"] == "mean_diff"
    questions = list(graded.loc[md, "heldout_coherences"].iloc[0])
    # a graded judge's small moves count by sign, and apart as moves under 10 points
    deltas = [100.0] * 7 + [4.0, 9.99] + [-100.0, -10.0] + [0.0] * 8 + [None]
    coherences = [40.0 + 3.1 * i for i in range(19)] + [None]

    def each(values):
        row = dict(zip(questions, values, strict=True))
        return pd.Series([row] * int(md.sum()), index=graded.index[md])

    graded.loc[md, "heldout_deltas"] = each(deltas)
    graded.loc[md, "heldout_coherences"] = each(coherences)
    row = _row(tables.gap_analysis(graded, 68, seed=3), method="mean_diff")
    assert (row["moved_along"], row["moved_against"], row["unmoved"]) == (9, 2, 8)
    assert row["moved_little"] == 2
    scored = np.array([c for c in coherences if c is not None])
    _, lo, hi = reference_interval(scored, seed=3)
    assert (row["coherence_lo"], row["coherence_hi"]) == pytest.approx((lo, hi), abs=1e-9)
    assert lo < scored.mean() < hi
    # a cell with no choice has neither
    none = _row(tables.gap_analysis(graded, 68), method="gradient")
    assert np.isnan(none["coherence_lo"]) and np.isnan(none["moved_along"])


def test_the_credited_delta_gives_answers_under_the_bar_no_move_along_the_steering():
    chosen = {
        "heldout_deltas": {"a": 100.0, "b": 100.0, "c": -40.0, "d": None, "e": 60.0},
        "heldout_coherences": {"a": 90.0, "b": 17.3, "c": 10.0, "d": 90.0, "e": 68.0},
    }
    credited = tables._credited(chosen, 68.0, seed=0)
    want = reference_interval(np.array([100.0, 0.0, -40.0, 60.0]), seed=0)
    assert want[0] == pytest.approx((100.0 + 0.0 - 40.0 + 60.0) / 4)
    got = (credited["credited_delta"], credited["credited_lo"], credited["credited_hi"])
    assert got == pytest.approx(want)
    assert tables._credited(None, 68.0, seed=0)["credited_delta"] is None


def test_answers_under_the_bar_are_counted_among_those_scored():
    chosen = {
        "heldout_coherences": {"a": 17.3, "b": 70.0, "c": None, "d": 68.0, "e": 67.99, "f": None},
        # "f" has no delta (refused, or its trait unscored): in no delta, so not counted
        "heldout_deltas": {"a": 5.0, "b": 5.0, "c": 5.0, "d": 5.0, "e": 5.0, "f": None},
    }
    assert tables._under_bar(chosen, 68.0) == {
        "coherence_scored": 4,
        "under_bar": 2,
        "coherence_unscored": 1,  # "c": out of the mean, counted as unmoved (credited)
    }
    assert tables._under_bar(None, 68.0) == {  # no choice: nothing counted
        "coherence_scored": None,
        "under_bar": None,
        "coherence_unscored": None,
    }
    alone = {"heldout_coherences": {"a": None}, "heldout_deltas": {"a": 10.0}}
    said = tables._under_bar(alone, 68.0)
    assert said["under_bar"] is None and said["coherence_unscored"] == 1
    assert tables._under_bar({"heldout_coherences": float("nan")}, 68.0)["under_bar"] is None
