"""Batches for every forward or generate loop: length-sorted, padded, and one out-of-memory rule.

Rows are sorted longest first, so the largest batch runs first and an out-of-memory error
shows up at once, and rows of a batch have similar lengths. A batch is limited in rows
(`max_rows`, for generation, where memory grows with the rows' caches) and/or in padded
tokens (`token_budget`: rows x longest row, what activation memory scales with).

The out-of-memory rule, the same at every call site: an allocation failure on CUDA, MPS or
CPU (`is_out_of_memory`) halves the failed limit until the failed batch no longer fits, and
that batch is planned again under the new limit; later batches keep the lower limit, so they
do not fail the same way, and batches that already finished are kept. A single row that does
not fit is one clear `SteeropsError` line.
"""

from __future__ import annotations

import contextlib
import gc
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import numpy as np
import torch

from steerops.errors import SteeropsError

T = TypeVar("T")

# torch < 2.5 only has the CUDA-specific class (it is the same class on newer versions).
OutOfMemoryError = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
# What backends without a dedicated class raise: MPS ("MPS backend out of memory"), older
# CUDA paths, and the CPU allocator ("DefaultCPUAllocator: can't allocate memory").
_OOM_MESSAGES = ("out of memory", "can't allocate memory", "not enough memory")


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, OutOfMemoryError | MemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in _OOM_MESSAGES)


def release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        # fails while another thread captures a CUDA graph (the steered model's step, as a
        # judge on another GPU runs out of memory); the allocator reuses its cached blocks
        with contextlib.suppress(RuntimeError):
            torch.cuda.empty_cache()


def length_order(lengths: Sequence[int]) -> list[int]:
    """Indices sorted longest first (ties by index)."""
    return sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))


def padded_size(batch: Sequence[int], lengths: Sequence[int]) -> int:
    return len(batch) * max(lengths[i] for i in batch)


def plan_batches(
    items: Sequence[int],
    lengths: Sequence[int],
    token_budget: int | None = None,
    max_rows: int | None = None,
) -> list[list[int]]:
    """Split `items` (already longest first) into consecutive batches of at most `max_rows`
    rows whose padded size fits `token_budget`. A row longer than the budget runs alone."""
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for item in items:
        grown = max(longest, lengths[item])
        full = max_rows is not None and len(current) >= max_rows
        over = token_budget is not None and grown * (len(current) + 1) > token_budget
        if current and (full or over):
            batches.append(current)
            current, grown = [], lengths[item]
        current.append(item)
        longest = grown
    if current:
        batches.append(current)
    return batches


def pad_batch(
    seqs: Sequence[Sequence[int] | np.ndarray],
    pad_id: int,
    side: str = "left",
    min_width: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """[batch, max(longest, min_width)] ids and attention mask (CPU, long), and where each
    row's first real token sits. Left padding lines new tokens up at the right edge
    (generation)."""
    longest = max(min_width, *(len(s) for s in seqs))
    ids = torch.full((len(seqs), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), longest), dtype=torch.long)
    offsets = []
    for r, seq in enumerate(seqs):
        off = longest - len(seq) if side == "left" else 0
        ids[r, off : off + len(seq)] = torch.as_tensor(np.asarray(seq), dtype=torch.long)
        mask[r, off : off + len(seq)] = 1
        offsets.append(off)
    return ids, mask, offsets


class Batcher:
    """Runs batches under a row and/or padded-token limit that the out-of-memory rule lowers.

    `what` and `hint` word the error for a single row that does not fit (e.g. "example",
    "use fewer layers")."""

    def __init__(
        self,
        token_budget: int | None = None,
        *,
        max_rows: int | None = None,
        what: str = "example",
        hint: str = "use fewer layers, a smaller model dtype or more memory",
    ):
        if token_budget is None and max_rows is None:
            raise ValueError("a Batcher needs a token budget or a row limit")
        self.token_budget, self.max_rows = token_budget, max_rows
        self.what, self.hint = what, hint
        self.halvings = 0  # out-of-memory errors recovered from
        # a row limit an interrupted run had lowered itself to: applied once the batches
        # are planned, so each planned batch splits as that run split it
        self.resume_rows: int | None = None

    def fits(self, batch: Sequence[int], lengths: Sequence[int]) -> bool:
        return (self.max_rows is None or len(batch) <= self.max_rows) and (
            self.token_budget is None or padded_size(batch, lengths) <= self.token_budget
        )

    def plan(self, items: Sequence[int], lengths: Sequence[int]) -> list[list[int]]:
        return plan_batches(items, lengths, self.token_budget, self.max_rows)

    def run(
        self,
        items: Sequence[int],
        lengths: Sequence[int],
        compute: Callable[[list[int]], T],
        done: Callable[[list[int], T], None],
    ) -> None:
        """Call `compute(batch)` for batches covering `items` (longest first), then
        `done(batch, result)`; each item is done exactly once."""
        for batch, result in self.iterate(items, lengths, compute):
            done(batch, result)

    def iterate(
        self, items: Sequence[int], lengths: Sequence[int], compute: Callable[[list[int]], T]
    ) -> Iterator[tuple[list[int], T]]:
        """(batch, compute(batch)) for batches covering `items`, as each finishes."""
        queue = deque(self.plan(items, lengths))
        if self.resume_rows is not None and self.max_rows is not None:
            self.max_rows = min(self.max_rows, self.resume_rows)
        while queue:
            batch = queue.popleft()
            if len(batch) > 1 and not self.fits(batch, lengths):  # planned before a halving
                queue.extendleft(reversed(self.plan(batch, lengths)))
                continue
            failed = False
            try:
                result = compute(batch)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                failed = True
            if not failed:
                yield batch, result
                continue
            # Outside the except block, so the traceback's tensors can be freed.
            release_memory()
            if len(batch) == 1:
                raise SteeropsError(
                    f"out of accelerator memory on a single {self.what} of "
                    f"{lengths[batch[0]]} tokens; {self.hint}"
                )
            self._lower_limits(batch, lengths)
            self.halvings += 1
            queue.extendleft(reversed(self.plan(batch, lengths)))

    def _lower_limits(self, batch: list[int], lengths: Sequence[int]) -> None:
        """Halve each limit; where the failed batch used less than half of it, halve what it
        used instead, so that batch is always split."""
        if self.max_rows is not None:
            self.max_rows = max(1, self.max_rows // 2)
            if len(batch) <= self.max_rows:
                self.max_rows = max(1, len(batch) // 2)
        if self.token_budget is not None:
            used = padded_size(batch, lengths)
            self.token_budget = max(1, self.token_budget // 2)
            if used <= self.token_budget:
                self.token_budget = max(1, used // 2)
