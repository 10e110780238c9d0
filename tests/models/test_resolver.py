"""The architecture table: decoder blocks and components of every supported architecture, on tiny
random models."""

from __future__ import annotations

import pytest
import torch

from steerops.errors import SteeropsError
from steerops.models.resolver import resolve_layout
from tiny import ARCHS, CONFIGS, VOCAB, tiny_model


@pytest.mark.parametrize("arch", ARCHS)
def test_layout_of_every_architecture(arch):
    model = tiny_model(arch)
    layout = resolve_layout(model)
    config = CONFIGS[arch]()
    text = config.get_text_config()
    assert layout.num_layers == 3 == len(layout.layers)
    assert isinstance(layout.layers, torch.nn.ModuleList)
    assert layout.hidden_size == 32 == text.hidden_size
    for i in range(3):
        assert layout.component_module(i, "residual") is layout.layers[i]
        for component in ("attn_out", "mlp_out"):
            module = layout.component_module(i, component)
            assert any(module is m for m in layout.layers[i].modules())
            assert module is not layout.layers[i]


@pytest.mark.parametrize("arch", ARCHS)
def test_components_add_up_to_the_residual_stream(arch):
    """Each block adds exactly attn_out + mlp_out to the residual stream, so the table names
    the right submodules (for Gemma-2/3 and OLMo-2 the post-norms, not the raw outputs)."""
    model = tiny_model(arch)
    layout = resolve_layout(model)
    seen: dict[tuple[int, str], torch.Tensor] = {}
    handles = []
    for layer in range(layout.num_layers):
        for component in ("residual", "attn_out", "mlp_out"):

            def hook(module, args, output, key=(layer, component)):
                seen[key] = (output[0] if isinstance(output, tuple) else output).detach()

            handles.append(layout.component_module(layer, component).register_forward_hook(hook))
    ids = torch.randint(3, VOCAB - 4, (2, 7), generator=torch.Generator().manual_seed(1))
    try:
        with torch.no_grad():
            out = model(input_ids=ids, output_hidden_states=True)
    finally:
        for h in handles:
            h.remove()
    previous = out.hidden_states[0]  # embeddings (scaled, for Gemma)
    for layer in range(layout.num_layers):
        total = previous + seen[(layer, "attn_out")] + seen[(layer, "mlp_out")]
        torch.testing.assert_close(seen[(layer, "residual")], total, rtol=1e-4, atol=1e-5)
        previous = seen[(layer, "residual")]


def test_unknown_architecture_names_the_params_key():
    class Blocks(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = type("Cfg", (), {"model_type": "weird", "hidden_size": 8})()
            self.trunk = torch.nn.Module()
            self.trunk.blocks = torch.nn.ModuleList([torch.nn.Linear(8, 8) for _ in range(2)])

    model = Blocks()
    with pytest.raises(SteeropsError, match=r"models\.base\.layers_path"):
        resolve_layout(model, variant="base")
    with pytest.raises(SteeropsError, match=r"models\.base\.layers_path.*'trunk\.nope'"):
        resolve_layout(model, "trunk.nope", variant="base")
    layout = resolve_layout(model, "trunk.blocks", variant="base")
    assert layout.num_layers == 2 and layout.hidden_size == 8
    assert layout.layers is model.trunk.blocks
