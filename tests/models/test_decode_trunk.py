"""Blocks below the steering, computed once per prompt: against a plain forward and HF
generate (tiny models, float32)."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
import torch
from transformers.cache_utils import DynamicCache

from decode_data import EAGER, PROMPTS, both, unit, windowed
from steerops.models.decode import DecodeStats
from steerops.models.decode_trunk import distinct, forward_sharing_trunk
from steerops.models.kv import cache_of, states_of
from steerops.models.resolver import resolve_layout
from steerops.steering.engine import SteeringTable, steering_hooks, unsteered_depths
from tiny import tiny_model


def test_distinct_gives_first_positions_and_each_keys_index():
    assert distinct(["b", "a", "b", "c", "a"]) == ([0, 1, 3], [0, 1, 0, 2, 1])
    assert distinct([7, 7, 7]) == ([0], [0, 0, 0])


def test_depths_are_the_first_steered_layer_plus_one():
    v = unit(1, 8)
    table = SteeringTable([[], [(2, v, 1.0)], [(3, v, 1.0), (1, v, 2.0)], [(0, v, 0.0)]])
    assert unsteered_depths(table, 5) == [5, 3, 2, 5]  # a zero weight steers nothing


def _inputs_seen(block: torch.nn.Module):
    """A list of the (batch, sequence) sizes `block`'s first child runs on (a replayed
    block does not call its children), and the hook's handle."""
    seen: list[tuple[int, int]] = []

    def note(module, args, kwargs):
        hidden = args[0] if args else next(iter(kwargs.values()))
        seen.append((hidden.shape[0], hidden.shape[1]))

    child = next(iter(block.children()))
    return seen, child.register_forward_pre_hook(note, with_kwargs=True)


def _scattered_batch(model, depth: int):
    """Five rows of three prompts in scattered order, left-padded to 3 tokens (masks and
    positions differ by prompt), each after a past of 4 random entries of its own (a
    group's shared prefix) that equal prompts share below `depth` (as unsteered prefixes
    do); `where` labels the prompts out of first-occurrence order."""
    tails = [[5, 9, 14], [0, 7, 8], [5, 9, 14], [0, 0, 11], [0, 7, 8]]
    where = [7, 3, 7, 9, 3]
    past, n = 4, len(tails)
    pasts = [
        (torch.randn(n, k.shape[1], past, k.shape[3]), torch.randn(n, k.shape[1], past, k.shape[3]))
        for k, _ in _prefix_states(model, past)
    ]
    for layer in range(depth):
        for t in pasts[layer]:
            t[2], t[4] = t[0], t[1]
    ids = torch.tensor(tails)
    mask = torch.cat([torch.ones(n, past, dtype=torch.long), (ids != 0).long()], dim=1)
    inputs = {
        "input_ids": ids,
        "attention_mask": mask,
        "position_ids": (mask.cumsum(-1) - 1).clamp(min=0)[:, past:],
        "use_cache": True,
    }
    return inputs, pasts, where, past


@pytest.mark.parametrize("arch", ["llama", "gemma3_text", "gpt2", "gpt_neox"])
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_a_shared_trunk_reads_as_a_plain_forward(arch, depth):
    """Rows steered at block depth-1 and above: the logits and every layer's keys and
    values equal one plain forward, and block 0 runs 3 rows, not 5."""
    model = tiny_model(arch, seed=2)
    layout = resolve_layout(model)
    hidden = layout.hidden_size
    configs = [[], [(depth - 1, unit(4, hidden), 3.0)], [(2, unit(5, hidden), -2.0)]]
    table = SteeringTable([configs[k % 3] for k in range(5)])
    inputs, pasts, where, past = _scattered_batch(model, depth)
    n = len(where)
    with torch.inference_mode(), steering_hooks(layout, table, "all", 8) as control:
        control.select(list(range(n)))
        plain = cache_of([(k.clone(), v.clone()) for k, v in pasts])
        expected = model(**inputs, cache=plain).logits
        shared = cache_of([(k.clone(), v.clone()) for k, v in pasts])
        seen, handle = _inputs_seen(layout.layers[0])
        try:
            got = forward_sharing_trunk(
                model, layout.layers, depth, where, inputs, shared, past, control.select
            ).logits
        finally:
            handle.remove()
    assert seen == [(3, 3)]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    for mine, theirs in zip(shared.layers, plain.layers, strict=True):
        torch.testing.assert_close(mine.keys, theirs.keys, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(mine.values, theirs.values, rtol=1e-5, atol=1e-5)
    # the blocks come back as they were
    assert all("forward" not in block.__dict__ for block in layout.layers)


def test_a_block_s_own_forward_comes_back_even_after_an_error():
    """A block with an instance forward (an offload wrapper's, say) gets it back, also when
    the batch forward fails."""
    model = tiny_model("llama", seed=2)
    layout = resolve_layout(model)
    block = layout.layers[0]
    wrapper = block.forward  # a bound method, kept as the block's own attribute
    block.forward = wrapper
    inputs, pasts, where, past = _scattered_batch(model, 2)
    calls: list[list[int]] = []

    def failing_steer(positions: list[int]) -> None:
        calls.append(positions)
        if len(calls) == 2:  # the batch forward's steering, while blocks are replayed
            raise RuntimeError("steering failed")

    with torch.inference_mode(), pytest.raises(RuntimeError, match="steering failed"):
        forward_sharing_trunk(
            model, layout.layers, 2, where, inputs, cache_of(pasts), past, failing_steer
        )
    assert block.__dict__["forward"] is wrapper
    assert "forward" not in layout.layers[1].__dict__
    assert calls == [[0, 1, 3], [0, 1, 2, 3, 4]]


def _prefix_states(model, length: int):
    """Per layer (keys, values) of a short forward: their shapes."""
    cache = DynamicCache()
    with torch.inference_mode():
        model(input_ids=torch.arange(1, length + 1)[None], cache=cache, use_cache=True)
    return states_of(cache)


def _grid_below_the_first_block(hidden: int, copies: int):
    """Configs steering blocks 1 and 2 only (so the loop's trunk is 1 or 2 blocks deep),
    one with a zero weight (no steering at all), and none; every config on every prompt."""
    a, b = unit(1, hidden), unit(2, hidden)
    configs = [
        [],
        [(1, a, 6.0)],
        [(1, a, -4.0)],
        [(1, b, 3.0)],
        [(2, a, 3.0), (1, b, 2.0)],
        [(2, b, -5.0)],
        [(2, a, 4.0)],
        [(1, b, 0.0)],
    ]
    rows = [(k, p) for p in range(len(PROMPTS)) for k in range(len(configs))][::-1] * copies
    return SteeringTable([configs[k] for k, _ in rows]), [PROMPTS[p] for _, p in rows]


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma3_text"])
def test_the_loop_with_a_trunk_matches_hf_generate(arch):
    """Configs of one prompt prefill their unsteered blocks once: tokens equal HF
    generate's (gemma3 with a sliding window shorter than the prompts), and block 0
    prefills under half the rows it prefills when every row computes its own."""
    model = windowed(arch) if arch == "gemma3_text" else tiny_model(arch, seed=1)
    layout = resolve_layout(model)
    table, prompts = _grid_below_the_first_block(layout.hidden_size, copies=2)
    block0_prefill_rows: list[int] = []
    prefill_block_tokens: list[int] = []  # (block, token) pairs the prefills computed
    saved: list[int] = []

    @contextlib.contextmanager
    def counting():
        seen = [_inputs_seen(block) for block in layout.layers]
        try:
            yield
        finally:
            for _, handle in seen:
                handle.remove()
        prefills = [[(rows, width) for rows, width in mine if width > 1] for mine, _ in seen]
        block0_prefill_rows.append(sum(rows for rows, _ in prefills[0]))
        prefill_block_tokens.append(sum(rows * width for mine in prefills for rows, width in mine))

    for share in (True, False):
        options = dataclasses.replace(EAGER, share_trunk=share)
        stats = DecodeStats()
        reference, loop = both(
            model,
            layout,
            prompts,
            table,
            stats=stats,
            options=options,
            around=counting,
            stop_ids=[2, 3, 40],
            max_new_tokens=12,
        )
        assert loop == reference
        saved.append(stats.trunk_block_tokens)
    assert len({str(row) for row in reference}) > len(PROMPTS), "configs should differ"
    shared, own = block0_prefill_rows
    assert 0 < 2 * shared < own
    # the counter: what the blocks computed without sharing less what they computed with it
    assert saved == [prefill_block_tokens[1] - prefill_block_tokens[0], 0]
