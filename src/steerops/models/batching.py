"""Length-sorted batches under a padded-token budget, halved when the accelerator runs out
of memory.

The budget counts padded tokens (rows x longest row), which is what activation memory
scales with. After an out-of-memory error the failed batch is split in two and retried, and
the budget drops to what that half used, so later batches do not fail the same way; the
results of batches that already finished are kept.
"""

from __future__ import annotations

import gc
from collections import deque
from collections.abc import Callable, Sequence

import torch

from steerops.errors import SteeropsError


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    # MPS and some older CUDA paths raise a plain RuntimeError.
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def length_order(lengths: Sequence[int]) -> list[int]:
    """Indices sorted longest first (ties by index): the largest batch runs first, so an
    out-of-memory error shows up at once, and rows of a batch have similar lengths."""
    return sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))


def plan_batches(items: Sequence[int], lengths: Sequence[int],
                 token_budget: int) -> list[list[int]]:
    """Split `items` (already longest first) into consecutive batches whose padded size,
    rows x longest row, fits `token_budget`. A row longer than the budget runs alone."""
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for item in items:
        grown = max(longest, lengths[item])
        if current and grown * (len(current) + 1) > token_budget:
            batches.append(current)
            current, grown = [], lengths[item]
        current.append(item)
        longest = grown
    if current:
        batches.append(current)
    return batches


class Batcher:
    """Runs batches with a token budget that shrinks after out-of-memory errors."""

    def __init__(self, token_budget: int):
        self.token_budget = token_budget
        self.halvings = 0

    def run(self, items: Sequence[int], lengths: Sequence[int],
            compute: Callable[[list[int]], object],
            done: Callable[[list[int], object], None]) -> None:
        """Call `compute(batch)` for batches covering `items`, then `done(batch, result)`."""
        queue = deque(plan_batches(items, lengths, self.token_budget))
        while queue:
            batch = queue.popleft()
            padded = len(batch) * max(lengths[i] for i in batch)
            if padded > self.token_budget and len(batch) > 1:
                queue.extendleft(reversed(plan_batches(batch, lengths, self.token_budget)))
                continue
            failed = False
            try:
                result = compute(batch)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                failed = True
            if not failed:
                done(batch, result)
                continue
            # Outside the except block, so the traceback's tensors can be freed.
            result = None
            release_memory()
            if len(batch) == 1:
                raise SteeropsError(
                    f"out of accelerator memory on a single example of {lengths[batch[0]]} "
                    "tokens; use fewer layers, a smaller model dtype or more memory")
            half = len(batch) // 2
            self.token_budget = max(1, half * max(lengths[i] for i in batch[:half]))
            self.halvings += 1
            queue.extendleft([batch[half:], batch[:half]])
