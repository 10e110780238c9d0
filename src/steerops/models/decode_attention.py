"""Grouped-query attention of a compiled decode step without copying the cache per head.

HF's sdpa attention, for a one-token query under grouped-query attention (fewer key/value
heads than query heads), folds each key/value head's query heads into a query of that many
positions (`pack_gqa`), so attention reads the cache as it is. It does so only when not
compiling: under `torch.compile` it calls `repeat_kv` instead, which materialises keys and
values of the whole cache once per query head, in every layer, at every step. With a mask
(our padded slots always give one) sdpa's `enable_gqa` is not used either. So the compiled
step wrote and read 2 x (query heads / key heads) copies of each layer's whole static cache
per step, a cost that grows with the cache length and the slot count, not with the work.

`packed_gqa()` makes the sdpa attention fold the heads under compile too (same math, and the
shapes HF's own eager decode uses); everything else is left to HF's function.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch
from transformers.integrations import sdpa_attention
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils.import_utils import is_torchdynamo_compiling

_LOCK = threading.Lock()
_USERS = [0]
_SAVED: list = []  # the local "sdpa" entry before the first user, if any
_FALLBACK = [sdpa_attention.sdpa_attention_forward]  # the function the packing stands in for


def sdpa_packing_gqa(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """The sdpa attention in place before `packed_gqa`; under compile, a one-token query
    with a mask shared by all heads attends per key/value head, its query heads as positions
    (no `repeat_kv`)."""
    groups = getattr(module, "num_key_value_groups", 1)
    mask = attention_mask
    if (
        not is_torchdynamo_compiling()
        or groups <= 1
        or query.shape[2] != 1
        or mask is None
        or mask.dim() != 4
        or mask.shape[1] != 1
        or mask.shape[2] != 1
        or any(kwargs.get(k) is not None for k in ("softcap", "position_bias", "s_aux"))
        or kwargs.get("output_attentions", False)
        or sdpa_attention.use_gqa_in_sdpa(mask, key, value)
    ):
        return _FALLBACK[0](
            module,
            query,
            key,
            value,
            attention_mask,
            dropout=dropout,
            scaling=scaling,
            is_causal=is_causal,
            **kwargs,
        )
    rows, heads, _, dim = query.shape
    packed = query.reshape(rows, heads // groups, groups, dim)  # [rows, kv heads, groups, dim]
    out = torch.nn.functional.scaled_dot_product_attention(
        packed, key, value, attn_mask=mask, dropout_p=dropout, scale=scaling, is_causal=False
    )
    # [rows, kv heads, groups, dim] -> [rows, 1, heads, dim], as HF returns it
    return out.reshape(rows, heads, 1, value.shape[-1]).transpose(1, 2).contiguous(), None


@contextlib.contextmanager
def packed_gqa() -> Iterator[None]:
    """Inside, models with sdpa attention use `sdpa_packing_gqa` (only a compiled one-token
    step computes differently: eagerly it is the function it replaces). Nests and spans
    threads: the last one out restores what was there."""
    with _LOCK:
        if not _USERS[0]:
            local = ALL_ATTENTION_FUNCTIONS._local_mapping
            _SAVED[:] = [local["sdpa"]] if "sdpa" in local else []
            _FALLBACK[0] = ALL_ATTENTION_FUNCTIONS["sdpa"]
            ALL_ATTENTION_FUNCTIONS["sdpa"] = sdpa_packing_gqa
        _USERS[0] += 1
    try:
        yield
    finally:
        with _LOCK:
            _USERS[0] -= 1
            if not _USERS[0]:
                if _SAVED:
                    ALL_ATTENTION_FUNCTIONS["sdpa"] = _SAVED[0]
                else:
                    del ALL_ATTENTION_FUNCTIONS["sdpa"]
