"""The per-row steering engine against independent references on tiny random models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from steerops.errors import SteeropsError
from steerops.models.batching import OutOfMemoryError
from steerops.models.generation import cut_at_stop
from steerops.models.resolver import resolve_layout
from steerops.steering.engine import SteeringTable, generate_steered, steering_hooks
from tiny import tiny_model

PAD, STOPS = 0, [2]
PROMPTS = [[1, 5, 9, 14, 22, 31, 40], [1, 7, 8], [1, 11, 12, 13, 50], [1, 60, 61, 62, 63]]


def _unit(seed: int, hidden: int) -> torch.Tensor:
    v = torch.randn(hidden, generator=torch.Generator().manual_seed(seed))
    return v / v.norm()


def _configs(hidden: int) -> list[list[tuple[int, torch.Tensor, float]]]:
    """Five configs: none, one layer, another layer, two layers, two vectors at one layer."""
    a, b, c = _unit(1, hidden), _unit(2, hidden), _unit(3, hidden)
    return [
        [],
        [(1, a, 8.0)],
        [(2, b, -6.0)],
        [(0, c, 5.0), (2, a, 4.0)],
        [(1, a, 3.0), (1, b, 7.0)],
    ]


def _naive(model, layout, prompt, additions, scope="all", max_new_tokens=8):
    """Reference: a plain forward hook adding sum(w * v) to the block output, one row; under
    response scope every block's first forward (the prompt's) is left unsteered."""
    handles = []
    by_layer: dict[int, torch.Tensor] = {}
    for layer, v, w in additions:
        by_layer[layer] = by_layer.get(layer, 0) + w * v

    def make(add):
        calls = []

        def hook(module, args, out):
            h = out[0] if isinstance(out, tuple) else out
            calls.append(h.shape[1])
            if scope == "response" and len(calls) == 1:
                return None
            h = h + add.to(h.dtype)
            return (h, *out[1:]) if isinstance(out, tuple) else h

        return hook

    for layer, add in by_layer.items():
        module = layout.component_module(layer, "residual")
        handles.append(module.register_forward_hook(make(add)))
    try:
        with torch.inference_mode():
            out = model.generate(
                input_ids=torch.tensor([prompt]),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=PAD,
                eos_token_id=STOPS,
            )
    finally:
        for h in handles:
            h.remove()
    return cut_at_stop(out[0, len(prompt) :].tolist(), STOPS)[0]


def _mixed_rows(hidden):
    configs = _configs(hidden)
    rows = [(c, p) for c in range(len(configs)) for p in range(len(PROMPTS))]
    rows = rows[::-1]  # caller order unrelated to config or length order
    return configs, rows


# llama: every row; other architectures (block outputs as tuples, Gemma's scaled
# embeddings, GPT-2's absolute positions, multimodal nesting): every third row.
CASES = [
    ("llama", "all", 1),
    ("llama", "response", 1),
    ("gemma3_text", "all", 3),
    ("gpt2", "all", 3),
    ("gemma3", "all", 3),
    ("gemma3", "response", 3),
]


@pytest.mark.parametrize("arch,scope,stride", CASES)
def test_mixed_batch_rows_match_alone_and_reference(arch, scope, stride):
    model = tiny_model(arch)
    layout = resolve_layout(model)
    configs, rows = _mixed_rows(layout.hidden_size)
    table = SteeringTable([configs[c] for c, _ in rows])
    prompts = [PROMPTS[p] for _, p in rows]
    kwargs = dict(pad_token_id=PAD, stop_ids=STOPS, max_new_tokens=8, scope=scope)
    # 20 rows in sub-batches of 3: every sub-batch mixes configs and prompt lengths.
    mixed = generate_steered(model, layout, prompts, table, max_batch_rows=3, **kwargs)
    for r in range(0, len(rows), stride):
        c, p = rows[r]
        alone = generate_steered(
            model, layout, [PROMPTS[p]], SteeringTable([configs[c]]), **kwargs
        )[0]
        assert mixed[r] == alone, (arch, scope, c, p)
        if stride == 1 or r % 2 == 0:
            assert mixed[r] == _naive(model, layout, PROMPTS[p], configs[c], scope), (c, p)
    unsteered = {p: mixed[r] for r, (c, p) in enumerate(rows) if c == 0}
    changed = sum(mixed[r] != unsteered[p] for r, (c, p) in enumerate(rows) if c)
    assert changed >= 8, "steering should change most steered rows"
    if scope == "response":  # the first new token comes from unsteered prompt logits
        for r, (_, p) in enumerate(rows):
            assert mixed[r][:1] == unsteered[p][:1]


def test_delta_matches_numpy_reference():
    model = tiny_model("llama")
    layout = resolve_layout(model)
    configs, rows = _mixed_rows(layout.hidden_size)
    table = SteeringTable([configs[c] for c, _ in rows])
    assert len(table.vectors[1]) == 2  # `a` and `b` stored once however many rows use them
    seen = {}
    with steering_hooks(layout, table, max_rows=6) as control:
        ids = [7, 0, 19, 4]
        control.select(ids)
        for layer, state in control._states.items():
            seen[layer] = state.delta[: len(ids)].numpy().copy()
    for layer in (0, 1, 2):
        for j, r in enumerate(ids):
            expected = np.zeros(layout.hidden_size)
            for lay, v, w in configs[rows[r][0]]:
                if lay == layer:
                    expected += w * v.numpy().astype(np.float64)
            np.testing.assert_allclose(seen[layer][j], expected, rtol=1e-5, atol=1e-5)


def _block_output(model, layout, x, layer):
    """The output of block `layer` as later hooks (and the next block) see it."""
    seen = {}
    handle = layout.component_module(layer, "residual").register_forward_hook(
        lambda m, a, o: seen.__setitem__("h", o[0] if isinstance(o, tuple) else o)
    )
    try:
        with torch.inference_mode():
            model(input_ids=x)
    finally:
        handle.remove()
    return seen["h"]


def test_delta_added_to_block_output_in_model_dtype():
    model = tiny_model("llama", dtype=torch.bfloat16)
    layout = resolve_layout(model)
    v = _unit(4, layout.hidden_size)
    table = SteeringTable([[(1, v, 2.5)], []])
    x = torch.tensor([[1, 5, 6, 7], [1, 5, 6, 7]])
    plain = _block_output(model, layout, x, 1)
    with steering_hooks(layout, table) as control:  # registered first, so it runs first
        control.select([0, 1])
        steered = _block_output(model, layout, x, 1)
    assert steered.dtype == torch.bfloat16
    expected = plain[0].float() + (2.5 * v).to(torch.bfloat16).float()
    torch.testing.assert_close(steered[0].float(), expected, atol=0.02, rtol=0.01)
    assert torch.equal(steered[1], plain[1])  # the row without additions is untouched


def test_layer_buffers_follow_hidden_states_of_another_dtype_steered_or_not():
    """A quantized or offloaded block's parameters are not the dtype (or device) of its
    hidden states: every hooked layer's buffers follow the hidden states, a layer the table
    leaves alone (hooked so one graph fits every table) too."""
    from steerops.steering.engine import _LayerState

    v = _unit(5, 6)
    table = SteeringTable([[(1, v, 2.0)], []])
    hidden = torch.zeros(2, 3, 6, dtype=torch.bfloat16)
    for layer in (0, 1):  # 0: not in the table
        buffers = [torch.zeros(2, dtype=torch.long), torch.zeros(2, 6, dtype=torch.int8)]
        state = _LayerState(table, layer, buffers)
        state.follow(hidden)
        assert state.delta.dtype == torch.bfloat16 and state.delta.shape == (2, 6)
        state.select(torch.tensor([0, 1]))
        expected = torch.stack([2.0 * v, torch.zeros(6)]) if layer else torch.zeros(2, 6)
        torch.testing.assert_close(state.delta.float(), expected, atol=0.02, rtol=0.01)
        assert buffers[1] is state.delta  # the moved buffer is the one kept for next time


def test_steering_buffers_are_kept_from_call_to_call_and_hold_no_earlier_table():
    """Each hooked block's buffers keep their address from one call to the next (a CUDA
    graph records the address its hooks read: new buffers every call would record every
    graph again), and a call's steering is only its own table's: a layer the first table
    steered and the second leaves alone adds zero in the second. (The static loop hooks
    every layer, so one compiled step fits every table; HF generate only the table's.)"""
    import copy

    from steerops.steering import engine

    model = tiny_model("llama")
    layout = resolve_layout(model)
    fresh = copy.deepcopy(model)  # another model: buffers of its own
    first = SteeringTable([[(0, _unit(3, layout.hidden_size), 12.0)]] * 4)
    second = SteeringTable([[(2, _unit(4, layout.hidden_size), 6.0)]] * 4)
    kwargs = dict(pad_token_id=PAD, stop_ids=STOPS, max_new_tokens=8, loop="static")
    alone = generate_steered(fresh, resolve_layout(fresh), PROMPTS, second, **kwargs)
    steered_first = generate_steered(model, layout, PROMPTS, first, **kwargs)
    block0 = layout.component_module(0, "residual")
    kept = engine._BUFFERS[block0][1]  # held here: a new buffer cannot take its address
    after = generate_steered(model, layout, PROMPTS, second, **kwargs)
    assert steered_first != alone  # the first table changes the tokens at layer 0
    assert after == alone
    assert engine._BUFFERS[block0][1].data_ptr() == kept.data_ptr()
    assert not engine._IN_USE  # released once the calls end


def test_kept_buffers_follow_a_caller_under_inference_mode_and_a_model_moved_to_float32():
    """A first call under the caller's inference mode leaves buffers the next call can
    write; a model moved to another dtype since gets buffers in its new dtype (the kept
    bf16 ones would round its steering)."""
    import copy

    model = tiny_model("llama", dtype=torch.bfloat16)
    layout = resolve_layout(model)
    table = SteeringTable([[(1, _unit(3, layout.hidden_size), 5.0)]] * 4)
    kwargs = dict(pad_token_id=PAD, stop_ids=STOPS, max_new_tokens=8, loop="static")
    with torch.inference_mode():
        first = generate_steered(model, layout, PROMPTS, table, **kwargs)
    assert generate_steered(model, layout, PROMPTS, table, **kwargs) == first
    with steering_hooks(layout, table, max_rows=4, keep=True):
        pass  # bf16 buffers of 4 rows kept
    model.float()
    with steering_hooks(layout, table, max_rows=4, keep=True) as control:
        control.select([0, 1])  # before any forward: what the buffers hold as kept
        delta = control._states[1].delta
        assert delta.dtype == torch.float32
        torch.testing.assert_close(delta[0], 5.0 * _unit(3, layout.hidden_size))
    fresh = copy.deepcopy(model)
    want = generate_steered(fresh, resolve_layout(fresh), PROMPTS, table, **kwargs)
    assert generate_steered(model, layout, PROMPTS, table, **kwargs) == want


def test_steering_inside_steering_does_not_share_buffers():
    model = tiny_model("llama")
    layout = resolve_layout(model)
    outer_table = SteeringTable([[(1, _unit(5, layout.hidden_size), 2.0)]] * 2)
    inner_table = SteeringTable([[(1, _unit(6, layout.hidden_size), -3.0)]] * 2)
    with steering_hooks(layout, outer_table, max_rows=2, keep=True) as outer:
        outer.select([0, 1])
        kept = outer._states[1].delta.clone()
        with steering_hooks(layout, inner_table, max_rows=2, keep=True) as inner:
            inner.select([0, 1])
            assert inner._states[1].delta.data_ptr() != outer._states[1].delta.data_ptr()
        assert torch.equal(outer._states[1].delta, kept)


def test_hooks_removed_on_exception():
    model = tiny_model("llama")
    layout = resolve_layout(model)
    table = SteeringTable([[(0, _unit(5, layout.hidden_size), 1.0)]])
    blocks = [layout.component_module(i, "residual") for i in range(layout.num_layers)]
    with pytest.raises(RuntimeError, match="boom"):
        with steering_hooks(layout, table):
            assert len(blocks[0]._forward_hooks) == 1
            raise RuntimeError("boom")
    assert all(len(b._forward_hooks) == 0 for b in blocks)

    def broken_generate(**kwargs):
        raise ValueError("generate failed")

    model.generate = broken_generate
    with pytest.raises(ValueError, match="generate failed"):
        generate_steered(
            model, layout, [[1, 5]], table, pad_token_id=PAD, stop_ids=STOPS, max_new_tokens=2
        )
    assert all(len(b._forward_hooks) == 0 for b in blocks)


def test_out_of_memory_halves_and_keeps_finished_rows():
    model = tiny_model("llama")
    layout = resolve_layout(model)
    configs, rows = _mixed_rows(layout.hidden_size)
    table = SteeringTable([configs[c] for c, _ in rows])
    prompts = [PROMPTS[p] for _, p in rows]
    kwargs = dict(pad_token_id=PAD, stop_ids=STOPS, max_new_tokens=6)
    expected = generate_steered(model, layout, prompts, table, max_batch_rows=8, **kwargs)

    real = model.generate
    sizes: list[int] = []

    def flaky_generate(**kw):
        n = kw["input_ids"].shape[0]
        sizes.append(n)
        if n > 2 and len(sizes) >= 2:  # the first sub-batch fits, later ones do not
            raise OutOfMemoryError("CUDA out of memory (simulated)")
        return real(**kw)

    model.generate = flaky_generate
    got = generate_steered(model, layout, prompts, table, max_batch_rows=8, **kwargs)
    assert got == expected
    # 8 rows done, then 8 -> OOM, 4 -> OOM, then the remaining 12 rows in sub-batches of 2.
    assert sizes == [8, 8, 4] + [2] * 6


def test_bad_inputs_raise_one_line_errors():
    model = tiny_model("llama")
    layout = resolve_layout(model)
    v = _unit(6, layout.hidden_size)
    with pytest.raises(SteeropsError, match="layer 7 out of range"):
        with steering_hooks(layout, SteeringTable([[(7, v, 1.0)]])):
            pass
    with pytest.raises(SteeropsError, match="scope"):
        with steering_hooks(layout, SteeringTable([[(0, v, 1.0)]]), scope="prompt"):
            pass
    with pytest.raises(SteeropsError, match="2 rows for 1 prompts"):
        generate_steered(
            model,
            layout,
            [[1, 2]],
            SteeringTable([[], []]),
            pad_token_id=PAD,
            stop_ids=STOPS,
            max_new_tokens=2,
        )


def test_static_cache_compiled_decode_follows_the_steering_table():
    """HF compiles the decode step under a static cache (forced here on CPU, eager backend).
    By default torch.compile does not guard on hooks, so the graph compiled for the
    unsteered baseline would be replayed for steered rows; the engine must prevent that."""
    from transformers import CompileConfig

    model = tiny_model("llama")
    layout = resolve_layout(model)
    config = CompileConfig(backend="eager", fullgraph=False, mode=None, dynamic=False)
    config._compile_all_devices = True  # HF compiles only on accelerators otherwise
    model.generation_config.compile_config = config
    v = _unit(7, layout.hidden_size)
    tables = [None, SteeringTable([[(1, v, 8.0)]] * 2), SteeringTable([[(1, v, -8.0)]] * 2)]
    prompts = [PROMPTS[0], PROMPTS[2]]

    def run(table, cache):
        return generate_steered(
            model,
            layout,
            prompts,
            table,
            pad_token_id=PAD,
            stop_ids=STOPS,
            max_new_tokens=6,
            cache_implementation=cache,
        )

    dynamic = [run(t, None) for t in tables]
    assert dynamic[0] != dynamic[1] != dynamic[2]
    assert [run(t, "static") for t in tables] == dynamic
