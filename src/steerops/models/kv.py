"""Per-layer keys and values taken from, and put into, HF dynamic caches."""

from __future__ import annotations

from typing import Any, cast

import torch
from transformers.cache_utils import DynamicCache

KeysValues = list[tuple[torch.Tensor, torch.Tensor]]  # per layer, [rows, heads, seq, dim]


def cache_of(states: KeysValues) -> DynamicCache:
    """A dynamic cache holding per-layer keys and values (a past to read on from)."""
    cache = DynamicCache()
    for layer, (keys, values) in enumerate(states):
        cache.update(keys, values, layer)
    return cache


def states_of(cache: DynamicCache) -> KeysValues:
    """The per-layer keys and values a dynamic cache holds."""
    return [(layer.keys, layer.values) for layer in cast(list[Any], cache.layers)]
