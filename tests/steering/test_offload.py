"""Steering and capture on blocks whose parameters do not tell where the hidden states are:
a block offloaded by accelerate (parameters on `meta`, loaded at each call) and a block with
integer (quantized) weights."""

from __future__ import annotations

import pytest
import torch
import yaml

from steerops.config import load_params
from steerops.extract.engine import extractor_for, pool_batch
from steerops.models.capture import forward_capture
from steerops.models.loading import load_model
from steerops.steering.engine import SteeringTable, generate_steered
from steerops.toy.tokenizer import build_tokenizer
from tiny import tiny_model

PROMPTS = [[1, 5, 9, 14, 22], [1, 7, 8], [1, 11, 12, 13]]
OFFLOADED = {
    "model.embed_tokens": "disk",
    "model.rotary_emb": "cpu",
    "model.layers.0": "cpu",
    "model.layers.1": "disk",
    "model.layers.2": "cpu",
    "model.norm": "cpu",
    "lm_head": "cpu",
}


def _load(tmp_path, device_map):
    spec = {"id": "model", "device": None, "device_map": device_map, "offload_folder": "offload"}
    if device_map is None:
        spec = {"id": "model"}
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump({"models": {"base": spec}, "tracking": {"enabled": False}})
    )
    return load_model(load_params(tmp_path / "params.yaml"), "base")


@pytest.fixture
def models(tmp_path):
    tiny_model("llama").save_pretrained(tmp_path / "model")
    build_tokenizer(["a", "b"]).save_pretrained(tmp_path / "model")
    return _load(tmp_path, None), _load(tmp_path, OFFLOADED)


def _table(hidden: int) -> SteeringTable:
    v = torch.randn(hidden, generator=torch.Generator().manual_seed(3))
    v = v / v.norm()
    return SteeringTable([[(1, v, 6.0)], [], [(1, v, -4.0), (2, v, 3.0)]])


def _steer(loaded, table):
    return generate_steered(
        loaded.model,
        loaded.layout,
        PROMPTS,
        table,
        pad_token_id=0,
        stop_ids=[2],
        max_new_tokens=6,
    )


def test_offloaded_block_steers_like_the_resident_model(models):
    plain, offloaded = models
    block = offloaded.layout.layers[1]
    assert {p.device.type for p in block.parameters()} == {"meta"}  # really offloaded
    assert offloaded.input_device == torch.device("cpu")
    table = _table(plain.layout.hidden_size)
    want = _steer(plain, table)
    assert want != _steer(plain, None)  # the steering changes the tokens
    assert _steer(offloaded, table) == want


@pytest.mark.parametrize("component", ["residual", "attn_out", "mlp_out"])
def test_offloaded_block_is_captured_like_the_resident_model(models, component):
    plain, offloaded = models
    ids = torch.tensor([[1, 5, 9, 14, 22], [0, 0, 1, 7, 8]])
    mask = (ids != 0).long()
    mask[:, 0] = 1
    want = forward_capture(plain.model, plain.layout, ids, mask, [1, 2], component)
    got = forward_capture(
        offloaded.model, offloaded.layout, ids.to(offloaded.input_device), mask, [1, 2], component
    )
    for layer in (1, 2):
        torch.testing.assert_close(got[layer], want[layer], rtol=1e-5, atol=1e-5)
    # and through the extraction engine, which sends ids to the input device
    seqs = [row[row != 0].numpy() for row in ids]
    windows = [range(len(s) - 2, len(s)) for s in seqs]
    pooled = pool_batch(extractor_for(offloaded, "left"), seqs, windows, [1], component)
    expected = pool_batch(extractor_for(plain, "left"), seqs, windows, [1], component)
    torch.testing.assert_close(pooled[1], expected[1], rtol=1e-5, atol=1e-5)


class Int8Linear(torch.nn.Module):
    """A weight-only quantized linear layer: int8 weights and a float scale per row, so the
    block's first parameter is an integer tensor while it computes in float."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        w = linear.weight.detach()
        scale = w.abs().amax(dim=1, keepdim=True) / 127
        self.qweight = torch.nn.Parameter(
            torch.round(w / scale).to(torch.int8), requires_grad=False
        )
        self.scale = torch.nn.Parameter(scale, requires_grad=False)

    def forward(self, x):
        return x @ (self.qweight.to(x.dtype) * self.scale.to(x.dtype)).T


@pytest.mark.parametrize("loop", ["hf", "static"])
def test_bf16_blocks_with_integer_weights_steer_call_after_call(loop):
    """An integer-weight block's hook moves its buffers to the hidden states' dtype inside
    the forward, under inference mode: they must stay writable for the next sub-batch's
    rows and the next call (a tensor made under inference mode cannot be written outside
    it), and each call steers as its own table says."""
    from steerops.models.resolver import resolve_layout

    def quantized():
        model = tiny_model("llama").to(torch.bfloat16)
        for block in model.model.layers:
            block.self_attn.q_proj = Int8Linear(block.self_attn.q_proj)
        return model

    model, alone = quantized(), quantized()
    layout = resolve_layout(model)
    table = _table(layout.hidden_size)
    v = torch.randn(layout.hidden_size, generator=torch.Generator().manual_seed(4))
    v = v / v.norm()
    other = SteeringTable([[(2, v, -5.0)], [(0, v, 4.0)], []])  # leaves layer 1 alone
    kwargs = dict(pad_token_id=0, stop_ids=[2], max_new_tokens=6, max_batch_rows=2)
    if loop == "static":  # a quantized model is HF's: the loop's kept buffers forced on it
        kwargs |= dict(loop="static")
    want = [
        generate_steered(alone, resolve_layout(alone), PROMPTS, t, **kwargs) for t in (table, other)
    ]
    got = [generate_steered(model, layout, PROMPTS, t, **kwargs) for t in (table, other)]
    assert got == want and want[0] != want[1]


def test_block_with_integer_weights_gets_float_steering(tmp_path):
    model = tiny_model("llama")
    for block in model.model.layers:
        block.self_attn.q_proj = Int8Linear(block.self_attn.q_proj)
    assert next(model.model.layers[1].parameters()).dtype == torch.int8
    from steerops.models.resolver import resolve_layout

    layout = resolve_layout(model)
    table = _table(layout.hidden_size)
    got = generate_steered(
        model, layout, PROMPTS, table, pad_token_id=0, stop_ids=[2], max_new_tokens=6
    )
    # Reference: the same additions by a plain forward hook, one prompt at a time.
    want = []
    for prompt, additions in zip(PROMPTS, _rows(table), strict=True):
        handles = [
            layout.layers[layer].register_forward_hook(
                lambda m, a, out, add=add: (
                    (out[0] + add, *out[1:]) if isinstance(out, tuple) else out + add
                )
            )
            for layer, add in additions.items()
        ]
        try:
            with torch.inference_mode():
                out = model.generate(
                    input_ids=torch.tensor([prompt]),
                    max_new_tokens=6,
                    do_sample=False,
                    pad_token_id=0,
                    eos_token_id=[2],
                )
        finally:
            for h in handles:
                h.remove()
        new = out[0, len(prompt) :].tolist()
        want.append(new[: new.index(2)] if 2 in new else new)
    assert got == want


def _rows(table: SteeringTable) -> list[dict[int, torch.Tensor]]:
    """Each row's summed addition per layer, from the table's own index and weights."""
    rows: list[dict[int, torch.Tensor]] = [{} for _ in range(table.n_rows)]
    for layer in table.layers:
        for r in range(table.n_rows):
            add = sum(
                float(w) * table.vectors[layer][int(i)]
                for i, w in zip(table.index[layer][r], table.weight[layer][r], strict=True)
                if float(w) != 0
            )
            if isinstance(add, torch.Tensor):
                rows[r][layer] = add
    return rows
