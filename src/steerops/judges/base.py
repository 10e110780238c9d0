"""The judge interface and the factory that picks a judge from params."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from steerops.errors import SteeropsError

if TYPE_CHECKING:
    from steerops.config import Params
    from steerops.traits import Trait

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
        raise SteeropsError(
            f"judge: got {len(questions)} questions but {len(responses)} responses"
        )


def make_judge(params: Params, trait: Trait | None = None) -> Judge:
    """The judge named by `params.judge.kind`, with prompts built for `trait`."""
    kind = params.judge.kind
    if kind == "toy":
        from steerops.judges.toy import ToyJudge

        return ToyJudge()
    if kind == "openai":
        from steerops.judges.openai import OpenAIJudge

        return OpenAIJudge.from_params(params, trait)
    if kind == "hf":
        from steerops.judges.hf import HFJudge

        return HFJudge.from_params(params, trait)
    raise SteeropsError(f"judge.kind: unknown judge {kind!r} (use toy, openai or hf)")
