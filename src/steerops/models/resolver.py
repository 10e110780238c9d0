"""Where an architecture keeps its decoder blocks and the modules each block adds back.

One table, tested on a tiny random config of every entry. `attn_out`/`mlp_out` name the
submodule whose output the block adds to the residual stream as it is, so that
residual(L) = residual(L-1) + attn_out(L) + mlp_out(L). For Gemma-2/3 and OLMo-2 that is
the post-norm (post_attention_layernorm / post_feedforward_layernorm), not the raw
attention or MLP output.

On an architecture outside the table, `residual` works once `models.<variant>.layers_path`
names the blocks, but the components need `models.<variant>.attn_path` / `mlp_path`: the
submodule (relative to a block) whose output is added. steerops cannot check that the block
adds it unchanged: Granite, for one, multiplies both by `residual_multiplier` first, so there
`attn_out` would be the output before that factor.
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
    "qwen3": _PLAIN,  # Qwen2's block; its q/k norms are inside self_attn
    "phi3": _PLAIN,
    "gemma": _PLAIN,
    "gemma2": _POST_NORMED,
    "gemma3_text": _POST_NORMED,
    "olmo2": _POST_NORMED,
    "gemma3": ("model.language_model.layers", *_POST_NORMED[1:]),
    "gpt2": ("transformer.h", "attn", "mlp"),
    "gpt_neox": ("gpt_neox.layers", "attention", "mlp"),
}
_KEYS = {"attn_out": "attn_path", "mlp_out": "mlp_path"}


@dataclass(frozen=True)
class ModelLayout:
    model_type: str
    layers_path: str
    layers: torch.nn.ModuleList
    hidden_size: int
    num_layers: int
    attn_name: str | None  # None: unknown for this architecture (no attn_path given)
    mlp_name: str | None
    variant: str = "<variant>"

    def component_module(self, layer: int, component: str) -> torch.nn.Module:
        """The module whose forward output is `component` at `layer`."""
        block = self.layers[layer]
        if component == "residual":
            return block
        if component not in _KEYS:
            raise SteeropsError(
                f"unknown component {component!r} (use one of {', '.join(COMPONENTS)})"
            )
        name = self.attn_name if component == "attn_out" else self.mlp_name
        check_component(self.model_type, component, name, self.variant)
        return block.get_submodule(name)  # type: ignore[arg-type]


def component_paths(
    model_type: str, attn_path: str | None = None, mlp_path: str | None = None
) -> tuple[str | None, str | None]:
    """(attn_out, mlp_out) submodule names: params first, then the table."""
    _, attn, mlp = ARCHITECTURES.get(model_type, (None, None, None))
    return attn_path or attn, mlp_path or mlp


def check_component(model_type: str, component: str, name: str | None, variant: str) -> None:
    """One clear line when `component` cannot be read on this architecture."""
    if component in _KEYS and not name:
        raise SteeropsError(
            f"component {component}: steerops does not know where {model_type!r} adds it to "
            f"the residual stream; set models.{variant}.{_KEYS[component]} to the block "
            "submodule whose output is added (e.g. self_attn / mlp; see docs/internals.md, "
            "components), or use component residual"
        )


def unknown_architecture(model_type: str | None, variant: str) -> SteeropsError:
    return SteeropsError(
        f"unknown architecture {model_type!r}: set models.{variant}.layers_path in "
        "params.yaml to the dotted path of its decoder blocks (e.g. model.layers)"
    )


def resolve_layout(
    model: torch.nn.Module,
    layers_path: str | None = None,
    variant: str = "<variant>",
    attn_path: str | None = None,
    mlp_path: str | None = None,
) -> ModelLayout:
    """Find the decoder blocks of `model`; `layers_path`, `attn_path` and `mlp_path`
    (params) override the table."""
    config: Any = model.config
    model_type = getattr(config, "model_type", type(model).__name__)
    path = layers_path or ARCHITECTURES.get(model_type, (None,))[0]
    if path is None:
        raise unknown_architecture(model_type, variant)
    found = _first_submodule(model, _candidates(path))
    if found is None:
        raise SteeropsError(
            f"models.{variant}.layers_path: {type(model).__name__} has no submodule {path!r}"
        )
    path, layers = found
    if not isinstance(layers, torch.nn.ModuleList):
        raise SteeropsError(f"models.{variant}.layers_path: {path!r} is not a list of blocks")
    attn_name, mlp_name = component_paths(model_type, attn_path, mlp_path)
    for key, name in (("attn_path", attn_path), ("mlp_path", mlp_path)):
        if name and _first_submodule(layers[0], [name]) is None:
            raise SteeropsError(
                f"models.{variant}.{key}: block {type(layers[0]).__name__} has no submodule "
                f"{name!r}"
            )
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    hidden = getattr(text_config, "hidden_size", None) or getattr(text_config, "n_embd", None)
    if hidden is None:
        raise SteeropsError(f"cannot read the hidden size of {model_type!r} from its config")
    return ModelLayout(
        model_type, path, layers, int(hidden), len(layers), attn_name, mlp_name, variant
    )


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


def module_device(module: torch.nn.Module, root: torch.nn.Module | None = None) -> torch.device:
    """Where `module` computes: its parameters' device, or for a module offloaded by
    accelerate (parameters on `meta`, loaded at each call) the device its offload hook
    runs it on (found on it or its nearest ancestor in `root`)."""
    param = next(module.parameters(), None)
    if param is not None and param.device.type != "meta":
        return param.device
    chain = [module]
    if root is not None:  # ancestors, nearest first
        names = {id(m): n for n, m in root.named_modules()}
        name = names.get(id(module), "")
        while name:
            name = name.rpartition(".")[0]
            chain.append(root.get_submodule(name))
    for m in chain:
        device = getattr(getattr(m, "_hf_hook", None), "execution_device", None)
        if device is not None:
            return torch.device(device)
    return torch.device("cpu")
