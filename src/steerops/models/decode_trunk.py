"""The blocks below a row's steering, computed once per distinct input.

A steering hook adds its vector to a block's output, so up to a row's first steered block
(that block included, before its hook) the row computes what the unsteered model computes.
Rows of many configs that read one prompt, as in a steering grid, compute those blocks
alike. So a prefill runs them once per distinct input: a first forward over one row per
input stops after block `depth - 1`, keeping that block's output (before any hook) and the
keys and values the blocks wrote; the forward over every row then replays those blocks
from them, gathered per row, and computes the rest. Hooks still run on replayed blocks, so
block `depth - 1`'s steering is added as it would be.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers.cache_utils import DynamicCache

from steerops.models.capture import StopForward
from steerops.models.kv import cache_of, states_of


@dataclass(frozen=True)
class Trunk:
    """The decoder `blocks` in order, and per prompt index the number of leading blocks
    whose output its steering leaves alone (every block for an unsteered row)."""

    blocks: Sequence[torch.nn.Module]
    depths: Sequence[int]


def distinct(keys: Sequence[Any]) -> tuple[list[int], list[int]]:
    """(the position of each key's first occurrence, per position its index among those)."""
    index: dict[Any, int] = {}
    firsts: list[int] = []
    where: list[int] = []
    for position, key in enumerate(keys):
        if key not in index:
            index[key] = len(firsts)
            firsts.append(position)
        where.append(index[key])
    return firsts, where


def forward_sharing_trunk(
    model: Any,
    blocks: Sequence[torch.nn.Module],
    depth: int,
    where: Sequence[Hashable],
    inputs: dict[str, Any],
    cache: DynamicCache,
    past: int,
    steer: Callable[[list[int]], None] | None,
) -> Any:
    """`model(**inputs, cache=cache)` where batch rows with equal `where` labels compute
    blocks [0, depth) alike: once for the first row of each. Tensors in `inputs` are per row;
    `past`: the cache's length before the forward; `steer(positions)` steers the next
    forward as those batch positions."""
    firsts, index = distinct(where)  # numbered by first occurrence, as `kept` is
    pick = torch.tensor(firsts, device=inputs["input_ids"].device)
    trunk_cache = cache_of([(k[pick], v[pick]) for k, v in states_of(cache)[:depth]])
    if steer is not None:  # blocks below depth - 1 add zero for every row
        steer(firsts)
    firsts_only = {k: v[pick] if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    kept = _run_until(model, blocks[depth - 1], firsts_only, trunk_cache)
    written = [(k[:, :, past:], v[:, :, past:]) for k, v in states_of(trunk_cache)]
    with _replayed(blocks[:depth], kept, written, torch.tensor(index, device=pick.device), cache):
        if steer is not None:
            steer(list(range(len(where))))
        return model(**inputs, cache=cache)


def _run_until(model, last: torch.nn.Module, inputs: dict, cache: DynamicCache) -> Any:
    """The raw output of block `last` (before its hooks) on `inputs`; no block after runs."""
    kept: list[Any] = []
    inner = last.forward

    def forward(*args, **kwargs):
        kept.append(inner(*args, **kwargs))
        raise StopForward

    with forward_replaced(last, forward):
        try:
            model(**inputs, cache=cache)
        except StopForward:
            pass
    return kept[0]


@contextlib.contextmanager
def _replayed(
    blocks: Sequence[torch.nn.Module],
    kept: Any,
    written: list[tuple[torch.Tensor, torch.Tensor]],
    where: torch.Tensor,
    cache: DynamicCache,
) -> Iterator[None]:
    """Each block writes its kept keys and values and returns the last block's kept
    output, gathered per row by `where` (the next block ignores it unless it is real)."""
    if isinstance(kept, tuple):  # older blocks: (hidden, per-row extras or None, ...)
        rows = kept[0].shape[0]
        output: Any = tuple(
            x[where] if isinstance(x, torch.Tensor) and x.dim() and x.shape[0] == rows else x
            for x in kept
        )
    else:
        output = kept[where]

    def replay(layer: int):
        keys, values = written[layer]

        def forward(*args, **kwargs):
            cache.update(keys[where], values[where], layer)
            return output

        return forward

    with contextlib.ExitStack() as stack:
        for layer, block in enumerate(blocks):
            stack.enter_context(forward_replaced(block, replay(layer)))
        yield


@contextlib.contextmanager
def forward_replaced(block: torch.nn.Module, forward: Callable) -> Iterator[None]:
    """`block.forward` is `forward` inside; an instance's own forward (an offload
    wrapper's, say) comes back afterwards."""
    own = block.__dict__.get("forward")
    block.forward = forward
    try:
        yield
    finally:
        if own is None:
            del block.forward
        else:
            block.forward = own
