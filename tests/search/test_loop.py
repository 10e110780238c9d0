"""The batched ask-evaluate-tell loop with a synthetic evaluator whose feasible optimum is known
exactly."""

from __future__ import annotations

import contextlib

import pytest
from synthetic import (
    BASELINE_TRAIT,
    FEASIBLE_EDGE,
    MIN_COH,
    NORMS,
    SOURCE,
    SyntheticEvaluator,
    open_study,
    synthetic_coherence,
    synthetic_trait,
)

from steerops.errors import SteeropsError
from steerops.search.loop import run_search
from steerops.search.results import choose_best, selection_rows
from steerops.steering.configs import delta


def test_search_finds_the_feasible_optimum_and_never_picks_infeasible(tmp_path):
    study = open_study(tmp_path, seed=3)
    evaluator = SyntheticEvaluator(["q1", "q2", "q3"])
    stats = run_search(
        study, evaluator, SOURCE, target=8, batch=4, direction="positive", progress=False
    )
    records = study.records()
    assert study.n_done() == 8 and len(records) == 8
    assert [len(c) for c in evaluator.calls] == [4, 4]  # one evaluate call per batch
    assert stats.rows == 3 + 8 * 3
    for r in records:  # what the study stored agrees with the closed form
        assert r.trait_delta == pytest.approx(synthetic_trait(2, r.coefficient) - BASELINE_TRAIT)
        assert r.feasible == (synthetic_coherence(2, r.coefficient) >= MIN_COH)
        assert r.weight == pytest.approx(r.coefficient * NORMS[2])
    chosen = choose_best(selection_rows(records, evaluator, SOURCE, "positive", 0), MIN_COH)
    assert chosen is not None and chosen.coefficient <= FEASIBLE_EDGE
    best_possible = synthetic_trait(2, FEASIBLE_EDGE) - BASELINE_TRAIT
    assert chosen.trait_delta >= 0.9 * best_possible
    # infeasible trials with a larger delta exist, and were not chosen
    assert any(not r.feasible and r.trait_delta > chosen.trait_delta for r in records)


def test_negative_direction_and_layer_search_with_tpe(tmp_path):
    assert delta(30.0, 50.0, "negative") == 20.0
    assert delta(None, 50.0, "positive") is None
    study = open_study(tmp_path, layers=(1, 2, 3), seed=0, startup_trials=3, sampler="tpe")
    evaluator = SyntheticEvaluator(["q1", "q2"], direction="negative")
    run_search(study, evaluator, SOURCE, target=9, batch=3, direction="negative", progress=False)
    records = study.records()
    assert {r.layer for r in records} == {1, 2, 3}  # the startup design covers every layer
    for r in records:
        assert r.trait_delta == pytest.approx(
            BASELINE_TRAIT - synthetic_trait(r.layer, r.coefficient)
        )
        assert r.weight == pytest.approx(r.coefficient * NORMS[r.layer])


def test_resume_after_interrupted_search(tmp_path):
    study = open_study(tmp_path, seed=1)
    interrupted = SyntheticEvaluator(["q1", "q2"], fail_on_call=2)
    with pytest.raises(KeyboardInterrupt):
        run_search(
            study, interrupted, SOURCE, target=8, batch=3, direction="positive", progress=False
        )
    assert study.n_done() == 3
    lost = [r for r in study.records() if r.state == "running"]
    assert len(lost) == 3  # the interrupted batch is handed back as it stands
    resumed = open_study(tmp_path, seed=1, grace_s=3600)  # handed back: no grace to wait
    evaluator = SyntheticEvaluator(["q1", "q2"])
    run_search(resumed, evaluator, SOURCE, target=8, batch=3, direction="positive", progress=False)
    assert resumed.n_done() == 8  # exactly the target, not 3 + 8
    assert sum(len(c) for c in evaluator.calls) == 5
    # the interrupted trials were taken over and evaluated first, as the same trials
    assert [coef for _, coef, _ in evaluator.calls[0]] == [r.coefficient for r in lost]
    records = resumed.records()
    assert [r.number for r in records] == list(range(8)) and {r.state for r in records} == {
        "complete"
    }
    # a finished study does no more work
    again = SyntheticEvaluator(["q1", "q2"])
    run_search(
        open_study(tmp_path, seed=1),
        again,
        SOURCE,
        target=8,
        batch=3,
        direction="positive",
        progress=False,
    )
    assert again.calls == []


@pytest.mark.parametrize("sampler", ["gp", "tpe"])
def test_a_search_killed_between_two_tells_of_a_batch_resumes_into_the_same_study(
    tmp_path, monkeypatch, sampler
):
    """Killed after telling one of the second batch's three trials: the rerun evaluates the
    other two as a batch of their own, then asks the next batch with all three told, as
    the uninterrupted run did (topping the batch up sampled new trials beside running
    ones, which both samplers read, and the study went elsewhere)."""
    from steerops.search.study import SearchStudy

    def search(folder, evaluator):
        study = open_study(folder, seed=5, startup_trials=2, sampler=sampler, grace_s=3600)
        run_search(
            study, evaluator, SOURCE, target=8, batch=3, direction="positive", progress=False
        )
        return study

    (tmp_path / "whole").mkdir()
    whole = {
        r.number: r.coefficient
        for r in search(tmp_path / "whole", SyntheticEvaluator(["q"])).records()
    }
    tell, told = SearchStudy.tell, []

    def killed_at_the_fifth_tell(self, *args, **kwargs):
        if len(told) == 4:
            raise KeyboardInterrupt
        told.append(1)
        return tell(self, *args, **kwargs)

    (tmp_path / "killed").mkdir()
    monkeypatch.setattr(SearchStudy, "tell", killed_at_the_fifth_tell)
    with pytest.raises(KeyboardInterrupt):
        search(tmp_path / "killed", SyntheticEvaluator(["q"]))
    monkeypatch.setattr(SearchStudy, "tell", tell)
    study = open_study(tmp_path / "killed", seed=5, startup_trials=2, sampler=sampler)
    for r in study.records():  # its worker is gone: the trial is handed back as it stands
        if r.state == "running":
            trial_id = study.storage.get_trial_id_from_study_id_trial_number(
                study.storage.get_study_id_from_name("s"), r.number
            )
            study.storage.release(trial_id)
    evaluator = SyntheticEvaluator(["q"])
    resumed = search(tmp_path / "killed", evaluator)
    assert [len(c) for c in evaluator.calls][:1] == [2]  # the batch's untold trials first
    assert {r.number: r.coefficient for r in resumed.records()} == whole


def test_startup_design_is_stratified_and_seeded_then_enqueued_points(tmp_path):
    def first_batch(folder, seed):
        folder.mkdir()
        study = open_study(folder, startup_trials=2, seed=seed)
        for c in (0.25, 2.75):
            study.enqueue(2, c)
        with pytest.raises(SteeropsError, match="search.enqueue: coefficient 5"):
            study.enqueue(2, 5.0)
        evaluator = SyntheticEvaluator(["q"])
        run_search(
            study, evaluator, SOURCE, target=4, batch=4, direction="positive", progress=False
        )
        return [c for _, c, _ in evaluator.calls[0]]

    batch = first_batch(tmp_path / "a", seed=0)
    queued, design = batch[:2], batch[2:]
    assert queued == [0.25, 2.75]  # evaluated first, then the design
    assert 0.0 <= design[0] < 1.5 <= design[1] < 3.0  # one point per half of the range
    assert first_batch(tmp_path / "b", seed=0)[2:] == design
    assert first_batch(tmp_path / "c", seed=1)[2:] != design


def test_a_narrow_range_spends_the_budget_on_distinct_configs_then_stops(tmp_path, capsys):
    """In a narrow range the GP sampler soon proposes only the edge it found best, again and
    again: the copies are neither evaluated nor counted, and once the sampler proposes
    nothing new the search stops short of its target, saying so."""
    study = open_study(tmp_path, coef_range=(1.0, 1.01), seed=0, startup_trials=2)
    evaluator = SyntheticEvaluator(["q"])
    run_search(study, evaluator, SOURCE, target=8, batch=2, direction="positive", progress=False)
    asked = [c for call in evaluator.calls for _, c, _ in call]
    assert len(asked) == len(set(asked))  # no config evaluated twice
    done = [r for r in study.records() if r.state == "complete"]
    assert study.n_done() == len(done) == len({r.coefficient for r in done}) == len(asked)
    assert study.n_done() < 8 and study.exhausted()
    err = capsys.readouterr().err
    assert f"search: stopped after {len(asked)} of 8 trials" in err and "1.01" in err
    # the advice holds for an explicit --study NAME (which refuses other settings) too
    assert "a wider range (search.coef_min/coef_max or search.layers) is a new study" in err
    assert "--study, under a new name" in err
    # the study stays exhausted: a rerun asks nothing more, and says why
    again = SyntheticEvaluator(["q"])
    reopened = open_study(tmp_path, coef_range=(1.0, 1.01), seed=0, startup_trials=2)
    run_search(reopened, again, SOURCE, target=8, batch=2, direction="positive", progress=False)
    assert again.calls == [] and "search: stopped after" in capsys.readouterr().err


class RecordingTracker:
    """The tracker's `child` runs, recorded by name."""

    def __init__(self):
        self.children: list[str] = []

    @contextlib.contextmanager
    def child(self, name, params, tags=None, start=None):
        self.children.append(name)
        yield self

    def log_metrics(self, metrics):
        pass


def test_a_trial_finished_elsewhere_meanwhile_gets_no_second_mlflow_run(tmp_path):
    """Another worker (slow but alive) finished one of this batch's trials while it was
    evaluated here: tell() refuses it, and no nested MLflow run is logged for it."""
    from optuna.trial import TrialState

    study = open_study(tmp_path, seed=3)

    class Overtaken(SyntheticEvaluator):
        def evaluate(self, configs):
            if not self.calls:  # the first trial of the first batch is told elsewhere
                other = open_study(tmp_path, seed=3).study
                [first, *_] = other.get_trials(states=(TrialState.RUNNING,))
                other.tell(first.number, 1.0)
            return super().evaluate(configs)

    tracker = RecordingTracker()
    stats = run_search(
        study,
        Overtaken(["q"]),
        SOURCE,
        target=4,
        batch=2,
        direction="positive",
        tracker=tracker,
        progress=False,
    )
    numbers = [int(name.split(":")[0].removeprefix("trial ")) for name in tracker.children]
    assert 0 not in numbers and len(numbers) == len(set(numbers))
    assert sorted(numbers) == sorted(n for n in stats.evaluated if n != 0)
