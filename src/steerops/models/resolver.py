"""Where an architecture keeps its decoder blocks and the modules each block adds back.

One table, tested on a tiny random config of every entry. `attn_out`/`mlp_out` name the
submodule whose output is what the block adds to the residual stream (for Gemma-2/3 and
OLMo-2 that is the post-norm, not the raw attention/MLP output).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from steerops.errors import SteeropsError
from steerops.specs import COMPONENTS

# model_type -> (dotted path of blocks from the top model, attn_out submodule, mlp_out submodule)
_PLAIN = ("model.layers", "self_attn", "mlp")
_POST_NORMED = ("model.layers", "post_attention_layernorm", "post_feedforward_layernorm")
ARCHITECTURES: dict[str, tuple[str, str, str]] = {
    "llama": _PLAIN,
    "mistral": _PLAIN,
    "qwen2": _PLAIN,
    "phi3": _PLAIN,
    "gemma": _PLAIN,
    "gemma2": _POST_NORMED,
    "gemma3_text": _POST_NORMED,
    "olmo2": _POST_NORMED,
    "gemma3": ("model.language_model.layers", *_POST_NORMED[1:]),
    "gpt2": ("transformer.h", "attn", "mlp"),
    "gpt_neox": ("gpt_neox.layers", "attention", "mlp"),
}


@dataclass(frozen=True)
class ModelLayout:
    model_type: str
    layers_path: str
    layers: torch.nn.ModuleList
    hidden_size: int
    num_layers: int
    attn_name: str
    mlp_name: str

    def component_module(self, layer: int, component: str) -> torch.nn.Module:
        """The module whose forward output is `component` at `layer`."""
        block = self.layers[layer]
        if component == "residual":
            return block
        if component == "attn_out":
            return block.get_submodule(self.attn_name)
        if component == "mlp_out":
            return block.get_submodule(self.mlp_name)
        raise SteeropsError(f"unknown component {component!r} (use one of {', '.join(COMPONENTS)})")


def resolve_layout(
    model: torch.nn.Module, layers_path: str | None = None, variant: str = "<variant>"
) -> ModelLayout:
    """Find the decoder blocks of `model`; `layers_path` overrides the table."""
    config: Any = model.config
    model_type = getattr(config, "model_type", type(model).__name__)
    attn_name, mlp_name = "self_attn", "mlp"
    if model_type in ARCHITECTURES:
        path, attn_name, mlp_name = ARCHITECTURES[model_type]
    if layers_path:
        path = layers_path
    elif model_type not in ARCHITECTURES:
        raise SteeropsError(
            f"unknown architecture {model_type!r}: set models.{variant}.layers_path in "
            "params.yaml to the dotted path of its decoder blocks (e.g. model.layers)"
        )
    found = _first_submodule(model, _candidates(path))
    if found is None:
        raise SteeropsError(
            f"models.{variant}.layers_path: {type(model).__name__} has no submodule {path!r}"
        )
    path, layers = found
    if not isinstance(layers, torch.nn.ModuleList):
        raise SteeropsError(f"models.{variant}.layers_path: {path!r} is not a list of blocks")
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    hidden = getattr(text_config, "hidden_size", None) or getattr(text_config, "n_embd", None)
    if hidden is None:
        raise SteeropsError(f"cannot read the hidden size of {model_type!r} from its config")
    return ModelLayout(model_type, path, layers, int(hidden), len(layers), attn_name, mlp_name)


def _candidates(path: str) -> list[str]:
    # Also accept a bare backbone (AutoModel: "layers") and the transformers-4 nesting of
    # multimodal Gemma ("language_model.model.layers").
    out = [path]
    if path.startswith("model.language_model."):
        out.append("language_model.model." + path.removeprefix("model.language_model."))
    _, _, tail = path.partition(".")
    if tail:
        out.append(tail)
    return out


def _first_submodule(
    model: torch.nn.Module, paths: list[str]
) -> tuple[str, torch.nn.Module] | None:
    for path in paths:
        try:
            return path, model.get_submodule(path)
        except AttributeError:
            continue
    return None
