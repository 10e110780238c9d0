"""Decoder blocks compiled with `torch.compile` for a forward-only pass (extraction).

Each block's `forward` is compiled, not the block's call: hooks on the blocks (the
`residual` capture) run around `forward`, so they stay eager (they read outputs and stop the
forward early) and one graph per block shape serves every batch. Hooks on modules inside a
block (`attn_out`, `mlp_out`) would be traced into the graph, so callers compile only for
`residual`; blocks under accelerate's offload hooks stay eager. On CUDA this removes most
per-kernel launch overhead; on CPU the compile time rarely pays for itself on short jobs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from steerops.models.resolver import ModelLayout


@contextlib.contextmanager
def compiled_blocks(layout: ModelLayout, deepest: int, backend: str = "inductor") -> Iterator[None]:
    """Within the block, blocks 0..`deepest` run compiled; their eager `forward` comes back
    on exit. Compiled forwards are kept on the block, so later jobs reuse the graphs."""
    blocks = layout.layers[: deepest + 1]
    if any(hasattr(block, "_hf_hook") for block in blocks):
        # accelerate's wrapper moves inputs and onloads offloaded weights: keep it eager
        yield
        return
    eager = [block.__dict__.get("forward") for block in blocks]
    try:
        for block in blocks:
            cache = block.__dict__.setdefault("_steerops_compiled", {})
            if backend not in cache:
                # dynamic: batch and sequence length change from batch to batch
                cache[backend] = torch.compile(
                    type(block).forward.__get__(block), backend=backend, dynamic=True
                )
            block.forward = cache[backend]
        yield
    finally:
        for block, own in zip(blocks, eager, strict=True):
            if own is None:
                block.__dict__.pop("forward", None)
            else:
                block.forward = own
