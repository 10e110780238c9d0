"""Turning a judge's answer distribution into a 0-100 score.

The judge answers with one integer; instead of taking its most likely answer we take the
expectation over the integers 0-100 it might have written, normalised by the probability
mass those integers hold. Too little mass on integers (the judge wanted to write words)
means the judge did not answer, so the score is None.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

MAX_SCORE = 100


# Word-start markers some servers leave in token text (vLLM: "▁85" for SentencePiece,
# "Ġ85" for byte-level BPE): a space, not part of the number.
_SPACE_MARKERS = str.maketrans({"\u2581": " ", "\u0120": " "})


def token_text(token: str) -> str:
    """A token's text without surrounding whitespace or a server's word-start marker."""
    return token.translate(_SPACE_MARKERS).strip()


def as_score_int(token: str) -> int | None:
    """The integer 0-100 a token spells (surrounding whitespace ignored), else None."""
    text = token_text(token)
    if not text or not (text.isascii() and text.isdigit()) or len(text) > 3:
        return None
    value = int(text)
    return value if value <= MAX_SCORE else None


def integer_probs(top_logprobs: Iterable[Mapping]) -> dict[int, float]:
    """Probability per integer from `[{token, logprob}, ...]`; tokens spelling the same
    integer (" 7" and "7") add up."""
    probs: dict[int, float] = {}
    for entry in top_logprobs:
        value = as_score_int(str(entry.get("token", "")))
        logprob = entry.get("logprob")
        if value is None or not isinstance(logprob, int | float) or math.isnan(logprob):
            continue
        probs[value] = probs.get(value, 0.0) + math.exp(logprob)
    return probs


def weighted_score(probs: Mapping[int, float]) -> tuple[float | None, float]:
    """(probability-weighted mean integer, total mass); the mean is None with no mass."""
    mass = float(sum(probs.values()))
    if mass <= 0:
        return None, 0.0
    return sum(p * v for v, p in probs.items()) / mass, mass


def thresholded(score: float | None, mass: float, min_mass: float) -> float | None:
    """The score, or None when the integers held less than `min_mass` probability."""
    return None if score is None or mass < min_mass else score
