"""The exact toy-world judge behind the common interface (no model, no cache needed)."""

from __future__ import annotations

from steerops.judges.base import Score, check_pairs


class ToyJudge:
    id = "toy:exact"

    def score(self, questions: list[str], responses: list[str]) -> list[Score]:
        from steerops.toy.judge import score

        check_pairs(questions, responses)
        return [score(q, r) for q, r in zip(questions, responses, strict=True)]
