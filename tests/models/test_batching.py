"""The one batching module: length order, row and token limits, padding, and the
out-of-memory rule every loop shares (CUDA, MPS and CPU errors; halve and retry; finished
work kept; one clear line for a single row that does not fit)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from steerops.errors import SteeropsError
from steerops.models.batching import (
    Batcher,
    is_out_of_memory,
    length_order,
    pad_batch,
    plan_batches,
)


def test_plan_batches_respects_the_budget():
    rng = np.random.default_rng(1)
    lengths = [int(x) for x in rng.integers(1, 50, size=200)]
    order = length_order(lengths)
    assert [lengths[i] for i in order] == sorted(lengths, reverse=True)
    for budget in (1, 37, 100, 1000, 10**6):
        batches = plan_batches(order, lengths, budget)
        assert [i for b in batches for i in b] == order
        for b in batches:
            assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= budget
        # Greedy: adding the next row would have broken the budget.
        for b, nxt in zip(batches, batches[1:], strict=False):
            assert (len(b) + 1) * max(lengths[i] for i in b + nxt[:1]) > budget


def test_out_of_memory_halves_the_batch_and_keeps_finished_work():
    lengths = [10] * 16
    done, calls = {}, []

    def compute(batch):
        calls.append(list(batch))
        if len(batch) * 10 > 40:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return [i * 2 for i in batch]

    batcher = Batcher(token_budget=160)
    batcher.run(
        list(range(16)),
        lengths,
        compute,
        lambda batch, result: done.update(zip(batch, result, strict=True)),
    )
    assert done == {i: i * 2 for i in range(16)}
    assert batcher.token_budget == 40 and batcher.halvings == 2
    assert calls[0] == list(range(16)) and calls[1] == list(range(8))
    assert sum(len(c) for c in calls if len(c) <= 4) == 16  # each row finished exactly once

    with pytest.raises(SteeropsError, match="single example of 10 tokens"):
        Batcher(10).run(
            [0],
            lengths,
            lambda b: (_ for _ in ()).throw(torch.cuda.OutOfMemoryError("out of memory")),
            lambda b, r: None,
        )
    with pytest.raises(ValueError, match="unrelated"):  # other errors are not swallowed
        Batcher(10).run(
            [0],
            lengths,
            lambda b: (_ for _ in ()).throw(ValueError("unrelated")),
            lambda b, r: None,
        )


@pytest.mark.parametrize(
    "exc, expected",
    [
        (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
        (RuntimeError("MPS backend out of memory (MPS allocated: 8 GB)"), True),
        (
            RuntimeError(
                "[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate "
                "memory: you tried to allocate 68719476736 bytes"
            ),
            True,
        ),
        (RuntimeError("CUDA error: out of memory"), True),
        (MemoryError(), True),
        (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), False),
        (ValueError("out of memory"), False),  # only allocation errors count
    ],
)
def test_what_counts_as_out_of_memory(exc, expected):
    assert is_out_of_memory(exc) is expected


def test_row_limit_halves_and_replans_the_failed_batch():
    """A row-limited loop (generation): 8 -> 4 -> 2 rows, each row done exactly once, and a
    batch smaller than the limit is still split when it fails."""
    lengths = [5] * 10
    calls, done = [], {}

    def compute(batch):
        calls.append(len(batch))
        if len(batch) > 2:
            raise RuntimeError("MPS backend out of memory (simulated)")
        return batch

    batcher = Batcher(max_rows=8, what="row", hint="try less")
    batcher.run(
        length_order(lengths),
        lengths,
        compute,
        lambda batch, result: done.update({i: result for i in batch}),
    )
    assert sorted(done) == list(range(10))
    assert calls[:3] == [8, 4, 2] and batcher.max_rows == 2 and batcher.halvings == 2
    assert sum(n for n in calls if n <= 2) == 10

    small = Batcher(max_rows=8)
    calls.clear()
    small.run([0, 1, 2], [5, 5, 5], compute, lambda batch, result: None)
    assert calls == [3, 1, 1, 1] and small.max_rows == 1  # 8 -> 4 would not split 3 rows


def test_a_single_row_that_does_not_fit_is_one_clear_line():
    def oom(batch):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory")

    with pytest.raises(SteeropsError) as info:
        Batcher(max_rows=4, what="row", hint="lower max_new_tokens").run(
            [0, 1], [7, 3], oom, lambda b, r: None
        )
    assert str(info.value) == (
        "out of accelerator memory on a single row of 7 tokens; lower max_new_tokens"
    )


def test_iterate_yields_batches_as_they_finish():
    lengths = [3, 9, 1, 4]
    seen = list(Batcher(max_rows=2).iterate(length_order(lengths), lengths, lambda b: sum(b)))
    assert seen == [([1, 3], 4), ([0, 2], 2)]
    with pytest.raises(ValueError, match="token budget or a row limit"):
        Batcher()


def test_pad_batch_left_and_right():
    ids, mask, offsets = pad_batch([[5, 6, 7], [8]], pad_id=0, side="left")
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and offsets == [0, 2]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    ids, mask, offsets = pad_batch([np.array([8]), np.array([5, 6])], pad_id=9, side="right")
    assert ids.tolist() == [[8, 9], [5, 6]] and mask.tolist() == [[1, 0], [1, 1]]
    assert offsets == [0, 0]


def test_releasing_memory_while_another_thread_captures_a_graph_goes_on(monkeypatch):
    """torch's empty_cache fails while a CUDA graph is being captured in another thread:
    a judge on another GPU running out of memory then retries on the allocator's cached
    blocks instead of failing."""
    from steerops.models import batching

    calls = []

    def capturing():
        calls.append("capturing")
        raise RuntimeError("captures_underway.empty() INTERNAL ASSERT FAILED")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", capturing)
    batching.release_memory()  # goes on
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("emptied"))
    batching.release_memory()
    assert calls == ["capturing", "emptied"]  # tried each time, not skipped
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    batching.release_memory()
    assert calls == ["capturing", "emptied"]  # no CUDA: no cache to empty
