"""The judge interface every judge implements (`factory.make_judge` picks one from params)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from steerops.errors import SteeropsError

# (trait, coherence), each 0-100 or None when the judge could not decide.
Score = tuple[float | None, float | None]


@runtime_checkable
class Judge(Protocol):
    id: str  # kind + judge model + hash of prompt templates

    def score(self, questions: list[str], responses: list[str]) -> list[Score]:
        """(trait, coherence) per (question, response) pair, in input order."""
        ...


def n_unanswered(judge: Judge, questions: list[str], responses: list[str]) -> int:
    """How many of these (question, response) pairs the judge's endpoint refused to judge
    in its latest call (`CachedJudge.unanswered`; other judges never refuse)."""
    refused: set[tuple[str, str]] = getattr(judge, "unanswered", set())
    return sum(pair in refused for pair in zip(questions, responses, strict=True))


def check_pairs(questions: list[str], responses: list[str]) -> None:
    if len(questions) != len(responses):
        raise SteeropsError(f"judge: got {len(questions)} questions but {len(responses)} responses")


def check_judge_variant(params, role: str) -> str:
    """`judge.variant` of a local judge (`role`: what it is for, in the error): set, a known
    variant, and one that can load here (its source, weights and device); no weights read."""
    from steerops.models.loading import check_variant

    variant = params.judge.variant
    if not variant:
        raise SteeropsError(f"judge.variant: required for judge.kind {params.judge.kind} ({role})")
    try:
        params.variant(variant)
    except SteeropsError as exc:
        raise SteeropsError(f"judge.variant: {exc}") from None
    check_variant(params, variant)
    return variant
