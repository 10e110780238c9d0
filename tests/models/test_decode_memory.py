"""`max_batch_rows: auto`: the decode loop's memory per row against what the models and
the loop really allocate, and the rows chosen from it."""

from __future__ import annotations

import pytest
import torch
import transformers as T

from decode_data import EAGER, PAD, PROMPTS
from steerops.models import decode, decode_memory, decode_step
from steerops.models.decode_memory import (
    DecoderShape,
    auto_rows,
    planned_rows,
    row_bytes,
    rows_for,
)
from tiny import _COMMON, ARCHS, tiny_model

GIB, MIB = 2**30, 2**20


def _forward_kv_bytes_per_token(model: torch.nn.Module, rows: int = 2, seq: int = 5) -> float:
    """Bytes of keys and values a real forward caches, per row and token (a hybrid's state
    and convolution layers hold none)."""
    ids = torch.arange(3, 3 + rows * seq).view(rows, seq) % 90 + 3
    with torch.no_grad():
        cache = model(input_ids=ids, use_cache=True).past_key_values
    total = 0
    for layer in cache.layers:
        for name in ("keys", "values"):
            states = getattr(layer, name, None)
            if isinstance(states, torch.Tensor):
                total += states.numel() * states.element_size()
    return total / (rows * seq)


@pytest.mark.parametrize("arch", [a for a in ARCHS if a in decode.LOOP_ARCHITECTURES])
def test_kv_bytes_per_token_match_a_forward(arch):
    model = tiny_model(arch)
    shape = DecoderShape.of(model.config)
    assert shape.kv_bytes_per_token(4) == _forward_kv_bytes_per_token(model)


def test_head_dim_other_than_hidden_over_heads_is_read():
    torch.manual_seed(0)
    config = T.Gemma3TextConfig(**_COMMON, head_dim=16)  # 4 heads of 16 in a hidden of 32
    model = T.AutoModelForCausalLM.from_config(config).eval()
    shape = DecoderShape.of(model.config)
    assert shape.head_dim == 16
    assert shape.kv_bytes_per_token(4) == _forward_kv_bytes_per_token(model)


def test_bf16_halves_the_cache():
    model = tiny_model("llama", dtype=torch.bfloat16)
    assert DecoderShape.of(model.config).kv_bytes_per_token(2) == _forward_kv_bytes_per_token(model)


def test_the_loop_allocates_the_cache_length_it_is_sized_for(monkeypatch):
    """The loop's static cache: every layer full length, `cache_length` long, as
    `row_bytes` counts it."""
    model = tiny_model("gemma2")
    made: list[decode_step.SlotState] = []
    real = decode.slot_state

    def recording(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(decode, "slot_state", recording)
    decode.decode_greedy(
        model,
        PROMPTS,
        pad_token_id=PAD,
        stop_ids=[2],
        max_new_tokens=7,
        max_rows=8,
        options=EAGER,
    )
    state = made[0]
    assert state.cache_len == decode_memory.cache_length(max(map(len, PROMPTS)), 7, 1)
    cache = sum(t.numel() * t.element_size() for t in (*state.keys, *state.values))
    per_token = DecoderShape.of(model.config).kv_bytes_per_token(4)
    assert cache == state.slots * state.cache_len * per_token


def test_calls_with_shorter_prompts_share_the_room_of_the_longest(monkeypatch):
    """With `prompt_room`, a call whose longest prompt is shorter gets the same cache
    length: a session's question subsets share one set of kept states and graphs."""
    model = tiny_model("llama")
    lengths: list[int] = []
    real = decode.slot_state

    def recording(model, slots, cache_len, *args):
        lengths.append(cache_len)
        return real(model, slots, cache_len, *args)

    monkeypatch.setattr(decode, "slot_state", recording)
    longest = max(map(len, PROMPTS))
    options = decode.StaticLoop(backend=None, prompt_room=longest)
    for prompts in (PROMPTS, PROMPTS[1:3], PROMPTS[4:5]):
        decode.decode_greedy(
            model, prompts, pad_token_id=PAD, stop_ids=[2], max_new_tokens=5, max_rows=8,
            options=options,
        )  # fmt: skip
    assert lengths == [decode_memory.cache_length(longest, 5, 1)] * 3
    decode.decode_greedy(
        model, PROMPTS[4:5], pad_token_id=PAD, stop_ids=[2], max_new_tokens=5, max_rows=8,
        options=EAGER,
    )  # fmt: skip
    assert lengths[-1] == decode_memory.cache_length(len(PROMPTS[4]), 5, 1) < lengths[0]
    short = decode.StaticLoop(backend=None, prompt_room=3)  # room below the longest: no effect
    decode.decode_greedy(
        model, PROMPTS, pad_token_id=PAD, stop_ids=[2], max_new_tokens=5, max_rows=8,
        options=short,
    )  # fmt: skip
    assert lengths[-1] == lengths[0]


def test_rows_are_the_largest_power_of_two_that_fits():
    per_row = 10 * MIB
    assert rows_for(10 * GIB, per_row) == 512  # 0.7 x 1,024 rows' worth = 716
    assert rows_for(20 * GIB, per_row) == 1024  # 1,433 fit: capped
    assert rows_for(1000 * GIB, per_row) == decode_memory.MAX_ROWS
    assert rows_for(3 * MIB, per_row) == 1  # not even one: the loop's own error says so
    assert rows_for(int(64 * per_row / 0.7) + 1, per_row) == 64
    assert rows_for(int(64 * per_row / 0.7) - per_row, per_row) == 32


def test_gemma_3_shapes_on_an_h200():
    """A gemma-3-4b shape (bf16, the grid's prompts of up to 64 tokens, 24 new) gets the
    1,024 rows measured fastest on an H200; a 27b shape, beside its 54 GB of weights, the
    rows its caches leave room for."""
    small = T.Gemma3TextConfig(
        hidden_size=2560,
        intermediate_size=10240,
        num_hidden_layers=34,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=256,
        vocab_size=262_208,
    )
    large = T.Gemma3TextConfig(
        hidden_size=5376,
        intermediate_size=21504,
        num_hidden_layers=62,
        num_attention_heads=32,
        num_key_value_heads=16,
        head_dim=128,
        vocab_size=262_208,
    )
    small_row = row_bytes(DecoderShape.of(small), 2, 64, 24)
    large_row = row_bytes(DecoderShape.of(large), 2, 64, 24)
    # 34 layers x 2 x 4 heads x 256 x 2 bytes = 139,264 a token, over a 96-token cache: its
    # buckets' caches are most of a row
    cache = 139_264 * 96
    assert 2 * cache < small_row < 4 * cache
    assert rows_for(130 * GIB, small_row) == 1024
    assert rows_for(85 * GIB, large_row) == 256
    assert rows_for(20 * GIB, large_row) == 64


def test_auto_off_cuda_is_the_cpu_default():
    assert auto_rows(tiny_model("llama"), 40, 24) == (decode_memory.CPU_ROWS, None)
    assert decode_memory.CPU_ROWS == 256


def test_cuda_rows_come_from_the_free_memory_and_the_row_estimate():
    model = tiny_model("llama")
    per_row = row_bytes(DecoderShape.of(model.config), 4, 40, 24)
    rows, sized_from = planned_rows(model, 300 * per_row, 40, 24, 0.7)
    assert rows == 128  # 210 rows fit in 70%
    assert sized_from.endswith(f"70% planned at {per_row / 2**20:.1f} MiB a row")
    assert planned_rows(model, 300 * per_row, 40, 24, 0.35)[0] == 64  # a judge beside it


def test_a_model_without_attention_heads_gets_the_fixed_rows():
    """A state-space model steered through `layers_path` keeps no keys and values: the
    estimate does not apply, and `auto` falls back to the fixed default, saying so."""
    config = T.MambaConfig(
        vocab_size=96, hidden_size=32, state_size=4, num_hidden_layers=2, intermediate_size=64
    )
    assert DecoderShape.of(config) is None
    model = T.MambaForCausalLM(config)
    rows, sized_from = planned_rows(model, 100 * GIB, 40, 24, 0.7)
    assert rows == decode_memory.CPU_ROWS
    assert "'mamba' gives no attention shape" in sized_from


def test_every_causal_lm_config_in_transformers_sizes_or_declines():
    """`auto` reads any config a user may steer through `layers_path`: per-layer fields
    (which some configs raise on, not return) count at their largest, and a config with
    no attention shape gets None (the fixed rows), never an error."""
    import warnings

    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    declined, sized = [], 0
    for kind in sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                config = T.AutoConfig.for_model(kind)
        except Exception:  # a config that needs arguments to be built at all
            continue
        shape = DecoderShape.of(config)
        if shape is None:
            declined.append(kind)
        else:
            assert row_bytes(shape, 2, 40, 24) > 0, kind
            sized += 1
    assert {"mamba", "rwkv"} <= set(declined) and "llama" not in declined
    assert sized > 150


@pytest.mark.parametrize(
    "config",
    [
        pytest.param(
            T.DeepseekV3Config(
                **_COMMON | dict(num_hidden_layers=2, num_key_value_heads=4),
                moe_intermediate_size=32,
                q_lora_rank=None,
                kv_lora_rank=16,
                qk_nope_head_dim=16,
                qk_rope_head_dim=8,
                v_head_dim=12,
                n_routed_experts=4,
                num_experts_per_tok=2,
                first_k_dense_replace=1,
                n_group=1,
                topk_group=1,
            ),
            id="latent attention",
        ),
        pytest.param(
            T.Lfm2Config(
                **_COMMON | dict(num_hidden_layers=4),
                layer_types=["conv", "full_attention", "conv", "full_attention"],
            ),
            id="convolution hybrid",
        ),
        pytest.param(
            T.JambaConfig(
                **_COMMON | dict(num_hidden_layers=4),
                attn_layer_period=2,
                attn_layer_offset=1,
                expert_layer_period=2,
                expert_layer_offset=1,
                num_experts=2,
                mamba_d_state=4,
            ),
            id="mamba hybrid",
        ),
    ],
)
def test_other_caches_are_sized_as_a_forward_fills_them(config):
    """Outside the loop's architectures (steered through `layers_path`, decoded by HF
    generate): a latent-attention cache and a hybrid's attention layers, as cached."""
    torch.manual_seed(0)
    model = T.AutoModelForCausalLM.from_config(config).eval()
    shape = DecoderShape.of(model.config)
    assert shape.kv_bytes_per_token(4) == _forward_kv_bytes_per_token(model)


def test_compiled_cuda_cache_lengths_come_in_coarse_multiples_so_traits_share_graphs():
    """Each cache length is its own set of compiled graphs on CUDA: two traits whose longest
    questions differ by a few tokens get one length; the room is never short."""
    multiple = decode_memory.CUDA_CACHE_MULTIPLE
    lengths = {decode_memory.cache_length(p, 24, 4, multiple) for p in (41, 50, 57)}
    assert lengths == {128}
    for prompt in (1, 63, 64, 200):
        length = decode_memory.cache_length(prompt, 24, 4, multiple)
        assert length % multiple == 0 and prompt + 24 + 8 <= length < prompt + 24 + 8 + multiple
    assert decode_memory.cache_length(30, 24, 4) == 64  # in 8s elsewhere
