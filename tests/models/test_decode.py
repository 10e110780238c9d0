"""The static decode loop against HF generate with the same steering hooks (tiny models)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections import Counter

import pytest
import torch
import transformers as T

from decode_data import EAGER, PAD, PROMPTS, both, ctrl_c_once_finished, unit, windowed
from steerops.models import decode, decode_run, decode_step
from steerops.models.resolver import resolve_layout
from steerops.steering.engine import SteeringTable, generate_steered
from tiny import ARCHS, CONFIGS, tiny_model


def _grid(hidden: int, copies: int = 2):
    """Rows of mixed steering: none, one layer, another layer, two layers, two vectors at
    one layer; each config on every prompt, in an order unrelated to config or length."""
    a, b, c = unit(1, hidden), unit(2, hidden), unit(3, hidden)
    configs = [
        [],
        [(1, a, 6.0)],
        [(2, b, -5.0)],
        [(0, c, 4.0), (2, a, 3.0)],
        [(1, a, 2.0), (1, b, 5.0)],
    ]
    rows = [(k, p) for k in range(len(configs)) for p in range(len(PROMPTS))][::-1] * copies
    return SteeringTable([configs[k] for k, _ in rows]), [PROMPTS[p] for _, p in rows]


def _stops(model, layout, prompts, table) -> list[int]:
    """Eos, the most common first token and the most common later token: many rows stop
    at once, the others at varied lengths."""
    free = generate_steered(
        model, layout, prompts, table, pad_token_id=PAD, stop_ids=[2], max_new_tokens=10, loop="hf"
    )
    first = Counter(row[0] for row in free if row).most_common(1)
    later = Counter(t for row in free for t in row[1:]).most_common(2)
    return sorted({2, *(t for t, _ in first + later)})


def _counting():
    """Options compiling the step (fullgraph, dynamo only) and the list of graphs made."""
    graphs = []

    def backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    return graphs, decode.StaticLoop(backend=backend)


def _compiled_grid(arch: str):
    """60 rows through 32 slots, refilled as rows stop, on a counted compiled step."""
    model = tiny_model(arch)
    layout = resolve_layout(model)
    table, prompts = _grid(layout.hidden_size)
    stats = decode.DecodeStats()
    graphs, options = _counting()
    stops = _stops(model, layout, prompts, table)
    reference, loop = both(model, layout, prompts, table, stats, options, stop_ids=stops)
    return reference, loop, stats, graphs


@pytest.mark.parametrize("arch", ARCHS)
def test_loop_matches_hf_generate(arch):
    """Prompts also share a prefix, computed once per steering group; the step compiles
    (fullgraph) as one graph per slot count."""
    reference, loop, stats, graphs = _compiled_grid(arch)
    assert loop == reference
    assert stats.prefills >= 2
    assert stats.reused_prompt_tokens > 0  # the shared head, computed once per config
    assert len(graphs) == len(set(stats.buckets))
    # every decode row-step counted as useful produced one of the reference's tokens
    assert stats.useful_row_steps == sum(min(n + 1, 10) - 1 for n in map(len, reference))


def test_refill_then_fewer_slots_for_the_last_rows():
    reference, loop, stats, graphs = _compiled_grid("llama")
    assert loop == reference
    assert len({len(row) for row in reference}) >= 3, "rows should stop at varied lengths"
    assert stats.prefills >= 3  # the first fill, then slots freed by stopped rows
    # the last rows move to fewer slots (halving down to 8, a graph each), some left empty
    assert stats.buckets[0] == 32 and stats.buckets[-1] == 8
    assert stats.buckets == sorted(stats.buckets, reverse=True)
    assert len(graphs) == len(stats.buckets)


@pytest.mark.parametrize(
    "arch,scope", [("llama", "response"), ("gemma3", "response"), ("gpt2", "all")]
)
def test_loop_matches_hf_generate_long_runs(arch, scope):
    """More rows than slots by far, so the cache shifts left; response scope leaves every
    prefill (the shared prefix's too) unsteered."""
    model = tiny_model(arch, seed=1)
    layout = resolve_layout(model)
    table, prompts = _grid(layout.hidden_size, copies=4)
    stats = decode.DecodeStats()
    reference, loop = both(
        model, layout, prompts, table, stats, stop_ids=[2, 7, 40], scope=scope, max_new_tokens=12
    )
    assert loop == reference
    assert stats.shifts >= 1


def test_idle_slots_keep_positions_inside_the_model_s_table():
    """Slots without a live row (bucket padding, finished rows) do not advance their
    position ids: in a state a compiled step keeps call after call, GPT-2's learned table
    would be read past its end (a device-side assert on CUDA), and a long-context rope
    scales by the batch's largest position."""
    torch.manual_seed(0)
    config = CONFIGS["gpt2"]()
    config.n_positions = 48  # 3 rows of at most 15 tokens + 16 new: 8 idle slots
    model = T.GPT2LMHeadModel(config).eval()
    layout = resolve_layout(model)
    _, options = _counting()
    table = SteeringTable([[(1, unit(4, layout.hidden_size), 3.0)]] * 3)
    prompts = PROMPTS[:3]
    longest = max(map(len, prompts)) + 16
    for _ in range(4):
        reference, loop = both(
            model,
            layout,
            prompts,
            table,
            options=options,
            stop_ids=[2],
            slots=8,
            max_new_tokens=16,
        )
        assert loop == reference
        (state,) = decode_step._POOLS[model].values()
        assert int(state.positions.max()) <= longest


@pytest.mark.parametrize("every", [1, 4])
def test_eager_steps_attend_only_from_the_first_live_row_to_the_last_write(monkeypatch, every):
    """The cache left of every live row (padding) and right of the write index cost no
    attention on an eager step; the tokens stay HF generate's, also when `every` steps run
    between reads of the done mask (the window then spans indices not written yet)."""
    model = tiny_model("llama", seed=1)
    layout = resolve_layout(model)
    table, prompts = _grid(layout.hidden_size, copies=4)
    widths: list[tuple[int, int]] = []  # (keys attended, cache length)
    update = decode_step.WindowLayer.update

    def recorded(self, *args, **kwargs):
        keys, values = update(self, *args, **kwargs)
        widths.append((keys.shape[2], self.max_cache_len))
        return keys, values

    monkeypatch.setattr(decode_step.WindowLayer, "update", recorded)
    options = decode.StaticLoop(backend=None, check_every=every)
    reference, loop = both(
        model, layout, prompts, table, options=options, stop_ids=[2, 7, 40], max_new_tokens=12
    )
    assert loop == reference
    cache_len = widths[0][1]
    # at least a prompt and the token being written; far from the whole cache on average
    assert min(w for w, _ in widths) >= min(map(len, prompts)) + 1
    assert sum(w for w, _ in widths) / len(widths) < 0.75 * cache_len, (widths, cache_len)


@pytest.mark.parametrize("arch", ["gemma2", "gemma3_text"])
def test_sliding_window_layers_with_prompts_longer_than_the_window(arch):
    model = windowed(arch)
    layout = resolve_layout(model)
    table, prompts = _grid(layout.hidden_size, copies=4)
    stats = decode.DecodeStats()
    reference, loop = both(model, layout, prompts, table, stats, stop_ids=[2, 3], max_new_tokens=12)
    assert loop == reference
    assert stats.shifts >= 1
    wide = T.AutoModelForCausalLM.from_config(CONFIGS[arch]())
    wide.load_state_dict(model.state_dict())
    unwindowed = generate_steered(
        wide.eval(),
        resolve_layout(wide),
        prompts,
        table,
        pad_token_id=PAD,
        stop_ids=[2, 3],
        max_new_tokens=12,
        loop="hf",
    )
    assert unwindowed != reference, "the window should matter for these prompts"


def test_one_compiled_graph_serves_every_steering_table():
    graphs, options = _counting()
    model = tiny_model("llama")
    layout = resolve_layout(model)
    h = layout.hidden_size
    prompts = PROMPTS[:4] * 2
    two_layers = [[(0, unit(5, h), -4.0), (2, unit(6, h), 3.0 + i)] for i in range(8)]
    tables = [
        None,
        SteeringTable([[(1, unit(4, h), 6.0)]] * 8),
        SteeringTable(two_layers),
        SteeringTable([[(1, unit(4, h), -6.0)]] * 8),
    ]
    outputs = []
    for table in tables:
        reference, loop = both(
            model, layout, prompts, table, options=options, stop_ids=[2], slots=8
        )
        assert loop == reference
        outputs.append(loop)
    assert len(graphs) == 1  # one slot count (8), whatever the table steers, or none
    assert len({str(o) for o in outputs}) == 4, "each table should change the tokens"


def test_a_process_that_fills_the_step_s_graphs_compiles_afresh(monkeypatch):
    """Every graph of the compiled step counts against dynamo's limit for the process: a
    `steerops steer` over many traits (each its own cache length) reached it and died
    with FailOnRecompileLimitHit. Past the limit the loop drops its graphs and compiles
    again, tokens unchanged."""
    monkeypatch.setattr(decode, "RECOMPILE_LIMIT", 2)
    graphs, options = _counting()
    model = tiny_model("llama")
    layout = resolve_layout(model)
    table = SteeringTable([[(1, unit(4, layout.hidden_size), 6.0)]] * 4)
    for room in (8, 24, 40, 56, 72):  # each call another cache length: another graph
        reference, loop = both(
            model,
            layout,
            PROMPTS[:4],
            table,
            options=dataclasses.replace(options, prompt_room=room),
            stop_ids=[2],
            slots=8,
        )
        assert loop == reference
    assert len(graphs) > 2 * decode.RECOMPILE_LIMIT  # beyond one process's limit


def test_the_two_loops_agree_whatever_the_checkpoint_s_generation_config_ships():
    """HF generate applies a shipped repetition_penalty, no_repeat_ngram_size or
    suppress_tokens even when greedy; the static loop is a plain argmax. Both loops decode
    plainly: the tokens agree with each other and with a plain hook's greedy decode."""
    model = tiny_model("qwen2")
    layout = resolve_layout(model)
    shipped = model.generation_config
    shipped.repetition_penalty, shipped.no_repeat_ngram_size = 1.3, 2
    shipped.suppress_tokens, shipped.min_new_tokens = [5, 7], 6
    table, prompts = _grid(layout.hidden_size, copies=1)
    reference, loop = both(model, layout, prompts, table, stop_ids=[2])
    assert loop == reference
    vector = unit(1, layout.hidden_size)
    handle = layout.layers[1].register_forward_hook(
        lambda module, args, out: (
            (out[0] + 6.0 * vector, *out[1:]) if isinstance(out, tuple) else out + 6.0 * vector
        )
    )
    try:
        with torch.no_grad():
            seq = list(PROMPTS[0])
            for _ in range(10):
                seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
    finally:
        handle.remove()
    plain = seq[len(PROMPTS[0]) :]
    plain = plain[: plain.index(2)] if 2 in plain else plain
    steered = generate_steered(
        model,
        layout,
        [PROMPTS[0]],
        SteeringTable([[(1, vector, 6.0)]]),
        pad_token_id=PAD,
        stop_ids=[2],
        max_new_tokens=10,
        loop="hf",
    )
    assert steered == [plain]


@pytest.mark.parametrize("packed", [True, False])
def test_compiled_step_reads_the_cache_without_a_copy_per_query_head(monkeypatch, packed):
    """Under compile HF's sdpa repeats keys and values per query head (`repeat_kv`): the
    whole cache, every layer, every step. The loop's step folds the query heads instead
    (`decode_attention`); tokens stay HF generate's either way."""
    values: list[torch.Tensor] = []

    def backend(graph_module, example_inputs):
        for node in graph_module.graph.nodes:
            if isinstance(node.meta.get("example_value"), torch.Tensor):
                values.append(node.meta["example_value"])
        return graph_module.forward

    if not packed:  # the control: without the packing the copies are there
        monkeypatch.setattr(decode, "packed_gqa", contextlib.nullcontext)
    model = tiny_model("llama")  # 4 query heads, 2 key/value heads
    layout = resolve_layout(model)
    table = SteeringTable([[(1, unit(4, layout.hidden_size), 6.0)]] * 8)
    reference, loop = both(
        model,
        layout,
        PROMPTS[:4] * 2,
        table,
        options=decode.StaticLoop(backend=backend),
        stop_ids=[2],
        slots=8,
    )
    assert loop == reference
    mask = next(v for v in values if v.dtype == torch.bool and v.dim() == 2)  # [slots, cache]
    per_head = mask.numel() * model.config.num_attention_heads * model.config.head_dim
    copies = [v for v in values if v.numel() == per_head and v.dtype.is_floating_point]
    assert len(copies) == (0 if packed else 2 * 2 * model.config.num_hidden_layers)


def test_a_kept_state_made_in_inference_mode_serves_the_next_call(monkeypatch):
    """On CUDA the cache's write index moves to the GPU at the first placement, inside
    inference mode; a compiled step keeps that state for the next call, which resets it."""
    real = decode_step.WindowLayer.lazy_initialization

    def like_cuda(self, keys, values):
        real(self, keys, values)
        self.cumulative_length = self.cumulative_length.clone()  # as `.to("cuda")` does

    monkeypatch.setattr(decode_step.WindowLayer, "lazy_initialization", like_cuda)
    _, options = _counting()
    model = tiny_model("gemma3")
    layout = resolve_layout(model)
    table = SteeringTable([[(1, unit(4, layout.hidden_size), 6.0)]] * 4)
    for _ in range(2):
        reference, loop = both(
            model, layout, PROMPTS[:4], table, options=options, stop_ids=[2], slots=4
        )
        assert loop == reference


def test_a_quantized_model_is_not_covered_by_the_loop():
    """Its quantized kernels are not compiled in one graph: HF generate decodes it."""
    model = tiny_model("llama")
    assert decode.covers(model) is None
    model.hf_quantizer = object()  # what from_pretrained sets for a quantization config
    assert decode.covers(model) == "the model is quantized"


def test_architecture_outside_the_loop_takes_hf_generate(caplog):
    model = tiny_model("granite")  # the blocks named in params, as a user would
    layout = resolve_layout(model, layers_path="model.layers")
    assert decode.covers(model) is not None
    calls = []
    real = model.generate
    model.generate = lambda **kw: calls.append(kw["input_ids"].shape[0]) or real(**kw)
    table = SteeringTable([[(1, unit(7, 32), 5.0)]] * 3)
    kwargs = {"pad_token_id": PAD, "stop_ids": [2], "max_new_tokens": 5}
    with caplog.at_level(logging.INFO, logger="steerops.steering.engine"):
        got = generate_steered(model, layout, PROMPTS[:3], table, loop="static", **kwargs)
    assert calls == [3]
    assert "granite" in caplog.text and "HF generate" in caplog.text
    assert got == generate_steered(model, layout, PROMPTS[:3], table, loop="hf", **kwargs)


@pytest.mark.parametrize("graph_trees", [True, False])
def test_out_of_memory_with_cuda_graph_trees_starts_them_afresh(monkeypatch, caplog, graph_trees):
    """Out of memory while torch records a CUDA graph may leave its graph trees
    mid-recording: the retry at fewer slots resets what is compiled first (only where the
    step records them: a CUDA step compiled by inductor in a graph mode), once: later calls
    on the model start at the slots that fit."""
    model = tiny_model("llama")
    layout = resolve_layout(model)
    table, prompts = _grid(layout.hidden_size)
    real_state = decode.slot_state
    resets: list[bool] = []

    def short_of_memory(model, slots, *args):
        if slots == 32:
            raise torch.OutOfMemoryError("out of memory (simulated)")
        return real_state(model, slots, *args)

    for module in (decode, decode_run):
        monkeypatch.setattr(module, "slot_state", short_of_memory)
    monkeypatch.setattr(decode, "_records_graph_trees", lambda model, options: graph_trees)
    monkeypatch.setattr(torch.compiler, "reset", lambda: resets.append(True))

    def steer():
        return generate_steered(
            model,
            layout,
            prompts,
            table,
            pad_token_id=PAD,
            stop_ids=[],
            max_new_tokens=4,
            loop="static",
            max_batch_rows=32,
            loop_options=EAGER,
        )

    with caplog.at_level(logging.WARNING, logger=decode.__name__):
        assert len(steer()) == len(prompts)
    assert resets == ([True] if graph_trees else [])
    said = [r.getMessage() for r in caplog.records if r.name == decode.__name__]
    assert said and said[0].startswith("out of memory decoding 32 rows a step: going on at 16")
    assert ("later calls in this process start there" in said[0]) == graph_trees
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=decode.__name__):
        assert steer() == steer()  # with graph trees, later calls start at the slots that fit:
    assert resets == ([True] if graph_trees else [])  # no second reset
    if graph_trees:  # said once, when it happened
        assert not [r for r in caplog.records if r.name == decode.__name__]


def test_which_steps_record_cuda_graph_trees():
    model = tiny_model("llama")
    on_cuda = type("M", (), {"get_input_embeddings": lambda self: _On("cuda")})()
    records = decode._records_graph_trees
    assert not records(model, decode.StaticLoop())  # CPU: eager by default
    assert records(on_cuda, decode.StaticLoop())  # auto: inductor, reduce-overhead
    assert records(on_cuda, decode.StaticLoop(backend="inductor", mode="max-autotune"))
    assert not records(on_cuda, decode.StaticLoop(mode="default"))
    assert not records(on_cuda, decode.StaticLoop(capture=True))  # graphs taken by hand
    assert not records(on_cuda, decode.StaticLoop(backend="eager"))
    assert not records(on_cuda, decode.StaticLoop(backend=None))


class _On:
    def __init__(self, device: str):
        self.weight = type("W", (), {"device": torch.device(device)})()


def test_out_of_memory_halves_the_slots_and_keeps_finished_rows(monkeypatch):
    model = tiny_model("llama")
    layout = resolve_layout(model)
    table, prompts = _grid(layout.hidden_size)
    stops = _stops(model, layout, prompts, table)  # as above: the last rows move to fewer slots
    reference, _ = both(model, layout, prompts, table, stop_ids=stops)
    real_state, real_prefill = decode.slot_state, decode_run.Prefiller.__call__
    asked: list[int] = []
    prefilled: list[int] = []

    def short_of_memory(model, slots, *args):  # the tail's first smaller state does not fit
        asked.append(slots)
        if len(asked) == 2:
            raise torch.OutOfMemoryError("out of memory (simulated)")
        return real_state(model, slots, *args)

    def counted(self, rows):
        prefilled.extend(rows)
        return real_prefill(self, rows)

    for module in (decode, decode_run):  # the first state, and the smaller ones
        monkeypatch.setattr(module, "slot_state", short_of_memory)
    monkeypatch.setattr(decode_run.Prefiller, "__call__", counted)
    got = generate_steered(
        model,
        layout,
        prompts,
        table,
        pad_token_id=PAD,
        stop_ids=stops,
        max_new_tokens=10,
        loop="static",
        max_batch_rows=32,
        loop_options=EAGER,
    )
    assert got == reference
    assert asked[0] == 32 and asked[1] < 32 and max(asked[2:]) <= 16  # then half the slots
    # Rows that finished before the failure are not generated again; rows in flight are
    # (an eager step moves to fewer slots once at most 24 of its 32 are live).
    assert len(prompts) < len(prefilled) <= len(prompts) + 24


@pytest.mark.parametrize("loop", ["static", "hf"])
def test_an_interrupt_hands_over_the_rows_that_finished(monkeypatch, loop):
    """Ctrl-C mid-generation raises `GenerationInterrupted` (still a KeyboardInterrupt)
    with every row finished so far, each equal to its row in a whole run."""
    from steerops.models.generation import GenerationInterrupted
    from steerops.steering import engine

    model = tiny_model("llama")
    layout = resolve_layout(model)
    table, prompts = _grid(layout.hidden_size)
    kwargs = dict(pad_token_id=PAD, stop_ids=[2], max_new_tokens=10, max_batch_rows=8)
    whole = generate_steered(model, layout, prompts, table, loop=loop, loop_options=EAGER, **kwargs)
    pressing = contextlib.nullcontext()
    if loop == "static":  # the user presses Ctrl-C once a dozen rows have finished
        pressing = ctrl_c_once_finished(12)
    else:  # ... during HF generate's third sub-batch
        calls, generate_batch = [], engine.generate_batch

        def pressed(*args, **kwargs):
            calls.append(1)
            if len(calls) == 3:
                raise KeyboardInterrupt
            return generate_batch(*args, **kwargs)

        monkeypatch.setattr(engine, "generate_batch", pressed)
    with pressing, pytest.raises(KeyboardInterrupt) as caught:
        generate_steered(model, layout, prompts, table, loop=loop, loop_options=EAGER, **kwargs)
    assert isinstance(caught.value, GenerationInterrupted)
    finished = caught.value.finished
    assert (12 if loop == "static" else 16) <= len(finished) < len(prompts)
    assert all(tokens == whole[i] for i, tokens in finished.items())


def _reference_table(rows):
    """Per-row lists built naively: (index, weight) slots per layer, vectors by identity."""
    vectors: dict[int, list] = {}
    slots: dict[int, dict[int, list]] = {}
    for r, additions in enumerate(rows):
        for layer, v, w in additions:
            known = vectors.setdefault(layer, [])
            i = next((j for j, u in enumerate(known) if u is v), None)
            if i is None:
                known.append(v)
                i = len(known) - 1
            slots.setdefault(layer, {}).setdefault(r, []).append((i, w))
    return vectors, slots


def test_table_build_is_linear_and_matches_a_naive_build():
    hidden = 16
    vectors = [unit(s, hidden) for s in range(40)]
    rows = [
        [(k % 5, vectors[k % 40], 0.5 * k), (k % 3, vectors[(7 * k) % 40], -1.0)] if k % 7 else []
        for k in range(4096)
    ]
    started = time.perf_counter()
    table = SteeringTable(rows)
    assert time.perf_counter() - started < 1.0  # the quadratic build took about 50 s
    expected_vectors, expected_slots = _reference_table(rows)
    assert table.layers == sorted(expected_vectors)
    for layer in table.layers:
        assert all(
            a is b for a, b in zip(table.vectors[layer], expected_vectors[layer], strict=True)
        )
        for r in range(len(rows)):
            got = [
                (i, w)
                for i, w in zip(
                    table.index[layer][r].tolist(), table.weight[layer][r].tolist(), strict=True
                )
            ]
            want = expected_slots[layer].get(r, [])
            k = table.index[layer].shape[1]
            assert got == [(i, float(torch.tensor(w))) for i, w in want] + [(0, 0.0)] * (
                k - len(want)
            )


def test_response_scope_prefills_each_prompt_once_per_refill():
    """No prompt is steered under response scope, so the configs of one prompt share its
    prefill: the loop computes at most one row per distinct prompt in each refill."""
    model = tiny_model("llama", seed=1)
    layout = resolve_layout(model)
    table, prompts = _grid(layout.hidden_size, copies=4)  # 5 configs x 6 prompts x 4
    widths: list[tuple[int, int]] = []

    @contextlib.contextmanager
    def watching_inputs():
        embed = model.get_input_embeddings()
        handle = embed.register_forward_hook(lambda m, args, out: widths.append(args[0].shape))
        try:
            yield
        finally:
            handle.remove()

    stats = decode.DecodeStats()
    reference, loop = both(
        model,
        layout,
        prompts,
        table,
        stats,
        around=watching_inputs,
        scope="response",
        stop_ids=[2, 7, 40],
        max_new_tokens=12,
    )
    assert loop == reference
    prefill_rows = sum(rows for rows, width in widths if width > 1)
    # the shared head once, then at most the 6 distinct prompts per refill
    assert prefill_rows <= 1 + stats.prefills * len(PROMPTS)
    assert prefill_rows < len(prompts) // 4
    assert stats.reused_prompt_tokens > sum(map(len, prompts)) // 2


def _one_row_response_scope(model, layout, prompt, additions, max_new_tokens):
    """Reference: one row's greedy tokens from a hand-written loop over a DynamicCache, with
    a plain forward hook that adds the row's steering on every forward but the first (the
    prompt's), whatever its width."""
    forwards = {"n": 0}
    add = {}
    for layer, vector, weight in additions:
        add[layer] = add.get(layer, 0) + weight * vector

    def make(delta):
        def hook(module, args, out):
            hidden = out[0] if isinstance(out, tuple) else out
            if forwards["n"] == 0:
                return None
            hidden = hidden + delta.to(hidden.dtype)
            return (hidden, *out[1:]) if isinstance(out, tuple) else hidden

        return hook

    handles = [
        layout.component_module(layer, "residual").register_forward_hook(make(delta))
        for layer, delta in add.items()
    ]
    cache, ids, new = T.DynamicCache(), torch.tensor([prompt]), []
    try:
        with torch.inference_mode():
            for _ in range(max_new_tokens):
                out = model(input_ids=ids, past_key_values=cache, use_cache=True)
                forwards["n"] += 1
                ids = out.logits[:, -1].argmax(-1, keepdim=True)
                new.append(int(ids))
                if new[-1] == 2:
                    break
    finally:
        for handle in handles:
            handle.remove()
    return new[:-1] if new[-1] == 2 else new


@pytest.mark.parametrize("loop", ["static", "hf"])
def test_response_scope_leaves_a_one_token_prompt_unsteered_however_batched(loop):
    """Under response scope no prompt token is steered, a one-token prompt's either: its
    rows give the same tokens prefilled alone, among other one-token prompts and beside
    longer prompts, and the same as one row with the prompt's forward left unsteered."""
    model = tiny_model("llama", seed=1)
    layout = resolve_layout(model)
    hidden = layout.hidden_size
    configs = [
        [],
        [(1, unit(1, hidden), 6.0)],
        [(0, unit(3, hidden), 4.0), (2, unit(1, hidden), 3.0)],
    ]
    configs += [[(1, unit(1, hidden), 2.0), (1, unit(2, hidden), 5.0)]]
    rows = [configs[k % len(configs)] for k in range(24)]
    short = [[5 + k % 6] for k in range(len(rows))]
    kwargs = dict(pad_token_id=PAD, stop_ids=[2], max_new_tokens=6, scope="response")
    kwargs |= dict(loop=loop, loop_options=EAGER, max_batch_rows=8)
    alone = [
        generate_steered(model, layout, [p], SteeringTable([rows[r]]), **kwargs)[0]
        for r, p in enumerate(short)
    ]
    together = generate_steered(model, layout, short, SteeringTable(rows), **kwargs)
    longer = PROMPTS[: len(rows)]
    beside = generate_steered(
        model, layout, [*longer, *short], SteeringTable([*rows[: len(longer)], *rows]), **kwargs
    )
    assert together == alone
    assert beside[len(longer) :] == alone
    reference = [
        _one_row_response_scope(model, layout, p, rows[r], max_new_tokens=6)
        for r, p in enumerate(short)
    ]
    assert alone == reference
    assert len({str(r) for r in reference}) > 6, "configs should differ on one prompt"
    first = {}  # the first new token comes from the unsteered prompt: one per prompt
    for p, r in zip(short, reference, strict=True):
        first.setdefault(p[0], set()).add(tuple(r[:1]))
    assert all(len(tokens) == 1 for tokens in first.values())


def test_progress_moves_every_step_and_sums_to_the_rows():
    """Progress comes a token at a time (1 / max_new_tokens of a row), so it moves while a
    first batch of rows that all stop together is still decoding; each row counts once."""
    model = tiny_model("llama")
    layout = resolve_layout(model)
    table, prompts = _grid(layout.hidden_size)
    reported: list[float] = []
    finished_rows: list[int] = []
    real_harvest = decode_run.Run.harvest

    def harvest(self):
        finished, progress = real_harvest(self)
        finished_rows.append(finished)
        return finished, progress

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(decode_run.Run, "harvest", harvest)
        decode.decode_greedy(
            model,
            prompts,
            pad_token_id=PAD,
            stop_ids=[-5],  # nothing stops a row early: every row runs to max_new_tokens
            max_new_tokens=10,
            max_rows=64,
            options=EAGER,
            on_progress=reported.append,
        )
    assert len(prompts) <= 64 and finished_rows[-1] == len(prompts)  # all end together
    assert not any(finished_rows[:-1]) and len(reported) == len(finished_rows)
    assert reported[0] == pytest.approx(len(prompts) * 2 / 10)  # prefill's token + a step's
    assert sum(reported) == pytest.approx(len(prompts))


def test_capture_off_cuda_runs_the_same_compiled_steps():
    """`StaticLoop(capture=True)` captures CUDA graphs only on CUDA (bench/gpu_checks.py
    checks those against HF generate); elsewhere the same compiled steps run, one by one."""
    model = tiny_model("gemma3_text")
    layout = resolve_layout(model)
    table, prompts = _grid(layout.hidden_size, copies=1)
    graphs, options = _counting()
    stats = decode.DecodeStats()
    reference, loop = both(
        model,
        layout,
        prompts,
        table,
        stats,
        dataclasses.replace(options, capture=True),
        stop_ids=_stops(model, layout, prompts, table),
    )
    assert loop == reference
    assert stats.graphs == 0 and len(graphs) == len(set(stats.buckets))
