"""`steerops search` on the toy world: held-out numbers from unseen questions on one model load,
outputs and tracking, resuming."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from steering_data import reference_interval


@pytest.fixture(scope="module")
def toy_search(toy_world, tmp_path_factory):
    """`steerops search` run once on the toy world, with every evaluator's questions and
    every model load recorded; returns (folder, params file, recorded question lists, exit
    code, loaded variants)."""
    from conftest import write_params
    from steerops.cli import main
    from steerops.steering import evaluate, session

    folder = tmp_path_factory.mktemp("search")
    # 1.3 (in units of the per-token norm) lies in the toy's narrow feasible band
    search = {"trials": 6, "batch": 3, "layers": "1-2", "startup_trials": 4, "enqueue": [1.3]}
    params = write_params(folder, toy_world, search=search)
    for argv in (
        ["extract", "--position", "prompt[-1]", "--variant", "base"],
        [
            "vectors",
            "--position",
            "prompt[-1]",
            "--variant",
            "base",
            "--methods",
            "mean_diff,random_baseline",
        ],
    ):
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
        code = main(
            [
                "search",
                "--pipeline",
                "--params",
                str(params),
                "--trait",
                "toy/refusal",
                "--method",
                "mean_diff",
                "--position",
                "prompt[-1]",
            ]
        )
    return folder, params, seen, code, loads


def search_out(folder, method="mean_diff"):
    from steerops.search.store import search_dir

    return search_dir(
        folder / "outputs", "toy/refusal", "instruct", "prompt[-1]", "residual", method
    )


def test_toy_heldout_numbers_come_from_questions_the_search_never_saw(toy_search, toy_world):
    from steerops import stats
    from steerops.config import load_params
    from steerops.toy import judge

    folder, params_file, seen, code, loads = toy_search
    assert code == 0
    questions = json.loads((toy_world / "traits/toy/refusal/steering.json").read_text())[
        "questions"
    ]
    search_q, heldout_q = seen  # one evaluator for the search, one for the held-out part
    assert loads == ["instruct"]  # ... on one model load
    assert not set(search_q) & set(heldout_q)
    assert sorted(search_q + heldout_q) == sorted(set(questions))
    # the halves are the grid's, and each is used for its own part: the search's trials on
    # the selection half, the held-out evaluation on the held-out half
    params = load_params(params_file)
    halves = stats.split_questions(questions, params.search.heldout_fraction, params.seed)
    assert (search_q, heldout_q) == halves
    best = json.loads((search_out(folder) / "best.json").read_text())
    held = best["heldout"]
    assert held["n_questions"] == len(heldout_q) and best["search"]["n_questions"] == len(search_q)
    responses = [
        json.loads(line)
        for line in (search_out(folder) / "heldout_responses.jsonl").read_text().splitlines()
    ]
    assert sorted(r["question"] for r in responses) == sorted(heldout_q)
    # the held-out numbers, recomputed with the exact judge from the saved responses
    scores = np.array([judge.score(r["question"], r["response"]) for r in responses])
    assert held["trait_mean"] == pytest.approx(scores[:, 0].mean())
    assert held["coherence_mean"] == pytest.approx(scores[:, 1].mean())
    assert held["trait_delta"] == pytest.approx(held["trait_mean"] - held["baseline_trait"])
    assert best["n_generations"]["heldout"] == 2 * len(heldout_q)
    # the interval: the documented paired bootstrap against the held-out baseline, recomputed
    # from the saved responses (in the held-out questions' order) and the logged baseline
    entries = [json.loads(line) for line in (search_out(folder) / "results.jsonl").open()]
    [held_base] = [
        e
        for e in entries
        if e["type"] == "baseline" and e["settings_hash"] == held["settings_hash"]
    ]
    base = dict(zip(held_base["questions"], (t for t, _ in held_base["scores"]), strict=True))
    assert [r["question"] for r in responses] == heldout_q
    d = np.array([s[0] - base[r["question"]] for s, r in zip(scores, responses, strict=True)])
    mean, lo, hi = reference_interval(d, seed=0)
    assert held["trait_delta"] == pytest.approx(mean) and held["n"] == len(heldout_q)
    assert (held["delta_lo"], held["delta_hi"]) == pytest.approx((lo, hi))
    assert best["status"] == "ok" and held["delta_lo"] > 0


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
    feasible = [r for r in rows if r["feasible"] == "True" and float(r["coefficient"]) > 0]
    assert feasible and best["feasible"] and best["search"]["feasible"]
    top = max(float(r["trait_delta"]) for r in feasible)
    assert best["search"]["trait_delta"] == pytest.approx(top)
    assert best["search"]["delta_lo"] > 0 and best["search"]["n"] == best["search"]["n_questions"]
    assert best["search"]["trait_delta"] > 0  # steering toward refusal made benign answers refuse
    # the coherent trials carry their search-half interval: the chosen one's is best.json's
    [chosen] = [r for r in rows if int(r["number"]) == best["chosen"]["trial"]]
    assert float(chosen["delta_lo"]) == pytest.approx(best["search"]["delta_lo"])
    assert float(chosen["delta_hi"]) == pytest.approx(best["search"]["delta_hi"])
    for r in rows:
        steered = r["feasible"] == "True" and float(r["coefficient"]) != 0
        assert (r["delta_lo"] != "") == steered  # only those the choice was made among
        if steered:
            assert float(r["delta_lo"]) <= float(r["trait_delta"]) <= float(r["delta_hi"])
    with (out / "best.csv").open() as f:
        [flat] = list(csv.DictReader(f))
    assert float(flat["heldout_trait_delta"]) == pytest.approx(best["heldout"]["trait_delta"])
    # the stage's DVC metrics file gathers every study's row
    summary = json.loads((folder / "metrics" / "search.json").read_text())
    cell = out.relative_to(folder / "outputs" / "search").as_posix()
    assert list(summary) == [cell]
    assert summary[cell] == {
        "status": "ok",
        "layer": best["chosen"]["layer"],
        "coefficient": best["chosen"]["coefficient"],
        "tried_layer": best["chosen"]["layer"],
        "tried_coefficient": best["chosen"]["coefficient"],
        "delta": pytest.approx(best["heldout"]["trait_delta"]),
        "delta_lo": pytest.approx(best["heldout"]["delta_lo"]),
        "delta_hi": pytest.approx(best["heldout"]["delta_hi"]),
        "coherence": pytest.approx(best["heldout"]["coherence_mean"]),
        "under_bar": best["heldout"]["under_bar"],
        "credited_delta": pytest.approx(best["heldout"]["credited_delta"]),
        "credited_lo": pytest.approx(best["heldout"]["credited_lo"]),
        "credited_hi": pytest.approx(best["heldout"]["credited_hi"]),
        "n": best["heldout"]["n"],
        "p": pytest.approx(best["heldout"]["p"]),
    }
    assert (out / "search.png").stat().st_size > 0
    assert best["storage"] == "sqlite:///optuna.db"  # project-relative, as the run's param
    # `steerops dashboard` shows the reported trial as the study's best
    from steerops.search.storage import dashboard_storage

    storage = dashboard_storage(f"sqlite:///{folder / 'optuna.db'}")
    study_id = storage.get_study_id_from_name(best["study"])
    assert storage.get_best_trial(study_id).number == best["chosen"]["trial"]
    # MLflow: one parent run for the study, one nested run per trial
    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    parents = [
        r
        for r in runs
        if r.data.tags.get("steerops.stage") == "search" and "mlflow.parentRunId" not in r.data.tags
    ]
    assert len(parents) == 1
    assert parents[0].info.run_name == "search mean_diff prompt[-1] toy/refusal"
    assert parents[0].data.tags["optuna.study"] == best["study"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == 6
    assert all(r.data.tags["steerops.stage"] == "search" for r in children)
    # the search half's numbers, under the names the grid's config runs give that half
    selection = {"selection_trait_delta", "selection_coherence_mean", "selection_trait_mean"}
    assert all(selection | {"selection_n"} <= set(r.data.metrics) for r in children)
    # the plain names are the grid runs' numbers over every question: none here
    assert not any({"trait_delta", "trait_mean", "n"} & set(r.data.metrics) for r in children)
    # the settings the grid's config runs carry, to compare trials with them in the UI
    shared = {"judge", "model_id", "scope", "coefficient_unit", "max_new_tokens", "variant"}
    assert shared <= set(parents[0].data.params)
    assert all(shared <= set(r.data.params) for r in children)
    assert {r.data.params["judge"] for r in children} == {"toy:exact"}
    for r in children:  # feasible at the bar each run names (no coherence_margin here)
        m = r.data.metrics
        assert m["coherence_bar"] == 68
        assert m["feasible"] == float(m["selection_coherence_mean"] >= 68)
        if r.data.tags["steerops.cached"] == "false":  # spans its batch's evaluation
            assert r.info.end_time - r.info.start_time >= 5
        assert (r.data.params["method"], r.data.params["position"]) == ("mean_diff", "prompt[-1]")
    for r in children:  # named by what each tried
        number, layer, c = (r.data.params[k] for k in ("trial", "layer", "coefficient"))
        assert r.info.run_name == f"trial {number}: L{layer} c{float(c):.4g}"
    assert parents[0].data.metrics["heldout_trait_delta"] == pytest.approx(
        best["heldout"]["trait_delta"]
    )
    assert parents[0].data.params["storage"] == "sqlite:///optuna.db"  # project-relative


def test_toy_rerun_resumes_and_bad_input_keeps_outputs(toy_search, capsys):
    import mlflow

    from steerops.cli import main
    from steerops.config import load_params

    folder, params, _, _, _ = toy_search
    out = search_out(folder)
    before = (out / "best.json").read_text()
    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")

    def search_runs() -> tuple[list, list]:
        runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
        parents = [
            r
            for r in runs
            if r.data.tags.get("steerops.stage") == "search"
            and "mlflow.parentRunId" not in r.data.tags
        ]
        return runs, sorted(parents, key=lambda r: r.info.start_time)

    # a finished study: a rerun adds no trial, generates nothing new and opens no run (nor
    # calls a report written before it behind)
    loaded = load_params(params)
    report = loaded.path(loaded.report.out) / "report.md"
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("# an earlier report\n")
    capsys.readouterr()
    assert main(["search", "--pipeline", "--params", str(params)]) == 0
    said = "every trial was served and no output changed: no new MLflow run"
    err = capsys.readouterr().err
    assert said in err and "was written from the earlier results" not in err
    best = json.loads((out / "best.json").read_text())
    assert best["n_trials"] == 6 and "this_run" not in best["n_generations"]
    # a DVC output: the same bytes whether a run generated its rows or found them logged
    assert (out / "best.json").read_text() == before
    assert len(search_runs()[1]) == 1
    # an output gone: the rerun writes it again (the same bytes), and its run's page shows
    # every trial its result rests on, marked as served
    (out / "best.json").unlink()
    assert main(["search", "--pipeline", "--params", str(params)]) == 0
    err = capsys.readouterr().err
    assert said not in err and "was written from the earlier results" in err
    report.unlink()
    assert (out / "best.json").read_text() == before
    runs, parents = search_runs()
    assert len(parents) == 2

    def trials(parent) -> dict:
        kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        return {r.data.params["trial"]: r for r in kids}

    first, again = trials(parents[0]), trials(parents[1])
    assert sorted(again) == sorted(first) and len(again) == 6
    assert all(r.data.tags["steerops.cached"] == "true" for r in again.values())
    assert all(r.data.tags["steerops.served"] == "true" for r in again.values())
    assert all(r.data.tags["steerops.served"] == "false" for r in first.values())
    for number, run in again.items():
        assert run.data.metrics == first[number].data.metrics
        assert run.info.run_name == first[number].info.run_name
    before = (out / "best.json").read_text()
    capsys.readouterr()
    # another constraint on the same (named) study is refused, naming the key; outputs kept
    assert (
        main(
            [
                "search",
                "--pipeline",
                "--params",
                str(params),
                "--min-coherence",
                "50",
                "--study",
                best["study"],
            ]
        )
        == 2
    )
    assert "min_coherence" in capsys.readouterr().err
    assert (
        main(["search", "--pipeline", "--params", str(params), "--layers", "9", "--study", "x"])
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "search" in err
    assert (out / "best.json").read_text() == before


def _record_generation(mp):
    """Record the (layer, coefficient) of every steered row group generated, and the number
    of unsteered (baseline) generations."""
    from steerops.steering import session

    steered, unsteered = [], []
    real = session.SteeringSession.generate

    def recording(self, prompts, configs, desc, rows=None):
        if configs is None:
            unsteered.append(len(prompts))
        else:
            steered.extend((c.vectors[0].layer, c.coefficient) for c, _ in configs)
        return real(self, prompts, configs, desc, rows)

    mp.setattr(session.SteeringSession, "generate", recording)
    return steered, unsteered


def test_toy_search_reuses_the_grid_and_starts_at_its_feasible_band(toy_search, capsys):
    """The grid runs on all questions; a new study on the same settings gets the grid's scores
    on its half as known trials (no baseline, no grid config generated again) and its first
    trials bracket the grid's strongest coherent coefficient."""
    from steerops.cli import main

    folder, params, _, _, _ = toy_search
    grid = ["--layers", "1-2", "--coefficients", "0.5,1,1.5,2", "--method", "mean_diff"]
    assert (
        main(["steer", "--pipeline", "--params", str(params), "--position", "prompt[-1]", *grid])
        == 0
    )
    with pytest.MonkeyPatch.context() as mp:
        steered, unsteered = _record_generation(mp)
        argv = [
            "search",
            "--pipeline",
            "--params",
            str(params),
            "--method",
            "mean_diff",
            "--study",
            "reuse",
        ]
        assert main([*argv, "--position", "prompt[-1]"]) == 0
    assert unsteered == []  # both baselines are the grid's, on each half
    grid_points = {(layer, c) for layer in (1, 2) for c in (0.5, 1.0, 1.5, 2.0)}
    assert steered and not set(steered) & grid_points
    best = json.loads((search_out(folder) / "best.json").read_text())
    assert best["n_known"] == 8  # the grid's: the first study's trials serve it, not seed it
    # its held-out answers pair with the grid's configs question by question (the report's
    # search-against-grid line): scored under the same settings, questions aside
    from steerops.config import load_params
    from steerops.report.load import load_results, load_search_heldout

    frame = load_results(load_params(params))
    [answers] = load_search_heldout(load_params(params)).values()
    assert not answers.missing and len(answers.scores) == best["heldout"]["n_questions"]
    assert set(frame.loc[frame["method"] == "mean_diff", "scope"]) == {answers.scope}
    # which study, from how many known configs: workers without the grid would say 0
    said = "study 'reuse', starting from 8 known configs (the grid cell's latest sweep in "
    assert said in capsys.readouterr().err
    rows = list(csv.DictReader((search_out(folder) / "trials.csv").open()))
    known = {(int(r["layer"]), float(r["coefficient"])) for r in rows if r["source"] == "known"}
    assert grid_points <= known
    first = [r for r in rows if r["source"] == "enqueued"]
    assert first  # the band brackets are enqueued before any sampled trial
    assert min(int(r["number"]) for r in first) < min(
        (int(r["number"]) for r in rows if r["source"] == "search"), default=10**6
    )


def test_toy_search_with_random_vectors_finds_no_effect(toy_search, capsys):
    from steerops.cli import main

    folder, params, _, _, _ = toy_search
    argv = ["search", "--pipeline", "--params", str(params), "--method", "random_baseline"]
    assert main([*argv, "--position", "prompt[-1]"]) == 0
    out = search_out(folder, "random_baseline")
    best = json.loads((out / "best.json").read_text())
    # coherent trials, none with an effect: "no effect", not "no feasible steering"
    assert best["status"] == "no effect" and best["n_feasible"] > 0
    assert best["chosen"] is None and best["heldout"] is None and best["feasible"] is None
    assert best["search"]["feasible"]  # coherent trials: infeasible it was not
    printed = capsys.readouterr().out
    assert "prompt[-1] `random_baseline`: no effect (" in printed
    # where its trials.csv and best.json are, relative to where the command ran
    [files] = [line for line in printed.splitlines() if line.startswith("  files: ")]
    assert Path(files.removeprefix("  files: ")).resolve() == out.resolve()
    assert (out / "heldout_responses.jsonl").read_text() == ""
    with (out / "best.csv").open() as f:
        [flat] = list(csv.DictReader(f))
    assert flat["status"] == "no effect" and flat["coefficient"] == ""
    summary = json.loads((folder / "metrics" / "search.json").read_text())
    cell = out.relative_to(folder / "outputs" / "search").as_posix()
    assert summary[cell]["status"] == "no effect"
    assert summary[cell]["coefficient"] is None
    from steerops.search.storage import dashboard_storage

    storage = dashboard_storage(f"sqlite:///{folder / 'optuna.db'}")
    study_id = storage.get_study_id_from_name(best["study"])
    attrs = storage.get_study_user_attrs(study_id)
    assert attrs["chosen_trial"] is None  # nothing reported
    assert attrs["chosen_status"] == "no effect" and attrs["chosen_heldout_coherent"] is None


def test_a_bar_the_unsteered_model_misses_too_is_said_so(toy_search, capsys, tmp_path, monkeypatch):
    """A judge whose coherence the unsteered model misses too (the toy's, lowered by 50):
    no trial reaches the bar, and the search says the baseline does not either and what to
    check, and records the baseline's coherence, under the grid's verdict "baseline
    incoherent" rather than "no feasible"."""
    from steerops.cli import main
    from steerops.judges.toy import ToyJudge
    from steerops.toy import judge

    real = judge.score
    monkeypatch.setattr(judge, "score", lambda q, r: (real(q, r)[0], real(q, r)[1] - 50))
    monkeypatch.setattr(ToyJudge, "id", "toy:lowered")  # no score the logs hold serves
    folder, params, _, _, _ = toy_search
    argv = ["search", "--params", str(params), "--method", "mean_diff", "--trials", "3"]
    argv += ["--position", "prompt[-1]", "--out", str(tmp_path), "--no-known"]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "steerops search: baseline incoherent: coherence >= 68" in err
    assert "nor does the unsteered model (coherence 50.0 on the search half)" in err
    [best] = tmp_path.rglob("best.json")
    best = json.loads(best.read_text())
    assert best["search"]["baseline_coherence"] == 50.0
    assert best["status"] == "baseline incoherent" and best["chosen"] is None


def test_a_coherence_margin_chooses_over_the_raised_bar_and_judges_held_out_at_the_bar(
    toy_search, tmp_path
):
    """`search.coherence_margin`: trials are feasible and chosen at min_coherence + margin on
    the search half (the study's constraint), the held-out verdict keeps min_coherence, and
    the study is another one (its name) while a study without a margin keeps its name."""
    import yaml

    from steerops.cli import main

    folder, params, _, _, _ = toy_search
    margin = 20.0
    blocks = yaml.safe_load(params.read_text())
    blocks["search"]["coherence_margin"] = margin
    raised = folder / "params_margin.yaml"  # beside it: the same outputs and logs
    raised.write_text(yaml.safe_dump(blocks, sort_keys=False))
    argv = ["search", "--params", str(raised), "--method", "mean_diff", "--trials", "3"]
    assert main([*argv, "--position", "prompt[-1]", "--out", str(tmp_path)]) == 0
    [path] = tmp_path.rglob("best.json")
    best = json.loads(path.read_text())
    assert best["min_coherence"] == 68.0 and best["coherence_margin"] == margin
    with (path.parent / "trials.csv").open() as f:
        trials = [r for r in csv.DictReader(f) if r["state"] == "complete"]
    feasible = {r["number"]: r["feasible"] == "True" for r in trials}
    assert feasible == {r["number"]: float(r["coherence_mean"]) >= 88.0 for r in trials}
    assert any(68.0 <= float(r["coherence_mean"]) < 88.0 for r in trials)  # the margin bit
    assert best["chosen"] is not None and best["search"]["coherence_mean"] >= 88.0
    # held out at the bar: the verdict's coherence test is 68's
    held = best["heldout"]["coherence_mean"]
    assert best["feasible"] == (held >= 68.0)
    assert (best["status"] == "incoherent held out") == (held < 68.0)
    # its held-out answers under each bar, counted from the answers the search wrote
    with (path.parent / "heldout_responses.jsonl").open() as f:
        scored = [c for row in map(json.loads, f) if (c := row["coherence"]) is not None]
    assert best["heldout"]["under_bar"] == sum(c < 68.0 for c in scored)
    assert best["heldout"]["under_margin"] == sum(c < 88.0 for c in scored)
    # another study than the pipeline's, whose name the margin-free params still give
    pipeline = json.loads((search_out(folder) / "best.json").read_text())
    assert best["study"] != pipeline["study"] and "coherence_margin" not in pipeline
    with (path.parent / "best.csv").open() as f:
        [flat] = list(csv.DictReader(f))
    assert float(flat["coherence_margin"]) == margin
    assert int(flat["heldout_under_margin"]) == best["heldout"]["under_margin"]
    assert pipeline["heldout"]["under_margin"] is None  # no margin: no raised bar


def test_points_enqueued_into_a_study_that_ran_its_trials_are_said_to_wait(toy_search, capsys):
    """A study named with --study that holds its trials evaluates no new point: the run
    says the enqueued points wait for more trials, and its outputs stay as they were."""
    from steerops.cli import main

    folder, params, _, _, _ = toy_search
    out = search_out(folder)
    before = json.loads((out / "best.json").read_text())
    argv = ["search", "--pipeline", "--params", str(params), "--study", before["study"]]
    capsys.readouterr()
    assert main([*argv, "--enqueue", "0.7"]) == 0
    err = capsys.readouterr().err
    said = f"study {before['study']!r} already holds its 6 trials: "
    assert said in err and "2 points of search.enqueue wait for a run with more (--trials)" in err
    after = json.loads((out / "best.json").read_text())
    assert after["chosen"] == before["chosen"] and after["n_trials"] == 6
