"""The LM head fed a contiguous input.

HF models slice the last positions before the head (`logits_to_keep`), and on CPU torch's
matmul does not fold a non-contiguous [rows, 1, hidden] slice into one matrix product when
the weight does not require grad (as `models.loading` leaves it): it broadcasts the weight
into a batched product, about 10x slower (SmolLM2: 1.18 s instead of 0.11 s for the last
logits of 240 prefilled rows, once per prefill; `bench/head.py`). Copying the slice costs
rows x hidden values.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def contiguous_head_input(model: Any) -> Iterator[None]:
    """Within the block, the model's output embeddings read a contiguous input."""
    head = model.get_output_embeddings()
    if head is None:
        yield
        return
    handle = head.register_forward_pre_hook(lambda module, args: (args[0].contiguous(), *args[1:]))
    try:
        yield
    finally:
        handle.remove()
