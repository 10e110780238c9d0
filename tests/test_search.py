"""Coefficient search: the constrained choice, resuming, known results, the held-out protocol.

Most tests drive the real Optuna study and loop with `SyntheticEvaluator`, a stand-in for
the steering engine whose trait and coherence are closed-form functions of the coefficient,
so the feasible optimum is known exactly. The last tests run the CLI on the toy world.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field

import numpy as np
import pytest

from steerops.errors import SteeropsError
from steerops.search.heldout import split_questions
from steerops.search.known import load_known
from steerops.search.loop import run_search, signed_delta
from steerops.search.results import choose_best
from steerops.search.storage import storage_label
from steerops.search.store import write_trials_csv
from steerops.search.study import SearchStudy, Space, TrialRecord
from steerops.steering.configs import VectorSource

SOURCE = VectorSource("mean_diff", "prompt[-1]", "residual")
MIN_COH = 68.0
NORMS = {1: 4.0, 2: 10.0, 3: 25.0}
GAIN = {1: 0.5, 2: 1.0, 3: 0.8}


def synthetic_trait(layer: int, c: float) -> float:
    return 100.0 * GAIN[layer] * min(1.0, c / 2.0)  # keeps rising past the coherence cliff


def synthetic_coherence(layer: int, c: float) -> float:
    return float(np.clip(100.0 - 150.0 * (c - 1.2), 0.0, 100.0))  # < 68 above c = 1.4133


FEASIBLE_EDGE = 1.2 + (100.0 - MIN_COH) / 150.0
BASELINE_TRAIT = 5.0


@dataclass
class Result:
    config: object
    trait_mean: float | None
    coherence_mean: float | None
    n: int
    responses: list = field(default_factory=list)
    weights: tuple = ()


class SyntheticEvaluator:
    """The steering evaluator's interface (configs in the user's units, results with their
    weights) with closed-form scores; records what it was asked."""

    def __init__(self, questions, fail_on_call: int | None = None):
        self.questions = list(questions)
        self.calls: list[list[tuple[int, float, float]]] = []
        self.fail_on_call = fail_on_call
        self.settings_hash = "synthetic"

    def baseline(self):
        return Result(None, BASELINE_TRAIT, 100.0, len(self.questions))

    def evaluate(self, configs):
        if self.fail_on_call is not None and len(self.calls) + 1 == self.fail_on_call:
            raise KeyboardInterrupt
        batch = [(c.vectors[0].layer, c.coefficient, c.coefficient * NORMS[c.vectors[0].layer])
                 for c in configs]
        self.calls.append(batch)
        return [Result(c, synthetic_trait(layer, coef), synthetic_coherence(layer, coef),
                       len(self.questions), weights=(weight,))
                for c, (layer, coef, weight) in zip(configs, batch, strict=True)]


def open_study(tmp_path, layers=(2,), name="s", **kw) -> SearchStudy:
    settings = {"layers": list(layers), "min_coherence": MIN_COH}
    return SearchStudy(f"sqlite:///{tmp_path / 'optuna.db'}", name, Space(0.0, 3.0, layers),
                       MIN_COH, settings, **kw)


def record(number, delta, coherence, state="complete", coefficient=1.0):
    return TrialRecord(number, 2, coefficient, coefficient * 10, delta + BASELINE_TRAIT,
                       coherence, delta, coherence >= MIN_COH, state, "search", 4)


def test_infeasible_trial_never_chosen_even_with_the_largest_delta():
    records = [record(0, 30.0, 90.0), record(1, 95.0, 40.0), record(2, 60.0, 70.0),
               record(3, 99.0, 67.9), record(4, 100.0, 99.0, state="fail")]
    chosen, feasible = choose_best(records)
    assert feasible and chosen.number == 2
    # nothing feasible: say so, and report the most coherent trial
    chosen, feasible = choose_best([record(0, 95.0, 40.0), record(1, 10.0, 60.0)])
    assert not feasible and chosen.number == 1
    assert choose_best([]) == (None, False)


def test_search_finds_the_feasible_optimum_and_never_picks_infeasible(tmp_path):
    study = open_study(tmp_path, seed=3)
    evaluator = SyntheticEvaluator(["q1", "q2", "q3"])
    stats = run_search(study, evaluator, SOURCE, target=8, batch=4, direction="positive",
                       progress=False)
    records = study.records()
    assert study.n_done() == 8 and len(records) == 8
    assert [len(c) for c in evaluator.calls] == [4, 4]  # one evaluate call per batch
    assert stats.rows == 3 + 8 * 3
    for r in records:  # what the study stored agrees with the closed form
        assert r.trait_delta == pytest.approx(synthetic_trait(2, r.coefficient) - BASELINE_TRAIT)
        assert r.feasible == (synthetic_coherence(2, r.coefficient) >= MIN_COH)
        assert r.weight == pytest.approx(r.coefficient * NORMS[2])
    chosen, feasible = choose_best(records)
    assert feasible and chosen.coefficient <= FEASIBLE_EDGE
    best_possible = synthetic_trait(2, FEASIBLE_EDGE) - BASELINE_TRAIT
    assert chosen.trait_delta >= 0.9 * best_possible
    # infeasible trials with a larger delta exist, and were not chosen
    assert any(not r.feasible and r.trait_delta > chosen.trait_delta for r in records)


def test_negative_direction_and_layer_search_with_tpe(tmp_path):
    assert signed_delta(30.0, 50.0, "negative") == 20.0
    assert signed_delta(None, 50.0, "positive") is None
    study = open_study(tmp_path, layers=(1, 2, 3), seed=0, startup_trials=3, sampler="tpe")
    evaluator = SyntheticEvaluator(["q1", "q2"])
    run_search(study, evaluator, SOURCE, target=9, batch=3, direction="negative",
               progress=False)
    records = study.records()
    assert {r.layer for r in records} == {1, 2, 3}  # the startup design covers every layer
    for r in records:
        assert r.trait_delta == pytest.approx(BASELINE_TRAIT - synthetic_trait(r.layer,
                                                                               r.coefficient))
        assert r.weight == pytest.approx(r.coefficient * NORMS[r.layer])


def test_resume_after_interrupted_search(tmp_path):
    study = open_study(tmp_path, seed=1)
    interrupted = SyntheticEvaluator(["q1", "q2"], fail_on_call=2)
    with pytest.raises(KeyboardInterrupt):
        run_search(study, interrupted, SOURCE, target=8, batch=3, direction="positive",
                   progress=False)
    assert study.n_done() == 3
    lost = sorted(r.coefficient for r in study.records() if r.state == "fail")
    assert len(lost) == 3  # the interrupted batch is failed, not left running
    resumed = open_study(tmp_path, seed=1)
    evaluator = SyntheticEvaluator(["q1", "q2"])
    run_search(resumed, evaluator, SOURCE, target=8, batch=3, direction="positive",
               progress=False)
    assert resumed.n_done() == 8  # exactly the target, not 3 + 8
    assert sum(len(c) for c in evaluator.calls) == 5
    # the interrupted trials' params were re-queued and evaluated first
    assert sorted(coef for _, coef, _ in evaluator.calls[0]) == pytest.approx(lost)
    numbers = [r.number for r in resumed.records()]
    assert len(numbers) == len(set(numbers))
    # a finished study does no more work
    again = SyntheticEvaluator(["q1", "q2"])
    run_search(open_study(tmp_path, seed=1), again, SOURCE, target=8, batch=3,
               direction="positive", progress=False)
    assert again.calls == []


def test_startup_design_is_stratified_and_seeded_then_enqueued_points(tmp_path):
    def first_batch(folder, seed):
        folder.mkdir()
        study = open_study(folder, startup_trials=2, seed=seed)
        for c in (0.25, 2.75):
            study.enqueue(2, c)
        with pytest.raises(SteeropsError, match="search.enqueue: coefficient 5"):
            study.enqueue(2, 5.0)
        evaluator = SyntheticEvaluator(["q"])
        run_search(study, evaluator, SOURCE, target=4, batch=4, direction="positive",
                   progress=False)
        return [c for _, c, _ in evaluator.calls[0]]

    batch = first_batch(tmp_path / "a", seed=0)
    queued, design = batch[:2], batch[2:]
    assert queued == [0.25, 2.75]  # evaluated first, then the design
    assert 0.0 <= design[0] < 1.5 <= design[1] < 3.0  # one point per half of the range
    assert first_batch(tmp_path / "b", seed=0)[2:] == design
    assert first_batch(tmp_path / "c", seed=1)[2:] != design


def test_a_design_enqueued_twice_is_evaluated_once(tmp_path):
    """Two workers on a database without the sqlite lock may both enqueue the (identical,
    seeded) startup design; each point is still evaluated once, and the copies do not count."""
    study = open_study(tmp_path, startup_trials=3)
    study.enqueue_startup()
    first = [t.system_attrs["fixed_params"] for t in study.study.get_trials(deepcopy=False)]
    study.study.set_user_attr("startup_enqueued", False)  # the second worker's view
    study.enqueue_startup()
    for params in first:  # what skip_if_exists misses when two workers insert at once
        study.study.enqueue_trial(params, user_attrs={"source": "enqueued"})
    evaluator = SyntheticEvaluator(["q"])
    run_search(study, evaluator, SOURCE, target=5, batch=3, direction="positive",
               progress=False)
    evaluated = [c for call in evaluator.calls for _, c, _ in call]
    assert len(evaluated) == 5 == len(set(evaluated)) == study.n_done()
    assert {p["coefficient"] for p in first} <= set(evaluated)
    assert {r.source for r in study.records()} >= {"duplicate", "enqueued"}


def test_a_surplus_design_point_goes_back_to_the_queue(tmp_path):
    """Asking past the target fails the surplus trial; an enqueued point it had taken is
    queued again for a later run instead of being lost."""
    from optuna.trial import TrialState

    study = open_study(tmp_path, startup_trials=2)
    study.enqueue_startup()
    design = {t.system_attrs["fixed_params"]["coefficient"]
              for t in study.study.get_trials(deepcopy=False)}
    (taken,) = study.ask(2, target=1)
    trials = study.study.get_trials(deepcopy=False)
    assert [t.user_attrs["source"] for t in trials if t.state == TrialState.FAIL] == ["surplus"]
    waiting = {t.system_attrs["fixed_params"]["coefficient"] for t in trials
               if t.state == TrialState.WAITING}
    assert waiting == design - {taken.coefficient} and len(waiting) == 1


def test_startup_design_size_leaves_the_sampler_half_the_trials():
    from steerops.search.runner import startup_trials

    assert startup_trials(None, trials=16, n_layers=1) == 3
    assert startup_trials(None, trials=16, n_layers=4) == 4
    assert startup_trials(None, trials=16, n_layers=32) == 8
    assert startup_trials(None, trials=2, n_layers=1) == 1
    assert startup_trials(5, trials=4, n_layers=1) == 5  # as given


def test_known_results_stand_in_for_part_of_the_design(tmp_path):
    study = open_study(tmp_path, startup_trials=3)
    assert study.add_known(2, 0.5, 5.0, 50.0, 100.0, 45.0, 2)
    study.enqueue_startup()
    queued = [t for t in study.study.get_trials(deepcopy=False)
              if t.user_attrs.get("source") == "enqueued"]
    assert len(queued) == 2  # 3 design points, one of them known already


def test_known_results_become_trials_without_counting(tmp_path):
    path = tmp_path / "results.jsonl"
    rows = [{"type": "baseline", "settings_hash": "synthetic", "result": {"trait_mean": 5}}]
    for i, coef in enumerate((0.5, 1.0, 1.3, 2.5)):
        rows.append({"type": "config", "settings_hash": "synthetic" if i < 3 else "other",
                     "config": {"coefficient": coef, "vectors": [{
                         "layer": 2, "component": "residual", "position": "prompt[-1]",
                         "method": "mean_diff", "weight": coef * 10}]},
                     "result": {"trait_mean": synthetic_trait(2, coef),
                                "coherence_mean": synthetic_coherence(2, coef), "n": 2}})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    known = load_known(path, "synthetic", "mean_diff", "prompt[-1]", "residual", [2])
    assert [k.coefficient for k in known] == [0.5, 1.0, 1.3]  # the other settings left out
    assert load_known(path, "synthetic", "mean_diff", "prompt[-1]", "residual", [1]) == []
    assert load_known(tmp_path / "none.jsonl", "synthetic", "m", "p", "r", [2]) == []
    with pytest.raises(SteeropsError, match="known_results: file not found"):
        load_known(tmp_path / "none.jsonl", "synthetic", "m", "p", "r", [2], required=True)
    study = open_study(tmp_path, startup_trials=2)
    stats = run_search(study, SyntheticEvaluator(["q", "r"]), SOURCE, target=2, batch=2,
                       direction="positive", known=known, progress=False)
    assert stats.imported == 3
    records = study.records()
    imported = [r for r in records if r.source == "known"]
    assert len(imported) == 3 and study.n_done() == 2 and len(records) == 5
    assert not [r for r in records if r.source == "enqueued"]  # known results replace the design
    assert imported[2].trait_delta == pytest.approx(synthetic_trait(2, 1.3) - BASELINE_TRAIT)
    # importing twice adds nothing
    again = open_study(tmp_path)
    assert not again.add_known(2, 1.3, 13.0, 65.0, 100.0, 60.0, 2)
    path.write_text('{"type": "config"\n')
    with pytest.raises(SteeropsError, match="results.jsonl:1: malformed JSON"):
        load_known(path, "synthetic", "mean_diff", "prompt[-1]", "residual", [2])


def test_study_refuses_other_settings_and_reports_bad_storage(tmp_path):
    open_study(tmp_path)
    with pytest.raises(SteeropsError, match="min_coherence"):
        SearchStudy(f"sqlite:///{tmp_path / 'optuna.db'}", "s", Space(0.0, 3.0, (2,)), 50.0,
                    {"layers": [2], "min_coherence": 50.0})
    with pytest.raises(SteeropsError, match="search.storage"):
        SearchStudy("nosuchdb://x", "s", Space(0.0, 3.0, (2,)), 50.0, {})
    assert storage_label("postgresql://me:secret@db:5432/optuna") == \
        "postgresql://me:***@db:5432/optuna"


def test_question_split_is_disjoint_seeded_and_complete():
    questions = [f"q{i}" for i in range(11)]
    search, heldout = split_questions(questions, 0.5, seed=7)
    assert not set(search) & set(heldout)
    assert sorted(search + heldout) == sorted(questions)
    assert len(heldout) == round(11 * 0.5)
    assert (search, heldout) == split_questions(questions, 0.5, seed=7)
    assert (search, heldout) != split_questions(questions, 0.5, seed=8)
    with pytest.raises(SteeropsError, match="at least 2"):
        split_questions(["only"], 0.5, seed=0)


def test_trials_csv_round_trips(tmp_path):
    records = [record(1, 40.0, 90.0), record(0, 70.0, 50.0)]
    write_trials_csv(tmp_path / "trials.csv", records)
    rows = list(csv.DictReader((tmp_path / "trials.csv").open()))
    assert [int(r["number"]) for r in rows] == [0, 1]
    assert [r["feasible"] for r in rows] == ["False", "True"]
    assert math.isclose(float(rows[1]["trait_delta"]), 40.0)


# ---- the CLI on the toy world -------------------------------------------------------------

@pytest.fixture(scope="module")
def toy_search(toy_world, tmp_path_factory):
    """`steerops search` run once on the toy world, with every evaluator's questions and
    every model load recorded; returns (folder, params file, recorded question lists, exit
    code, loaded variants)."""
    from conftest import write_params
    from steerops.cli import main
    from steerops.steering import evaluate, session

    folder = tmp_path_factory.mktemp("search")
    params = write_params(folder, toy_world, search={"trials": 6, "batch": 3, "layers": "1-2",
                                                     "startup_trials": 4})
    for argv in (["extract", "--position", "prompt[-1]", "--variant", "base"],
                 ["vectors", "--position", "prompt[-1]", "--variant", "base",
                  "--methods", "mean_diff"]):
        assert main([*argv, "--params", str(params)]) == 0
    seen: list[list[str]] = []
    loads: list[str] = []
    real_load = session.load_model

    class Recording(evaluate.SteeringEvaluator):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            seen.append(list(self.questions))

    def counting_load(params, variant, *args, **kwargs):
        loads.append(variant)
        return real_load(params, variant, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(evaluate, "SteeringEvaluator", Recording)
        mp.setattr(session, "load_model", counting_load)
        code = main(["search", "--params", str(params), "--trait", "toy/refusal",
                     "--method", "mean_diff", "--position", "prompt[-1]"])
    return folder, params, seen, code, loads


def search_out(folder):
    from steerops.search.store import search_dir

    return search_dir(folder / "outputs", "toy/refusal", "instruct", "prompt[-1]", "residual",
                      "mean_diff")


def test_toy_heldout_numbers_come_from_questions_the_search_never_saw(toy_search, toy_world):
    from steerops.toy import judge

    folder, _, seen, code, loads = toy_search
    assert code == 0
    questions = json.loads((toy_world / "traits/toy/refusal/steering.json").read_text())[
        "questions"]
    search_q, heldout_q = seen  # one evaluator for the search, one for the held-out part
    assert loads == ["instruct"]  # ... on one model load
    assert not set(search_q) & set(heldout_q)
    assert sorted(search_q + heldout_q) == sorted(set(questions))
    best = json.loads((search_out(folder) / "best.json").read_text())
    held = best["heldout"]
    assert held["n_questions"] == len(heldout_q) and best["search"]["n_questions"] == len(
        search_q)
    responses = [json.loads(line) for line in
                 (search_out(folder) / "heldout_responses.jsonl").read_text().splitlines()]
    assert sorted(r["question"] for r in responses) == sorted(heldout_q)
    # the held-out numbers, recomputed with the exact judge from the saved responses
    scores = np.array([judge.score(r["question"], r["response"]) for r in responses])
    assert held["trait_mean"] == pytest.approx(scores[:, 0].mean())
    assert held["coherence_mean"] == pytest.approx(scores[:, 1].mean())
    assert held["trait_delta"] == pytest.approx(held["trait_mean"] - held["baseline_trait"])
    assert best["n_generations"]["heldout"] == 2 * len(heldout_q)


def test_toy_search_outputs_and_tracking(toy_search):
    import mlflow

    folder, _, _, _, _ = toy_search
    out = search_out(folder)
    best = json.loads((out / "best.json").read_text())
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert len(rows) == best["n_trials"] == 6
    assert {int(r["layer"]) for r in rows} <= {1, 2}
    for r in rows:
        coherence, delta = float(r["coherence_mean"]), float(r["trait_delta"])
        assert (r["feasible"] == "True") == (coherence >= 68.0)
        assert delta == pytest.approx(float(r["trait_mean"]) - best["search"]["baseline_trait"])
        assert 0.0 <= float(r["coefficient"]) <= 3.0
    feasible = [r for r in rows if r["feasible"] == "True"]
    assert feasible and best["feasible"]
    top = max(float(r["trait_delta"]) for r in feasible)
    assert best["search"]["trait_delta"] == pytest.approx(top)
    assert best["search"]["trait_delta"] > 0  # steering toward refusal made benign answers refuse
    with (out / "best.csv").open() as f:
        [flat] = list(csv.DictReader(f))
    assert float(flat["heldout_trait_delta"]) == pytest.approx(best["heldout"]["trait_delta"])
    # the stage's DVC metrics file gathers every study's row
    summary = json.loads((folder / "metrics" / "search.json").read_text())
    cell = out.relative_to(folder / "outputs" / "search").as_posix()
    assert list(summary) == [cell]
    assert summary[cell]["heldout_trait_delta"] == pytest.approx(best["heldout"]["trait_delta"])
    assert summary[cell]["coefficient"] == best["chosen"]["coefficient"]
    assert (out / "search.png").stat().st_size > 0
    assert best["storage"].startswith("sqlite:///") and best["storage"].endswith("optuna.db")
    # MLflow: one parent run for the study, one nested run per trial
    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    parents = [r for r in runs if r.data.tags.get("steerops.stage") == "search"]
    assert len(parents) == 1
    children = [r for r in runs
                if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == 6
    assert all({"trait_delta", "coherence", "feasible"} <= set(r.data.metrics)
               for r in children)
    assert parents[0].data.metrics["heldout_trait_delta"] == pytest.approx(
        best["heldout"]["trait_delta"])


def test_toy_rerun_resumes_and_bad_input_keeps_outputs(toy_search, capsys):
    from steerops.cli import main

    folder, params, _, _, _ = toy_search
    out = search_out(folder)
    before = (out / "best.json").read_text()
    # a finished study: a rerun adds no trial and generates nothing new
    assert main(["search", "--params", str(params)]) == 0
    best = json.loads((out / "best.json").read_text())
    assert best["n_trials"] == 6 and best["n_generations"]["this_run"] == 0
    assert best["chosen"] == json.loads(before)["chosen"]
    before = (out / "best.json").read_text()
    capsys.readouterr()
    # another constraint on the same (named) study is refused, naming the key; outputs kept
    assert main(["search", "--params", str(params), "--min-coherence", "50",
                 "--study", best["study"]]) == 2
    assert "min_coherence" in capsys.readouterr().err
    assert main(["search", "--params", str(params), "--layers", "9", "--study", "x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "search" in err
    assert (out / "best.json").read_text() == before
