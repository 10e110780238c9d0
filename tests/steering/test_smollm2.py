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


def test_screened_head_gives_the_float32_heads_tokens(smollm2):
    """The eager loop's bf16-screened head (`models.head_screen`) against the whole float32
    head on the real model's 49,152 words: the same tokens on steered and unsteered rows."""
    from steerops.models import decode
    from steerops.models.head_screen import screened_head

    model, tokenizer = smollm2
    layout = resolve_layout(model)
    prompts = [
        tokenizer(
            tokenizer.apply_chat_template(
                [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False
            ),
            add_special_tokens=False,
        )["input_ids"]
        for q in QUESTIONS
    ]
    a = unit(3, layout.hidden_size)
    configs = [[], [(12, a, 100.0)], [(12, a, -100.0)], [(20, a, 200.0)]]
    rows = [(c, p) for c in configs for p in prompts]
    head = screened_head(model, force=True)
    assert head is not None
    before = head.rows
    tokens = {}
    for screen in (True, False):
        tokens[screen] = generate_steered(
            model,
            layout,
            [p for _, p in rows],
            SteeringTable([c for c, _ in rows]),
            pad_token_id=PAD,
            stop_ids=STOPS,
            max_new_tokens=16,
            loop="static",
            loop_options=decode.StaticLoop(backend=None, head_screen=screen),
        )
    assert tokens[True] == tokens[False]
    assert head.rows - before >= 12 * 10  # the screened run's steps went through it
