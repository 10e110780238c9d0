"""Per-row steering on the real SmolLM2: a steered row in a mixed batch equals the same
config generated alone, and a plain forward hook on HF generate."""

from __future__ import annotations

import torch

from steerops.models.resolver import resolve_layout
from steerops.steering.engine import SteeringTable, generate_steered

PAD, STOPS = 2, [2]
QUESTIONS = ["Hi!", "What is the capital of France?", "Write a haiku about rain, please."]


def unit(seed: int, hidden: int) -> torch.Tensor:
    v = torch.randn(hidden, generator=torch.Generator().manual_seed(seed))
    return v / v.norm()


def naive(model, layout, prompt: list[int], additions, max_new_tokens: int) -> list[int]:
    """Reference: HF generate, one row, hooks adding sum(w * v) to each block's output."""
    handles = []
    for layer, v, w in additions:

        def hook(module, args, out, add=w * v):
            if isinstance(out, tuple):
                return (out[0] + add, *out[1:])
            return out + add

        handles.append(layout.component_module(layer, "residual").register_forward_hook(hook))
    try:
        with torch.inference_mode():
            out = model.generate(
                input_ids=torch.tensor([prompt]),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=PAD,
                eos_token_id=STOPS,
            )
    finally:
        for h in handles:
            h.remove()
    new = out[0, len(prompt) :].tolist()
    return new[: new.index(PAD)] if PAD in new else new


def test_mixed_batch_rows_match_alone_and_a_plain_hook(smollm2):
    model, tokenizer = smollm2
    layout = resolve_layout(model)
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False
        )
        for q in QUESTIONS
    ]
    prompts = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    a, b = unit(1, layout.hidden_size), unit(2, layout.hidden_size)
    # Weights near 0.5-1x the per-token norm at these blocks (about 90-190 at block 16).
    configs = [[], [(16, a, 120.0)], [(8, b, 60.0), (16, a, 80.0)], [(16, b, -150.0)]]
    rows = [(c, p) for p in range(len(prompts)) for c in range(len(configs))][::-1]
    kwargs = dict(pad_token_id=PAD, stop_ids=STOPS, max_new_tokens=8)
    mixed = generate_steered(
        model,
        layout,
        [prompts[p] for _, p in rows],
        SteeringTable([configs[c] for c, _ in rows]),
        max_batch_rows=5,  # every sub-batch mixes configs and prompt lengths
        **kwargs,
    )
    for r, (c, p) in enumerate(rows):
        alone = generate_steered(model, layout, [prompts[p]], SteeringTable([configs[c]]), **kwargs)
        assert mixed[r] == alone[0], (c, p)
        if r % 3 == 0:
            assert mixed[r] == naive(model, layout, prompts[p], configs[c], 8), (c, p)
    unsteered = {p: mixed[r] for r, (c, p) in enumerate(rows) if c == 0}
    assert sum(mixed[r] != unsteered[p] for r, (c, p) in enumerate(rows) if c) >= 6
