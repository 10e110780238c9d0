"""Which model an endpoint judge named for the answers a search scored with is on the
search's MLflow run, as on the grid's (tests/steering/test_judge_served.py)."""

from __future__ import annotations

from mlflow import MlflowClient

from naming_judge import naming_judges, served_on_runs
from steer_world import steer_params
from steerops.cli import main
from steerops.config import load_params


def test_the_served_model_of_every_answer_scored_is_on_the_search_run(
    tmp_path, toy_world, monkeypatch, capsys
):
    judges = naming_judges(monkeypatch, tmp_path / "judge_cache")
    params_file = steer_params(tmp_path, toy_world)
    argv = ["search", "--params", str(params_file), "--out", str(tmp_path / "run")]
    argv += ["--max-new-tokens", "6", "--layers", "1", "--trials", "2", "--subset", "8"]
    assert main(argv) == 0
    asked = sum(judge.calls for judge in judges)
    assert asked > 0
    # the search half's trials and baseline, and the held-out evaluation: all one judge's
    assert served_on_runs(params_file, "search") == [{"judge-mini-2026-01-01": asked}]
    # what the judge cost is said and logged, as a steer's is
    hits = sum(judge.cache_hits for judge in judges)
    said = f"judge: {asked} prompts sent to judge-mini, {hits} answered from its cache"
    assert said in capsys.readouterr().out
    client = MlflowClient(load_params(params_file).tracking.uri)
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string="tags.`steerops.stage` = 'search'",
    )
    (run,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert run.data.metrics["judge_prompts_sent"] == asked
    assert run.data.metrics["judge_prompts_cached"] == hits
