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


def check_pairs(questions: list[str], responses: list[str]) -> None:
    if len(questions) != len(responses):
        raise SteeropsError(f"judge: got {len(questions)} questions but {len(responses)} responses")
