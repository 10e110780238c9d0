"""Known results: the grid's scores on the search half become trials that do not count, the
search starts at the grid's feasible band, and never asks for a config the grid evaluated."""

from __future__ import annotations

import pytest
from synthetic import (
    BASELINE_TRAIT,
    SOURCE,
    SyntheticEvaluator,
    open_study,
    synthetic_coherence,
    synthetic_trait,
)

from steering_data import baseline_entry, config_entry, settings_for, write_log
from steerops.errors import SteeropsError
from steerops.io import read_jsonl
from steerops.search.known import KnownResult, band_points, load_known
from steerops.search.loop import run_search
from steerops.stats import split_questions
from steerops.steering.configs import ConfigResult
from steerops.steering.store import scope_of
from steerops.steering.sweep import sweep_keys, write_sweep

QUESTIONS = [f"q{i}" for i in range(8)]
GRID = (0.5, 1.0, 1.5, 2.0)


def baseline(scores) -> ConfigResult:
    """The unsteered run's result with its per-question (trait, coherence) scores."""
    traits = [t for t, _ in scores if t is not None]
    return ConfigResult(None, sum(traits) / len(traits), 100.0, len(scores), [], scores=scores)


BASE = ConfigResult(None, BASELINE_TRAIT, 100.0, 4, [])  # means only, as a constructed result


def grid_log(tmp_path, layers=(2,), noisy_question: str | None = None):
    """A grid results log on all questions, scored by the synthetic closed form (one
    question scored differently when `noisy_question` is set)."""
    settings = settings_for(QUESTIONS)
    entries = [baseline_entry(settings, QUESTIONS, [(BASELINE_TRAIT, 100.0)] * len(QUESTIONS))]
    for layer in layers:
        for c in GRID:
            score = (synthetic_trait(layer, c), synthetic_coherence(layer, c))
            scores = [(0.0, 0.0) if q == noisy_question else score for q in QUESTIONS]
            entries.append(config_entry(settings, "mean_diff", "prompt[-1]", layer, c, scores))
    entries.append(  # another scope: never imported
        config_entry(
            settings_for(QUESTIONS, max_new_tokens=99),
            "mean_diff",
            "prompt[-1]",
            2,
            0.75,
            [(90.0, 90.0)] * len(QUESTIONS),
        )
    )
    return write_log(tmp_path / "grid" / "results.jsonl", entries), scope_of(settings)


def test_grid_scores_on_the_search_half_become_known_trials(tmp_path):
    search, _ = split_questions(QUESTIONS, 0.5, 0)
    noisy = search[0]
    path, scope = grid_log(tmp_path, noisy_question=noisy)
    known = load_known(path, scope, search, "mean_diff", "prompt[-1]", "residual", [2])
    assert [k.coefficient for k in known] == list(GRID)
    for k in known:  # means over the search half only, the noisy question among them
        clean = synthetic_trait(2, k.coefficient)
        assert k.trait_mean == pytest.approx(clean * (len(search) - 1) / len(search))
        assert k.n == len(search) and len(k.scores) == len(search)
    assert load_known(path, scope, search, "mean_diff", "prompt[-1]", "residual", [1]) == []
    assert load_known(path, scope, ["unseen"], "mean_diff", "prompt[-1]", "residual", [2]) == []
    assert load_known(tmp_path / "none.jsonl", scope, search, "m", "p", "r", [2]) == []
    with pytest.raises(SteeropsError, match="known_results: file not found"):
        load_known(tmp_path / "none.jsonl", scope, search, "m", "p", "r", [2], required=True)
    # the grid logged weight 10 per coefficient unit: a coefficient that means another
    # weight now (the layer norm changed) is not the same config
    now = {2: 10.0}
    args = (path, scope, search, "mean_diff", "prompt[-1]", "residual", [2])
    same = load_known(*args, weight_of=lambda layer, c: c * now[layer])
    assert [k.coefficient for k in same] == list(GRID)
    now[2] = 20.0
    assert load_known(*args, weight_of=lambda layer, c: c * now[layer]) == []
    (tmp_path / "bad.jsonl").write_text('{"type": "config"\n')
    with pytest.raises(SteeropsError, match="bad.jsonl:1: malformed JSON"):
        load_known(tmp_path / "bad.jsonl", scope, search, "mean_diff", "prompt[-1]", "r", [2])


def test_only_the_configs_of_the_grid_cell_s_latest_sweep_are_known(tmp_path):
    """A grid cell's log keeps every sweep's configs; the search starts from those of the
    latest sweep (`sweep.json`), the grid the params define, whatever ran before."""
    search, _ = split_questions(QUESTIONS, 0.5, 0)
    path, scope = grid_log(tmp_path)
    args = (path, scope, search, "mean_diff", "prompt[-1]", "residual", [2])
    swept = [
        e["config"]
        for e in read_jsonl(path)
        if e["type"] == "config" and e["config"]["coefficient"] in (0.5, 1.5)
    ]
    write_sweep(path.parent, "any-settings", swept)
    known = load_known(*args, sweep=sweep_keys(path.parent))
    assert [k.coefficient for k in known] == [0.5, 1.5]
    assert [k.coefficient for k in load_known(*args)] == list(GRID)  # no record: every one
    (path.parent / "sweep.json").write_text("[1, 2]")
    with pytest.raises(SteeropsError, match="sweep.json: not a sweep record"):
        sweep_keys(path.parent)


def test_band_points_bracket_the_strongest_coherent_grid_coefficient():
    search, _ = split_questions(QUESTIONS, 0.5, 0)
    from steerops.search.known import KnownResult

    known = [
        KnownResult(2, c, 10 * c, synthetic_trait(2, c), synthetic_coherence(2, c), 4) for c in GRID
    ]
    # coherent up to 1.0 (1.5 gives 55): start between 1.0 and 1.5
    assert band_points(known, BASE, 68.0, 3.0) == [(2, 1.166667), (2, 1.333333)]
    # the largest known coefficient still coherent: half a step beyond, within the range
    assert band_points(known[:2], BASE, 68.0, 1.2) == [(2, 1.2)]
    # nothing coherent with a gain: nowhere to start from
    assert band_points(known[2:], BASE, 68.0, 3.0) == []


def test_band_points_rank_layers_by_the_paired_gain_as_the_trials_are_valued():
    # the baseline left q0 unscored: layer 1's mean owes most of its lead to q0, which the
    # paired gain (the trials' value) leaves out; layer 2 gains more where both scored
    base = baseline([(None, 100.0), (0.0, 100.0), (0.0, 100.0), (0.0, 100.0)])
    layer1 = [(100.0, 90.0), (10.0, 90.0), (10.0, 90.0), (10.0, 90.0)]  # mean 32.5, paired 10
    layer2 = [(20.0, 90.0)] * 4  # mean 20, paired 20
    known = [
        KnownResult(1, 1.0, 10.0, 32.5, 90.0, 4, layer1),
        KnownResult(2, 1.0, 10.0, 20.0, 90.0, 4, layer2),
    ]
    assert band_points(known, base, 68.0, 3.0, layers=1) == [(2, 1.5)]
    # a known result no question of which the baseline also scored has no gain to rank by
    lone = [(50.0, 90.0), (None, 90.0), (None, 90.0), (None, 90.0)]
    assert band_points([KnownResult(1, 1.0, 10.0, 50.0, 90.0, 4, lone)], base, 68.0, 3.0) == []
    # the negative direction ranks by the gain downward
    down = [KnownResult(1, 1.0, 10.0, 32.5, 90.0, 4, layer1), known[1]]
    assert band_points(down, baseline([(40.0, 100.0)] * 4), 68.0, 3.0, "negative", 1) == [(2, 1.5)]


def test_a_search_given_grid_results_asks_for_no_config_already_evaluated(tmp_path):
    search, _ = split_questions(QUESTIONS, 0.5, 0)
    path, scope = grid_log(tmp_path, layers=(1, 2))
    known = load_known(path, scope, search, "mean_diff", "prompt[-1]", "residual", [1, 2])
    assert len(known) == 8
    study = open_study(tmp_path, layers=(1, 2), seed=0, startup_trials=4)
    base = baseline([(BASELINE_TRAIT, 100.0)] * len(search))
    for layer, c in band_points(known, base, 68.0, 3.0):
        study.enqueue(layer, c)
    for c in GRID:  # as `search.enqueue: [grid points]` would: already known, never asked
        study.enqueue(2, c)
    evaluator = SyntheticEvaluator(search)
    stats = run_search(
        study,
        evaluator,
        SOURCE,
        target=6,
        batch=3,
        direction="positive",
        known=known,
        progress=False,
    )
    assert stats.imported == 8
    asked = [(layer, c) for call in evaluator.calls for layer, c, _ in call]
    assert len(asked) == 6
    assert not set(asked) & {(k.layer, k.coefficient) for k in known}
    # the first batch starts at the grid's feasible band (layer 2 gains most: 1.0 < c < 1.5)
    assert sorted(asked[:2]) == [(2, pytest.approx(1.166667)), (2, pytest.approx(1.333333))]
    assert not [r for r in study.records() if r.source == "enqueued" and r.coefficient in GRID]


def test_a_log_written_under_another_spelling_of_the_method_is_known_and_served(tmp_path):
    """Logs keep the spelling they were written with (dims unsorted or with leading zeros, a
    position written as a slice, from before the grammar gave each method and position one
    spelling); the search and the evaluator read them in the canonical spelling."""
    from steerops.steering.configs import Config, VectorSource
    from steerops.steering.store import ResultsLog, config_key

    search, _ = split_questions(QUESTIONS, 0.5, 0)
    settings = settings_for(QUESTIONS)
    method, position = "mean_diff_dims07-3", "prompt[-1" + ":]"  # built: the repo's are canonical
    entries = [baseline_entry(settings, QUESTIONS, [(BASELINE_TRAIT, 100.0)] * len(QUESTIONS))]
    for c in GRID:
        scores = [(synthetic_trait(2, c), synthetic_coherence(2, c))] * len(QUESTIONS)
        files = {f"{method}|{position}|residual": "md5"}
        entries.append(config_entry(settings, method, position, 2, c, scores, vector_files=files))
    path = write_log(tmp_path / "results.jsonl", entries)
    source = VectorSource("mean_diff_dims3-7", "prompt[-1]", "residual")
    files = {"mean_diff_dims3-7|prompt[-1]|residual": "md5"}
    scope = scope_of(settings)
    known = load_known(path, scope, search, source.method, source.position, "residual", [2], files)
    assert [k.coefficient for k in known] == list(GRID)
    # the evaluator serves them too (a finished config is not generated again)
    key = config_key(Config.single(source, 2, GRID[0]), (GRID[0] * 10.0,))
    assert ResultsLog(path).config_scores(scope, search, key, files) is not None


def _imported(study, evaluator, known) -> int:
    """How many of `known` a search imports as trials (it evaluates nothing itself)."""
    stats = run_search(
        study,
        evaluator,
        SOURCE,
        target=0,
        batch=1,
        direction="positive",
        known=known,
        progress=False,
    )
    return stats.imported


def test_a_known_result_s_trial_value_is_paired_like_the_search_s_own(tmp_path):
    """Unscored answers on both sides: an imported result's value is its mean over the
    questions both it and the baseline scored (100), not a difference of means (33.3)."""
    from types import SimpleNamespace

    questions = ["q1", "q2", "q3", "q4"]
    base = [(0.0, 95.0), (0.0, 95.0), (100.0, 95.0), (None, 95.0)]
    steered = [(100.0, 80.0), (100.0, 80.0), (None, 80.0), (0.0, 80.0)]
    evaluator = SyntheticEvaluator(questions)
    evaluator.baseline = lambda: SimpleNamespace(trait_mean=100 / 3, scores=base, cached=True)
    known = [KnownResult(2, 1.0, 10.0, 200 / 3, 80.0, 3, scores=steered)]
    study = open_study(tmp_path, layers=(2,), seed=0, startup_trials=1)
    assert _imported(study, evaluator, known) == 1
    (record,) = [r for r in study.records() if r.coefficient == 1.0]
    assert record.trait_delta == pytest.approx(100.0)
    # scored only where the baseline was not: no paired value, and no difference of means
    # (0 - 33.3) in its place; the search's own trial would have failed as unscored
    apart = [(None, 80.0), (None, 80.0), (None, 80.0), (0.0, 80.0)]
    lone = [KnownResult(2, 2.0, 20.0, 0.0, 80.0, 1, scores=apart)]
    apart_study = open_study(tmp_path, layers=(2,), name="apart", seed=0, startup_trials=1)
    assert _imported(apart_study, evaluator, lone) == 0
