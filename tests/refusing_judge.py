"""A judge whose endpoint refuses some answers (a content filter, say): the toy judge's scores
for the others, and `unanswered` naming the refused pairs as `CachedJudge` does."""

from __future__ import annotations

from collections.abc import Callable

from steerops.toy import judge as toy_judge

Pair = tuple[str, str]


class RefusingJudge:
    id = "refusing"

    def __init__(self, refuse: Callable[[list[Pair]], set[Pair]], asked: list[str]):
        """`refuse(pairs)`: the (question, response) pairs of one call it refuses; every
        question it is asked is appended to `asked`."""
        self.refuse, self.asked = refuse, asked
        self.unanswered: set[Pair] = set()

    def score(self, questions, responses):
        pairs = list(zip(questions, responses, strict=True))
        self.asked.extend(questions)
        self.unanswered = self.refuse(pairs)
        return [(None, None) if p in self.unanswered else toy_judge.score(*p) for p in pairs]
