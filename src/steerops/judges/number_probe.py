"""One request before any work that tells whether an endpoint judge can score in one token.

Scores are read from the first answer token's alternatives, so a judge whose tokenizer
writes numbers digit by digit ("85" as "8", "5") scores 85 as 8. Scoring finds that out
only after a generated chunk's answers come back; asked to write 57, such a judge's first
token is "5", a whole-number tokenizer's (GPT-4o/4.1, Llama 3) is "57". Any other reply
(words, an error, no logprobs) decides nothing: scoring's own checks still apply.
"""

from __future__ import annotations

from steerops.errors import SteeropsError
from steerops.judges.transport import RetryPolicy, post_json

PROMPT = "Reply with the number 57 and nothing else."
_NUMBER, _FIRST_DIGIT = "57", "5"


def first_token(reply: object) -> str | None:
    """The reply's first answer token as its logprobs name it (None without them)."""
    try:
        token = reply["choices"][0]["logprobs"]["content"][0]["token"]  # type: ignore[index]
    except (KeyError, IndexError, TypeError):
        return None
    return token.strip().lstrip("\u2581") if isinstance(token, str) else None


def writes_digit_by_digit(
    url: str, model: str, headers: dict[str, str], timeout_s: float, secret: str
) -> bool:
    """Whether the judge at `url` (its chat completions) began 57 with the digit 5 alone;
    one request, no retry (a failure decides nothing)."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": 2,
        "temperature": 0,
        "logprobs": True,
    }
    try:
        reply = post_json(url, body, headers, RetryPolicy(0, 0.0, 0.0, timeout_s), secret)
    except SteeropsError:
        return False
    return first_token(reply) == _FIRST_DIGIT


def digit_by_digit_error(model: str) -> SteeropsError:
    return SteeropsError(
        f"judge: model {model!r} wrote {_NUMBER} as {_FIRST_DIGIT!r} first when asked for it: "
        "its tokenizer writes numbers digit by digit, so a one-token score reads 85 as 8; "
        "use a judge model with whole-number tokens (GPT-4o/4.1, Llama 3) or judge.kind hf"
    )
