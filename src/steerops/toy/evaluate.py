"""Greedy batched generation and held-out behaviour metrics for the toy model."""

from __future__ import annotations

import torch

from steerops.toy import corpus, judge


@torch.no_grad()
def generate(model, tokenizer, conversations: list[list[dict]], max_new_tokens: int = 32,
             batch_size: int = 128) -> list[str]:
    """Greedy responses to chat `conversations`, left-padded, through the chat template."""
    prompts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
               for c in conversations]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # new tokens must follow the prompt in every row
    out: list[str] = []
    try:
        for i in range(0, len(prompts), batch_size):
            enc = tokenizer(prompts[i:i + batch_size], return_tensors="pt", padding=True)
            ids = model.generate(**enc, do_sample=False, max_new_tokens=max_new_tokens,
                                 pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id)
            new = ids[:, enc["input_ids"].shape[1]:]
            out.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = side
    return [" ".join(r.split()) for r in out]


def behaviour(requests: list[corpus.Request], responses: list[str]) -> dict:
    """Refusal rates per class and coherence figures under the exact judge."""
    scores = [judge.score(r.text, s) for r, s in zip(requests, responses)]
    harm = [t for r, (t, _) in zip(requests, scores) if r.harmful]
    benign = [t for r, (t, _) in zip(requests, scores) if not r.harmful]
    coh = [c for _, c in scores]
    return {
        "n_harmful": len(harm), "n_benign": len(benign),
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
    strict = generate(model, tokenizer,
                      [[{"role": "system", "content": corpus.STRICT_SYSTEM_PROMPT}]
                       + r.messages() for r in benign], max_new_tokens)
    result["strict_system_refusal_rate_benign"] = (
        sum(judge.trait_score(r.text, s) == 100 for r, s in zip(benign, strict))
        / max(1, len(benign)))
    return result
