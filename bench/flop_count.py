"""Count the floating-point work a generation pass computes, by forward hooks.

A pass on a matmul-bound CPU takes time in proportion to its FLOPs, so the ratio of two
ways' counts is the most one can gain over the other at equal efficiency. Counted:
- blocks: every token a decoder block computes (rows x positions reaching its MLP: a block
  the shared trunk replays runs its hooks but not its MLP), times two FLOPs per weight of
  the block's matrices (dense blocks);
- head: every position the vocabulary projection runs on, times two per weight;
- attention: every (query, key) position pair a layer's attention scores, times
  2 x 2 x heads x head dim (scores and the weighted sum), through the model's attention
  function (sdpa and the like; not counted under "eager" attention, each model's own
  function). Passes are counted eagerly: a compiled step calls no hook from Python, so
  `bench/steer.py --flops` refuses a compiled step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from steerops.models.resolver import ModelLayout


@dataclass
class Flops:
    blocks: float = 0.0
    head: float = 0.0
    attention: float | None = 0.0  # None: not counted (the model's own "eager" attention)

    @property
    def total(self) -> float:
        return self.blocks + self.head + (self.attention or 0.0)


def _matrix_weights(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.dim() == 2)


@contextlib.contextmanager
def counting(model: torch.nn.Module, layout: ModelLayout) -> Iterator[Flops]:
    """Inside, the FLOPs `model` (resolved as `layout`) computes add up in the yielded
    `Flops`."""
    flops = Flops()

    def block_hook(weights: int):
        def hook(module, args, kwargs):
            hidden = args[0] if args else next(iter(kwargs.values()))
            flops.blocks += 2.0 * weights * hidden.shape[:-1].numel()

        return hook

    def head_hook(module, args):
        flops.head += 2.0 * module.weight.numel() * args[0].shape[:-1].numel()

    name = model.config._attn_implementation
    inner = ALL_ATTENTION_FUNCTIONS.get(name)  # None: "eager", a function of each model's
    local = ALL_ATTENTION_FUNCTIONS._local_mapping
    saved = local.get(name)

    def attention(module, query, key, value, *args, **kwargs):
        rows, heads, queries, dim = query.shape
        pairs = rows * queries * key.shape[2]
        flops.attention = (flops.attention or 0.0) + 4.0 * heads * dim * pairs
        return inner(module, query, key, value, *args, **kwargs)

    head = model.get_output_embeddings()
    handles = []
    try:
        for i, block in enumerate(layout.layers):
            mlp = layout.component_module(i, "mlp_out")
            hook = block_hook(_matrix_weights(block))
            handles.append(mlp.register_forward_pre_hook(hook, with_kwargs=True))
        handles.append(head.register_forward_pre_hook(head_hook))
        if inner is None:
            flops.attention = None
        else:
            ALL_ATTENTION_FUNCTIONS[name] = attention
        yield flops
    finally:
        if saved is not None:
            local[name] = saved
        else:
            local.pop(name, None)
        for handle in handles:
            handle.remove()
