"""A judge behind an endpoint that names the model answering each prompt (as an OpenAI-
compatible one does): the toy judge's scores, through the judge cache."""

from __future__ import annotations

from pathlib import Path

from mlflow import MlflowClient

from steerops.config import load_params
from steerops.judges.cache import JudgeCache
from steerops.judges.cached import CachedJudge
from steerops.judges.prompts import JudgePrompts
from steerops.toy.judge import score as toy_score


class NamingJudge(CachedJudge):
    kind_name = "naming"
    names_served = True
    model = "judge-mini-2026-01-01"  # the snapshot serving now (a test moves it)

    def _answer(self, jobs):
        for i, job in enumerate(jobs):
            trait, coherence = toy_score(job.question, job.response)
            yield i, (trait if job.kind == "trait" else coherence, 1.0)

    def _served_by(self, key):
        return self.model


def naming_judges(monkeypatch, cache_dir: Path) -> list[NamingJudge]:
    """Make every stage's judge a `NamingJudge` on one cache; the list holds each built."""
    cache = JudgeCache(cache_dir)
    prompts = JudgePrompts("{question} {answer}", "{answer}")
    judges: list[NamingJudge] = []

    def make(*args, **kwargs):
        judges.append(NamingJudge("judge-mini", prompts, cache, min_prob_mass=0.5))
        return judges[-1]

    monkeypatch.setattr("steerops.judges.make_judge", make)
    return judges


def parse_served(tag: str) -> dict[str, int]:
    """`served_summary`'s line as {model: answers}."""
    parts = (part.rsplit(" (", 1) for part in tag.split(", "))
    return {model: int(n.removesuffix(" answers)")) for model, n in parts}


def served_on_runs(params_file: Path, stage: str) -> list[dict[str, int]]:
    """{model: answers} of each one-trait `stage` invocation's MLflow run (not its nested
    runs), oldest first, from its `steerops.judge_served` tag."""
    client = MlflowClient(load_params(params_file).tracking.uri)
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string=f"tags.`steerops.stage` = '{stage}'",
        order_by=["attributes.start_time ASC"],
    )
    return [
        parse_served(run.data.tags["steerops.judge_served"])
        for run in runs
        if "mlflow.parentRunId" not in run.data.tags
    ]
