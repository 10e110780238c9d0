"""Text statistics behind the proxy judge's coherence score.

Two signals, each cheap and each blind to what the other catches:
- repetition: loops and repeated sentences ("Scare, Scare, Scare", "1. 1. 1.") show up as
  word n-grams seen before in the same response and as text that compresses very well;
- likelihood: the unsteered model's mean per-token negative log-likelihood of the
  response given the question. Gibberish and text that drifts away from the question are
  unlikely under the model; fluent answers, refusals included, are not. Loops are likely
  once started, which is why repetition is measured separately.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

import torch

from steerops.models.generation import format_prompt

_TOKEN = re.compile(r"\w+|[^\w\s]")


def words(text: str) -> list[str]:
    """Lower-cased words and punctuation marks, the units repetition is counted in."""
    return _TOKEN.findall(text.lower())


def repeated_fraction(text: str, n: int = 3) -> float:
    """Share of the response's word n-grams that already occurred earlier in it (0-1)."""
    units = words(text)
    grams = [tuple(units[i : i + n]) for i in range(len(units) - n + 1)]
    if not grams:
        return 0.0
    seen: set[tuple[str, ...]] = set()
    repeats = 0
    for gram in grams:
        repeats += gram in seen
        seen.add(gram)
    return repeats / len(grams)


def compression_ratio(text: str) -> float:
    """Compressed / raw size of the text (about 0.6-1 for prose this short, lower for loops
    of characters that word n-grams miss, such as runs of symbols or emoji)."""
    raw = text.encode("utf-8")
    if not raw:
        return 1.0
    return min(1.0, len(zlib.compress(raw, 9)) / len(raw))


@torch.inference_mode()
def response_nll(
    model, tokenizer, questions: Sequence[str], responses: Sequence[str], batch_size: int = 8
) -> list[float | None]:
    """Mean negative log-likelihood (nats per token) of each response given its question
    rendered through the chat template; None for an empty response.

    Rows are left-padded so every response ends at the last column, and logits are kept
    only for the response columns (the vocabulary projection dominates memory)."""
    rows = []
    for question, response in zip(questions, responses, strict=True):
        prompt_ids = tokenizer(format_prompt(tokenizer, question), add_special_tokens=False)[
            "input_ids"
        ]
        response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
        rows.append((prompt_ids, response_ids))
    device = model.get_input_embeddings().weight.device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out: list[float | None] = [None] * len(rows)
    order = sorted(
        (i for i, (_, r) in enumerate(rows) if r), key=lambda i: len(rows[i][0]) + len(rows[i][1])
    )
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        seqs = [rows[i][0] + rows[i][1] for i in chunk]
        width = max(len(s) for s in seqs)
        keep = max(len(rows[i][1]) for i in chunk)
        ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs], device=device)
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = (
            model(
                input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep + 1
            )
            .logits[:, :-1]
            .float()
        )
        logprobs = torch.log_softmax(logits, dim=-1)
        targets = ids[:, -keep:]
        token_nll = -logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        for row, i in enumerate(chunk):
            n = len(rows[i][1])
            out[i] = token_nll[row, -n:].mean().item()
    return out
