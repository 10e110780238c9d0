"""Judges: score (trait, coherence) of responses in 0-100, or None when undecided.

    judge = make_judge(params, trait)
    scores = judge.score(questions, responses)   # [(trait, coherence), ...]

Kinds (params.judge.kind): `toy` (the exact toy-world judge), `openai` (any
OpenAI-compatible chat endpoint, one-token answer with top logprobs) and `hf` (a local
transformers model, same probability-weighted score). `judge.id` names the judge, its model
and its prompts, for cache keys and settings hashes.
"""

from steerops.judges.base import Judge, Score
from steerops.judges.factory import make_judge

__all__ = ["Judge", "Score", "make_judge"]
