"""Which model an endpoint judge named for the answers a steer scored with is on the steer's
MLflow run: an alias (`gpt-4.1-mini`) moves to new snapshots, and the run's numbers are that
snapshot's."""

from __future__ import annotations

from naming_judge import NamingJudge, naming_judges, served_on_runs
from steer_world import SMALL, steer_params
from steerops.cli import main


def test_the_served_model_of_every_answer_scored_is_on_the_steer_run(
    tmp_path, toy_world, monkeypatch, capsys
):
    judges = naming_judges(monkeypatch, tmp_path / "judge_cache")
    params_file = steer_params(tmp_path, toy_world)
    argv = ["steer", "--params", str(params_file), "--out", str(tmp_path / "run"), *SMALL]
    assert main(argv) == 0
    first = judges[0].calls  # every distinct answer asked once (the toy repeats texts)
    assert first >= 8  # the baseline's 4 questions, 2 prompts each, at least
    # what the judge cost is said: every prompt sent, none in the cache yet
    said = f"judge: {first} prompts sent to judge-mini, 0 answered from its cache"
    assert said in capsys.readouterr().out
    assert served_on_runs(params_file, "steer") == [{"judge-mini-2026-01-01": first}]
    # a steer of the same grid and another coefficient, by a new snapshot: the answers it
    # scores anew are the new model's, those served from the judge's cache the old one's
    NamingJudge.model = "judge-mini-2026-06-01"
    try:
        argv[argv.index("0.5,1")] = "0.5,3"
        assert main(argv) == 0
    finally:
        NamingJudge.model = "judge-mini-2026-01-01"
    fresh = judges[1].calls
    assert fresh > 0
    hits = judges[1].cache_hits
    assert hits > 0  # the baseline's answers, asked before
    said = f"judge: {fresh} prompts sent to judge-mini, {hits} answered from its cache"
    assert said in capsys.readouterr().out
    latest = served_on_runs(params_file, "steer")[-1]
    assert latest.pop("judge-mini-2026-06-01") == fresh
    # the configs served from the results log were not scored by this run
    assert 0 <= latest.pop("judge-mini-2026-01-01", 0) <= first and latest == {}


def test_a_steer_of_several_traits_tags_each_traits_models_in_one_value():
    from steerops.steering.command import _served_tag

    one = {"behavior/refusal+v2": "m-1 (8 answers)"}
    assert _served_tag(one) == "m-1 (8 answers)"
    two = {**one, "persona/evil": "m-1 (6 answers), m-2 (2 answers)"}
    assert _served_tag(two) == (
        "behavior/refusal+v2: m-1 (8 answers); persona/evil: m-1 (6 answers), m-2 (2 answers)"
    )
