"""Judges: score (trait, coherence) of responses in 0-100, or None when undecided.

    judge = make_judge(params, trait)
    scores = judge.score(questions, responses)   # [(trait, coherence), ...]

Kinds (params.judge.kind): `toy` (the exact toy-world judge), `openai` (any
OpenAI-compatible chat endpoint, one-token answer with top logprobs), `hf` (a local
transformers model, same probability-weighted score) and `proxy` (an offline proxy for real
text: refusal phrases for the trait, repetition and the model's own likelihood for
coherence). `judge.id` names the judge, its model
and its prompts, for cache keys and settings hashes.
"""

from steerops.judges.base import Judge, Score
from steerops.judges.factory import check_judge, make_judge, reach_judge

__all__ = ["Judge", "Score", "check_judge", "make_judge", "reach_judge"]
