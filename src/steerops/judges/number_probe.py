"""One request before any work that tells whether an endpoint judge can score in one token.

Scores are read from the first answer token's alternatives, so a judge whose tokenizer
writes numbers digit by digit ("85" as "8", "5") scores 85 as 8. Scoring finds that out
only after a generated chunk's answers come back; asked to write 57, such a judge answers
"5" then "7", a whole-number tokenizer's (GPT-4o/4.1, Llama 3) "57". Any other reply (words,
a lone digit, an error, no logprobs) decides nothing: scoring's own checks still apply.
"""

from __future__ import annotations

from steerops.errors import SteeropsError
from steerops.judges.scoring import token_text
from steerops.judges.transport import RetryPolicy, post_json

PROMPT = "Reply with the number 57 and nothing else."


def answer_tokens(reply: object) -> list[str]:
    """The reply's answer tokens as its logprobs name them, cleaned (`token_text`); [] without
    them."""
    try:
        content = reply["choices"][0]["logprobs"]["content"]  # type: ignore[index]
    except (KeyError, IndexError, TypeError):
        return []
    if not isinstance(content, list):
        return []
    tokens = [c.get("token") if isinstance(c, dict) else None for c in content]
    return [token_text(t) for t in tokens if isinstance(t, str)]


def writes_digit_by_digit(
    url: str, model: str, headers: dict[str, str], timeout_s: float, secret: str
) -> bool:
    """Whether the judge at `url` (its chat completions) wrote 57 as "5" then "7"; one
    request, no retry (a failure decides nothing)."""
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
    tokens = answer_tokens(reply)
    return len(tokens) >= 2 and tokens[0] == "5" and tokens[1].startswith("7")


def digit_by_digit_error(model: str) -> SteeropsError:
    return SteeropsError(
        f"judge: model {model!r} wrote 57 as '5' then '7' when asked for it: its tokenizer "
        "writes numbers digit by digit, so a one-token score reads 85 as 8; use a judge "
        "model with whole-number tokens (GPT-4o/4.1, Llama 3) or judge.kind hf"
    )
