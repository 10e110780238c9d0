"""Greedy batched generation and held-out behaviour metrics for the toy model."""

from __future__ import annotations

import torch

from steerops.models.batching import pad_batch
from steerops.models.generation import encode_prompt, generate_responses
from steerops.toy import corpus, judge
from steerops.traits import Prompt


def generate(
    model,
    tokenizer,
    conversations: list[list[dict]],
    max_new_tokens: int = 32,
    batch_size: int = 128,
) -> list[str]:
    """Greedy responses to chat `conversations`, through the chat template, in the
    left-padded batches of `steerops.models.generation`."""
    done = generate_responses(
        model,
        tokenizer,
        [Prompt(c) for c in conversations],
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        progress=False,
    )
    return [" ".join(c.response.split()) for c in done]


def behaviour(requests: list[corpus.Request], responses: list[str]) -> dict:
    """Refusal rates per class and coherence figures under the exact judge."""
    scores = [judge.score(r.text, s) for r, s in zip(requests, responses, strict=True)]
    harm = [t for r, (t, _) in zip(requests, scores, strict=True) if r.harmful]
    benign = [t for r, (t, _) in zip(requests, scores, strict=True) if not r.harmful]
    coh = [c for _, c in scores]
    return {
        "n_harmful": len(harm),
        "n_benign": len(benign),
        "refusal_rate_harmful": sum(t == 100 for t in harm) / max(1, len(harm)),
        "refusal_rate_benign": sum(t == 100 for t in benign) / max(1, len(benign)),
        "trait_mean_harmful": sum(harm) / max(1, len(harm)),
        "trait_mean_benign": sum(benign) / max(1, len(benign)),
        "coherence_mean": sum(coh) / max(1, len(coh)),
        "well_formed_rate": sum(c == 100 for c in coh) / max(1, len(coh)),
    }


def heldout_behaviour(model, tokenizer, split: corpus.Split, max_new_tokens: int = 32) -> dict:
    """Behaviour on every held-out request (no system prompt), plus the strict system
    prompt's effect on held-out benign requests."""
    reqs = split.requests(train=False)
    responses = generate(model, tokenizer, [r.messages() for r in reqs], max_new_tokens)
    result = behaviour(reqs, responses)
    benign = [r for r in reqs if not r.harmful]
    strict = generate(
        model,
        tokenizer,
        [
            [{"role": "system", "content": corpus.STRICT_SYSTEM_PROMPT}] + r.messages()
            for r in benign
        ],
        max_new_tokens,
    )
    result["strict_system_refusal_rate_benign"] = sum(
        judge.trait_score(r.text, s) == 100 for r, s in zip(benign, strict, strict=True)
    ) / max(1, len(benign))
    return result


@torch.no_grad()
def last_token_states(model, tokenizer, prompts: list[str]) -> list[torch.Tensor]:
    """Per decoder layer, the output at the last prompt token of each prompt, (n, hidden);
    the generation prompt is appended, so this is the token the answer is decided at."""
    texts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True
        )
        for p in prompts
    ]
    # left padded: the last column is every row's last prompt token
    ids, mask, _ = pad_batch([encode_prompt(tokenizer, t) for t in texts], tokenizer.pad_token_id)
    hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[1:]
    return [h[:, -1].float() for h in hidden]


def steering_check(
    model,
    tokenizer,
    positive: list[str],
    negative: list[str],
    questions: list[str],
    layer: int = 2,
    multiples: tuple[float, ...] = (0.0, 1.0, 2.0),
) -> dict:
    """Reference trade-off: a unit mean-difference vector (positive minus negative, last
    prompt token, output of `layer`) added at every position of that layer, scaled by
    multiples of the mean last-token norm there. Returns refusal % and mean coherence."""
    pos = last_token_states(model, tokenizer, positive)[layer]
    neg = last_token_states(model, tokenizer, negative)[layer]
    diff = pos.mean(0) - neg.mean(0)
    norm = torch.cat([pos, neg]).norm(dim=-1).mean().item()
    vector = diff / diff.norm()
    convs = [[{"role": "user", "content": q}] for q in questions]
    out = {"layer": layer, "last_token_norm": round(norm, 3), "by_multiple": {}}
    for m in multiples:
        handle = model.model.layers[layer].register_forward_hook(_adder(m * norm * vector))
        try:
            responses = generate(model, tokenizer, convs)
        finally:
            handle.remove()
        scores = [judge.score(q, r) for q, r in zip(questions, responses, strict=True)]
        out["by_multiple"][str(m)] = {
            "refusal_rate": round(sum(t == 100 for t, _ in scores) / len(scores), 4),
            "coherence_mean": round(sum(c for _, c in scores) / len(scores), 2),
        }
    return out


def _adder(delta: torch.Tensor):
    def hook(module, args, output):
        if isinstance(output, tuple):  # older transformers return (hidden, ...)
            return (output[0] + delta, *output[1:])
        return output + delta

    return hook
