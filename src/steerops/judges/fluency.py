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
from transformers.cache_utils import DynamicCache

from steerops.models.decode import DecodeStats
from steerops.models.decode_prefill import Prefiller
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

    A judge reads many responses to one question, so the prompt is read once: the prompts'
    common prefix (template, system prompt) once per call and each distinct prompt once per
    batch of `batch_size` responses (`Prefiller`, as in the decode loop). The responses
    then read on from their prompt's keys and values, right-padded after it."""
    prompts, answers = [], []
    for question, response in zip(questions, responses, strict=True):
        text = format_prompt(tokenizer, question)
        prompts.append(tokenizer(text, add_special_tokens=False)["input_ids"])
        answers.append(tokenizer(response, add_special_tokens=False)["input_ids"])
    out: list[float | None] = [None] * len(answers)
    # Equal prompts side by side (one prefill each per batch), shortest first (less padding).
    order = sorted(
        (i for i, a in enumerate(answers) if a),
        key=lambda i: (len(prompts[i]), prompts[i], len(answers[i])),
    )
    if not order:
        return out
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    prefill = Prefiller(model, prompts, [0] * len(prompts), pad, None, order, DecodeStats())
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        nll = _chunk_nll(
            model, prefill, chunk, [prompts[i] for i in chunk], [answers[i] for i in chunk], pad
        )
        for i, value in zip(chunk, nll, strict=True):
            out[i] = value
    return out


def _chunk_nll(model, prefill, rows, prompts, answers, pad) -> list[float]:
    """Mean NLL of each answer: its first token from the prompt's last logits, the rest
    from one forward over the answers with the prompts' keys and values as the past."""
    first, states, prompt_mask = prefill(rows)
    width = max(map(len, answers))
    device = prompt_mask.device
    ids = torch.tensor([a + [pad] * (width - len(a)) for a in answers], device=device)
    answer_mask = (
        torch.arange(width, device=device)[None]
        < torch.tensor([len(a) for a in answers], device=device)[:, None]
    )
    cache = DynamicCache()
    for layer, (keys, values) in enumerate(states):
        cache.update(keys, values, layer)
    positions = torch.tensor([len(p) for p in prompts], device=device)[:, None]
    logits = model(
        input_ids=ids,
        attention_mask=torch.cat([prompt_mask, answer_mask], dim=1).long(),
        position_ids=positions + torch.arange(width, device=device)[None],
        cache=cache,
        use_cache=True,
    ).logits
    # Column j predicts token j: the prompt's logits, then the answer's own up to width - 1.
    logprobs = torch.log_softmax(torch.cat([first[:, None], logits[:, :-1]], dim=1).float(), -1)
    token_nll = -logprobs.gather(-1, ids[..., None]).squeeze(-1)
    token_nll = torch.where(answer_mask, token_nll, 0.0)
    return (token_nll.sum(1) / answer_mask.sum(1)).tolist()
