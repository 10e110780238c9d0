"""A cell's chosen config: selected on one half of the questions, reported on the other with
the paired bootstrap interval, checked against an independent computation."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest
import scipy.stats

from steering_data import (
    baseline_entry,
    config_entry,
    reference_interval,
    settings_for,
    settings_hash_of,
    write_log,
)
from steerops import stats
from steerops.steering.best import (
    Protocol,
    aliases,
    best_per_layer,
    cell_metrics,
    compact,
    config_rows,
)
from steerops.steering.store import ResultsLog

QUESTIONS = [f"question {i}" for i in range(20)]
PROTO = Protocol(0.5, seed=3, sign=1.0)


def _scores(refuse: set[str], coherence: float = 90.0) -> list:
    return [(100.0 if q in refuse else 0.0, coherence) for q in QUESTIONS]


def synthetic_cell(tmp_path):
    """Layer 1 refuses on every selection question but half the held-out ones (the
    in-sample best); layer 2 on 60% of the selection and 90% of the held-out questions."""
    selection, heldout = PROTO.split(QUESTIONS)
    settings = settings_for(QUESTIONS)
    entries = [
        baseline_entry(settings, QUESTIONS, _scores(set())),
        config_entry(settings, "m", "prompt[-1]", 1, 1.0, _scores({*selection, *heldout[::2]})),
        config_entry(settings, "m", "prompt[-1]", 2, 1.0, _scores({*selection[:6], *heldout[:9]})),
        config_entry(settings, "m", "prompt[-1]", 2, 0.0, _scores(set(), 100.0)),
        config_entry(settings, "m", "prompt[-1]", 1, 3.0, _scores(set(QUESTIONS), 20.0)),
    ]
    log = ResultsLog(write_log(tmp_path / "results.jsonl", entries))
    return log, settings_hash_of(settings), selection, heldout


def test_the_cell_picks_on_the_selection_half_and_reports_the_held_out_half(tmp_path):
    log, h, selection, heldout = synthetic_cell(tmp_path)
    assert len(selection) == len(heldout) == 10
    rows = config_rows(log, h, PROTO, {"trait": "t"})
    assert len(rows) == 4
    layer1 = next(r for r in rows if r["layer"] == 1 and r["coefficient"] == 1.0)
    assert layer1["trait_delta"] == pytest.approx(75.0)  # all questions: 15 of 20 refuse
    assert layer1["selection_trait_delta"] == 100.0 and layer1["heldout_trait_delta"] == 50.0
    metrics = cell_metrics(rows, 68.0, PROTO)
    # layer 2 is better held out (90 vs 50) but the choice never looks there
    assert (metrics["layer"], metrics["coefficient"]) == (1, 1.0)
    assert (metrics["tried_layer"], metrics["tried_coefficient"]) == (1, 1.0)
    assert metrics["selection_trait_delta"] == 100.0
    d = np.array([100.0 if i % 2 == 0 else 0.0 for i in range(10)])  # held out, question order
    mean, lo, hi = reference_interval(d, seed=3)
    assert (metrics["heldout_trait_delta"], metrics["heldout_n"]) == (mean, 10)
    assert (metrics["heldout_delta_lo"], metrics["heldout_delta_hi"]) == pytest.approx((lo, hi))
    assert metrics["status"] == stats.OK and metrics["heldout_feasible"]
    # 5 of the 10 held-out questions moved, all up: the sign-flip test's exact p is 0.5**5
    assert metrics["heldout_p"] == pytest.approx(0.5**5) and stats.unconfirmed(
        metrics["heldout_p"], metrics["heldout_delta_lo"]
    )
    assert metrics["n_configs"] == 4 and metrics["n_coherent"] == 2  # not the unsteered one
    head = compact(metrics)
    assert list(head) == [
        "status",
        "layer",
        "coefficient",
        "tried_layer",
        "tried_coefficient",
        "delta",
        "delta_lo",
        "delta_hi",
        "coherence",
        "under_bar",
        "credited_delta",
        "credited_lo",
        "credited_hi",
        "n",
        "p",
        "unscored",
    ]
    # 3 steered configs of 20 answers each, every one scored (the unsteered one not counted)
    assert (metrics["n_answers"], metrics["n_unscored"], head["unscored"]) == (60, 0, 0)
    partly = cell_metrics([{**r, "n_unscored": 5} for r in rows], 68.0, PROTO)
    assert (partly["n_answers"], partly["n_unscored"]) == (60, 15)
    assert head["under_bar"] == metrics["heldout_under_bar"] is not None
    assert head["delta"] == 50.0 and head["n"] == 10 and head["p"] == metrics["heldout_p"]
    assert {k: r["coefficient"] for k, r in best_per_layer(rows, 68.0).items()} == {1: 1.0, 2: 1.0}
    # layer 1 ran 1.0 and 3.0: the choice is inside the grid; layer 2 alone sits at its edge
    assert not metrics["at_largest_coefficient"]
    edge = cell_metrics([r for r in rows if r["layer"] == 2], 68.0, PROTO)
    assert edge["status"] == stats.OK and edge["at_largest_coefficient"]


def test_a_cell_without_an_effect_is_no_effect_and_unsteered_never_counts(tmp_path):
    settings = settings_for(QUESTIONS)
    selection, _ = PROTO.split(QUESTIONS)
    entries = [
        baseline_entry(settings, QUESTIONS, _scores(set(), 100.0)),
        config_entry(settings, "r", "prompt[-1]", 1, 0.0, _scores(set(), 100.0)),
        config_entry(settings, "r", "prompt[-1]", 1, 0.5, _scores({selection[0]}, 95.0)),
        config_entry(settings, "r", "prompt[-1]", 1, 2.0, _scores(set(QUESTIONS), 10.0)),
    ]
    log = ResultsLog(write_log(tmp_path / "results.jsonl", entries))
    rows = config_rows(log, settings_hash_of(settings), PROTO, {})
    metrics = cell_metrics(rows, 68.0, PROTO)
    # one refusal in ten selection questions: interval reaches zero -> no effect
    # the config the numbers are of is named as tried, never as the one to use
    assert metrics["status"] == stats.NO_EFFECT and metrics["tried_coefficient"] == 0.5
    assert metrics["layer"] is metrics["coefficient"] is metrics["weight"] is None
    tried = next(r for r in rows if r["coefficient"] == 0.5)
    assert (metrics["tried_layer"], metrics["tried_weight"]) == (1, tried["weight"])
    # the layer's largest coefficient without an effect: no "a larger one may steer more"
    strongest = cell_metrics([r for r in rows if r["coefficient"] != 2.0], 68.0, PROTO)
    assert strongest["status"] == stats.NO_EFFECT and strongest["tried_coefficient"] == 0.5
    assert strongest["at_largest_coefficient"] is False
    # no steered config coherent: needs finer coefficients, best coherence from a steered one
    rows = [r for r in rows if r["coefficient"] != 0.5]
    metrics = cell_metrics(rows, 68.0, PROTO)
    assert metrics["status"] == stats.NEEDS_FINER and metrics["layer"] is None
    assert metrics["tried_layer"] is metrics["tried_coefficient"] is None
    assert metrics["best_coherence_reached"] == 10.0  # not the unsteered config's 100


def test_aliases_are_named_after_the_first_identical_set():
    maps = {
        "mean_diff_top2": {1: "a", 2: "b"},
        "mean_diff_top1": {1: "a", 2: "b"},
        "mean_diff_top3": {1: "a", 2: "c"},
        "mean_diff_preclean": {1: "x", 2: "y"},
        "mean_diff_cleaned": {1: "x", 2: "y"},
    }
    assert aliases(maps) == {
        "mean_diff_top2": "mean_diff_top1",
        "mean_diff_preclean": "mean_diff_cleaned",
    }


def test_grid_order_reads_layers_as_numbers_then_coefficients():
    from steerops.steering.best import grid_order

    rows = [
        {"layer": "10", "coefficient": -1.0},
        {"layer": "2+10", "coefficient": 1.0},
        {"layer": 9, "coefficient": 2.0},
        {"layer": "2+3", "coefficient": 1.0},
        {"layer": 9, "coefficient": -0.5},
    ]
    ordered = [(r["layer"], r["coefficient"]) for r in sorted(rows, key=grid_order)]
    assert ordered == [(9, -0.5), (9, 2.0), ("10", -1.0), ("2+3", 1.0), ("2+10", 1.0)]


def test_a_config_s_delta_on_all_questions_is_paired_like_its_halves(tmp_path):
    """Unscored answers on both sides: the all-questions delta is the mean over questions
    both scored (what MLflow and the results log hold), not a difference of means."""
    settings = settings_for(QUESTIONS)
    base = [(0.0, 95.0)] * 10 + [(100.0, 95.0)] * 5 + [(None, 95.0)] * 5
    steered = [(100.0, 80.0)] * 10 + [(None, 80.0)] * 5 + [(0.0, 80.0)] * 5
    config = config_entry(settings, "m", "prompt[-1]", 1, 1.0, _scores(set()))
    config["scores"] = [list(s) for s in steered]
    entries = [baseline_entry(settings, QUESTIONS, _scores(set())), config]
    entries[0]["scores"] = [list(s) for s in base]
    log = ResultsLog(write_log(tmp_path / "results.jsonl", entries))
    (row,) = config_rows(log, settings_hash_of(settings), PROTO, {})
    paired = stats.paired_delta([t for t, _ in steered], [t for t, _ in base], 0)
    assert row["trait_delta"] == pytest.approx(paired.mean) == pytest.approx(100.0)
    # the difference of means would be 66.7 - 33.3
    assert row["trait_mean"] - 100 / 3 == pytest.approx(100 / 3)


def test_the_choice_counts_its_held_out_answers_under_the_bar(tmp_path):
    """A mean coherence of 81 held out hides 3 answers at 60: metrics.json counts them,
    gives the delta with their gains counted as none (graded scores, so the interval
    depends on the split's seed), and steer's verdict line says so."""
    from steerops.steering.terminal import verdict_line

    selection, heldout = PROTO.split(QUESTIONS)
    settings = settings_for(QUESTIONS)
    weak = set(heldout[:3])
    trait = {q: 40.0 + 3.0 * i for i, q in enumerate(QUESTIONS)}
    scores = [(trait[q], 60.0 if q in weak else 90.0) for q in QUESTIONS]
    entries = [
        baseline_entry(settings, QUESTIONS, _scores(set())),
        config_entry(settings, "m", "prompt[-1]", 1, 1.0, scores),
    ]
    log = ResultsLog(write_log(tmp_path / "results.jsonl", entries))
    metrics = cell_metrics(config_rows(log, settings_hash_of(settings), PROTO, {}), 68.0, PROTO)
    assert metrics["status"] == stats.OK
    assert metrics["heldout_coherence"] == pytest.approx(81.0)
    assert (metrics["heldout_coherence_scored"], metrics["heldout_under_bar"]) == (10, 3)
    # credited only where coherent: the 3 answers at 60 count as no change (the module
    # docstring's recipe, in held-out question order)
    d = np.array([0.0 if q in weak else trait[q] for q in heldout])
    means = d[np.random.default_rng(PROTO.seed).integers(0, 10, size=(stats.RESAMPLES, 10))]
    tail = NormalDist().cdf(-math.sqrt(10 / 9) * scipy.stats.t.ppf(0.975, 9))
    lo, hi = np.quantile(means.mean(axis=1), [tail, 1 - tail])
    other_seed = np.random.default_rng(PROTO.seed + 1).integers(0, 10, size=(stats.RESAMPLES, 10))
    assert np.quantile(d[other_seed].mean(axis=1), tail) != pytest.approx(lo)  # seed-bound
    assert metrics["heldout_credited_delta"] == pytest.approx(d.mean())
    assert metrics["heldout_credited_lo"] == pytest.approx(lo)
    assert metrics["heldout_credited_hi"] == pytest.approx(hi)
    assert (
        ", coherence 81.0 (3 of 10 answers under 68), n 10; with the 3 answers under 68 "
        "counted as unmoved (3 had moved along the steering), delta "
        f"{stats.interval_text(d.mean(), lo, hi)}" in verdict_line(metrics)
    )
    # steering to suppress the trait: the same moves are losses, which no bar takes away
    against = Protocol(0.5, seed=PROTO.seed, sign=-1.0)
    rows = config_rows(log, settings_hash_of(settings), against, {})
    (row,) = rows
    down = stats.credited_heldout(row, 68.0, against.seed)
    assert down.mean == pytest.approx(-np.mean([trait[q] for q in heldout]))
    assert (down.mean, down.lo, down.hi) == pytest.approx(
        (row["heldout_trait_delta"], row["heldout_delta_lo"], row["heldout_delta_hi"])
    )
    at_60 = cell_metrics(config_rows(log, settings_hash_of(settings), PROTO, {}), 60.0, PROTO)
    assert at_60["heldout_under_bar"] == 0
    assert "answers under" not in verdict_line(at_60)


def test_answers_the_judge_gave_no_coherence_score_are_said_and_credited_no_gain(tmp_path):
    """A judge that will not rate gibberish leaves its coherence unscored: the mean over the
    answers it did rate stands over the bar, so the line says how many it left out and gives
    the delta with their gains counted as none (they carried them here)."""
    from steerops.steering.terminal import verdict_line

    selection, heldout = PROTO.split(QUESTIONS)
    settings = settings_for(QUESTIONS)
    garbled = set(heldout[:3])
    scores = [(95.0, None) if q in garbled else (40.0, 90.0) for q in QUESTIONS]
    entries = [
        baseline_entry(settings, QUESTIONS, _scores(set())),
        config_entry(settings, "m", "prompt[-1]", 1, 1.0, scores),
    ]
    log = ResultsLog(write_log(tmp_path / "results.jsonl", entries))
    metrics = cell_metrics(config_rows(log, settings_hash_of(settings), PROTO, {}), 68.0, PROTO)
    assert metrics["heldout_coherence"] == pytest.approx(90.0)  # over the 7 it rated
    assert metrics["heldout_coherence_scored"] == 7 and metrics["heldout_under_bar"] == 0
    assert metrics["heldout_coherence_unscored"] == 3
    base = dict(zip(QUESTIONS, _scores(set()), strict=True))
    steered = dict(zip(QUESTIONS, scores, strict=True))
    credited = [0.0 if q in garbled else steered[q][0] - base[q][0] for q in heldout]
    assert metrics["heldout_credited_delta"] == pytest.approx(np.mean(credited))
    assert metrics["heldout_credited_delta"] < metrics["heldout_trait_delta"]
    line = verdict_line(metrics)
    assert "coherence 90.0 (3 answers not scored for coherence), n 10" in line
    assert "with the 3 answers not scored for coherence counted as unmoved" in line


def test_no_choice_counts_no_answers():
    assert cell_metrics([], 68.0, PROTO)["heldout_under_bar"] is None


def test_the_baseline_s_coherence_is_read_on_the_half_each_step_uses(tmp_path):
    """The unsteered model's coherence behind "baseline incoherent" is the selection half's
    (where the choice is made); the held-out half's is reported apart. Here the unsteered
    model misses the bar on the selection half only, so no steered config being coherent
    there reads "baseline incoherent", whatever the held-out half says."""
    selection, heldout = PROTO.split(QUESTIONS)
    settings = settings_for(QUESTIONS)
    base = [(0.0, 50.0 if q in selection else 100.0) for q in QUESTIONS]
    entries = [
        baseline_entry(settings, QUESTIONS, base),
        config_entry(settings, "m", "prompt[-1]", 1, 1.0, _scores(set(QUESTIONS), 40.0)),
    ]
    log = ResultsLog(write_log(tmp_path / "results.jsonl", entries))
    [row] = config_rows(log, settings_hash_of(settings), PROTO, {"trait": "t"})
    assert row["selection_baseline_coherence"] == 50.0
    assert row["heldout_baseline_coherence"] == 100.0
    assert stats.choose([row], 68.0) == (None, stats.BASELINE_INCOHERENT)
