"""Load a model variant from params: hub id or local path, dtype, placement, chat template.

Padding side is set explicitly: left for anything that generates (new tokens line up at the
right edge) and is passed by callers that need another side. Weights load from safetensors
only: a pickle (`pytorch_model.bin`) can run code when read, so a folder that has nothing
else is refused.
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from safetensors import SafetensorError, safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from steerops.errors import SteeropsError
from steerops.models.chat_template import chat_template, folder_chat_template
from steerops.models.fingerprint import model_fingerprint
from steerops.models.hub import hub_snapshot
from steerops.models.placement import check_placement
from steerops.models.resolver import (
    ARCHITECTURES,
    ModelLayout,
    module_device,
    resolve_layout,
    unknown_architecture,
)
from steerops.models.text_only import KEY_MAPPING, text_config, text_model_class

__all__ = [
    "LoadedModel",
    "ModelShape",
    "check_variant",
    "load_model",
    "load_tokenizer",
    "model_fingerprint",
    "model_shape",
    "model_source",
]

if TYPE_CHECKING:  # annotations only: extraction and its bench run without pydantic
    from steerops.config import ModelVariant, Params

log = logging.getLogger(__name__)
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class LoadedModel:
    name: str  # variant name in params
    spec: ModelVariant
    source: str  # resolved local path or hub id
    model: Any  # a transformers PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    layout: ModelLayout

    @property
    def device(self) -> torch.device:
        return module_device(self.model)

    @property
    def input_device(self) -> torch.device:
        """Where input ids go (the embedding's device, also under a device_map)."""
        return module_device(self.model.get_input_embeddings(), self.model)


def model_source(params: Params, variant: str) -> str:
    """The local path (resolved against params) or hub id a variant loads from (a hub id
    that is neither in the local cache nor downloadable is refused: `hub`)."""
    return _source(params, variant).name


class _Source(NamedTuple):
    name: str  # model_source: the local path or hub id
    path: str  # what every transformers read opens (config, tokenizer, weights)
    kwargs: dict[str, Any]  # and the keyword arguments each read takes


def _source(params: Params, variant: str) -> _Source:
    """Where a variant is read from: a hub id whose snapshot is complete in the cache is
    read from that folder, so no read asks the hub (as a hub id, even with
    `local_files_only`, huggingface_hub reaches for the hub while building its headers)."""
    spec = params.variant(variant)
    kwargs: dict[str, Any] = {"trust_remote_code": spec.trust_remote_code}
    local = params.path(spec.id)
    if local.exists():
        if spec.revision:  # a folder holds one version: loading it would ignore the ask
            raise SteeropsError(
                f"models.{variant}.revision: {spec.revision!r} cannot be read from a local "
                f"folder ({local}); remove it, or give the hub id"
            )
        return _Source(str(local), str(local), kwargs)
    if spec.id.startswith((".", "/", "~")) or not _HUB_ID.match(spec.id):
        raise SteeropsError(f"models.{variant}.id: model not found: {local}")
    snapshot = hub_snapshot(spec.id, spec.revision, local, variant)
    if snapshot is not None:  # the folder is the revision already
        return _Source(spec.id, str(snapshot), kwargs)
    return _Source(spec.id, spec.id, {**kwargs, "revision": spec.revision})


@dataclass(frozen=True)
class ModelShape:
    """What a variant's config file says, read without its weights. None: the config
    could not tell (a hub id offline, an unknown architecture, a custom `layers_path`);
    the checks after loading still run."""

    num_layers: int | None
    hidden_size: int | None
    model_type: str | None
    context: int | None = None  # max_position_embeddings: positions a sequence may use


def check_new_tokens(shape: ModelShape, n: int, key: str) -> None:
    """`n` new tokens must fit in the model's context, where its config tells it: past it a
    static cache would not fit and positions have no meaning (a typo like `[:100000]` in a
    position would otherwise decode for hours)."""
    if shape.context is not None and n >= shape.context:
        raise SteeropsError(
            f"{key}: {n} new tokens do not fit in the model's context of {shape.context} "
            "positions (max_position_embeddings)"
        )


def model_shape(params: Params, variant: str) -> ModelShape:
    """The decoder's layer count and width and the model type, from the config file only,
    so a stage can check layers against them before it loads weights or opens a run."""
    from transformers import AutoConfig

    spec = params.variant(variant)
    source = _source(params, variant)  # a missing local folder fails here
    try:
        config = AutoConfig.from_pretrained(source.path, **source.kwargs)
    except (OSError, ValueError):
        return ModelShape(None, None, None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    # A custom layers_path picks its own module list, which the config may not count.
    layers = None if spec.layers_path else getattr(text, "num_hidden_layers", None)
    return ModelShape(
        layers,
        getattr(text, "hidden_size", None),
        getattr(config, "model_type", None),
        getattr(text, "max_position_embeddings", None),
    )


def generation_config(params: Params, variant: str) -> Any:
    """The generation settings a variant's checkpoint ships, read without its weights as
    loading reads them: its generation_config.json, else those its config file holds
    (transformers' defaults where neither is readable)."""
    from transformers import GenerationConfig

    source = _source(params, variant)
    revision = {k: v for k, v in source.kwargs.items() if k == "revision"}
    try:
        return GenerationConfig.from_pretrained(source.path, **revision)
    except OSError:  # no generation_config.json: loading reads config.json's own settings
        pass
    try:  # (transformers 5's AutoConfig drops them, so read the file as loading does)
        return GenerationConfig.from_pretrained(
            source.path, config_file_name="config.json", _from_model_config=True, **revision
        )
    except (OSError, ValueError, TypeError, AttributeError):  # a config.json of another shape
        return GenerationConfig()


def load_model(
    params: Params, variant: str, padding_side: str = "left", reuse: LoadedModel | None = None
) -> LoadedModel:
    """Load model variant `variant` of params (weights, tokenizer, layout). `reuse`: a model
    loaded before, returned as it is when it is this variant with this padding side, so a
    judge reading the steered model does not hold a second copy."""
    if reuse and reuse.name == variant and reuse.tokenizer.padding_side == padding_side:
        return reuse
    spec = params.variant(variant)
    source, tokenizer = checked_variant(params, variant, padding_side)
    kwargs: dict = {**source.kwargs, "use_safetensors": True}
    if spec.dtype != "auto":
        kwargs["dtype"] = _DTYPES[spec.dtype]
    else:
        kwargs["dtype"] = "auto"
    if spec.device_map is not None:
        kwargs["device_map"] = spec.device_map
        if spec.offload_folder:
            kwargs["offload_folder"] = str(params.path(spec.offload_folder))
    loader: Any = AutoModelForCausalLM
    # module paths and a map of modules to devices name the whole model's modules
    whole = spec.layers_path or spec.attn_path or spec.mlp_path
    if not (whole or isinstance(spec.device_map, dict)):
        text = _text_only(source)
        if text is not None:  # a multimodal checkpoint: its text decoder alone
            loader = text_model_class(text)
            kwargs |= {"config": text, "key_mapping": KEY_MAPPING}
    # transformers' per-load progress bar would add a line to every one-line error path
    hf_logging.disable_progress_bar()
    try:
        loaded: Any = loader.from_pretrained(source.path, output_loading_info=True, **kwargs)
    except (OSError, ValueError, SafetensorError, RuntimeError) as exc:
        # missing, unknown or damaged files; a tensor whose shape the config contradicts
        raise SteeropsError(
            f"models.{variant}.id: cannot load {source.name!r}: {_first_line(exc)}"
        ) from None
    model: Any
    model, info = loaded
    missing = list(info.get("missing_keys") or [])
    if missing:  # transformers would initialise them at random and go on
        raise SteeropsError(
            f"models.{variant}.id: the weights of {source.name!r} lack {len(missing)} of the "
            f"model's tensors ({', '.join(sorted(missing)[:3])}"
            f"{', ...' if len(missing) > 3 else ''}): an incomplete or damaged checkpoint"
        )
    if spec.device_map is None:
        model.to(spec.device or "cpu")
    model.eval()
    model.requires_grad_(False)
    layout = resolve_layout(model, spec.layers_path, variant, spec.attn_path, spec.mlp_path)
    return LoadedModel(variant, spec, source.name, model, tokenizer, layout)


def _text_only(source: _Source) -> Any | None:
    """`text_only.text_config` of the source's config (None where it is unreadable: the
    load that follows says why)."""
    from transformers import AutoConfig

    try:
        return text_config(AutoConfig.from_pretrained(source.path, **source.kwargs))
    except (OSError, ValueError):
        return None


def check_variant(params: Params, variant: str) -> str:
    """What `load_model` checks before it reads anything: a known variant, a usable device
    or device_map, its source (a local folder or a hub id), safetensors weights, a chat
    template that compiles, a readable config and tokenizer, module paths that resolve;
    returns the source.
    Cheap, so a stage calls it before opening its MLflow run (no FAILED run for a typo)."""
    return checked_variant(params, variant)[0].name


def checked_variant(params: Params, variant: str, padding_side: str = "left"):
    """(source, tokenizer) after `check_variant`'s checks: `load_model` keeps the tokenizer
    they loaded instead of loading it twice."""
    check_placement(params.variant(variant), variant)
    source = _source(params, variant)
    _refuse_pickles(source.path, variant)  # a cached snapshot's weights too
    return source, _check_readable(params, variant, source, padding_side)


def _check_readable(params: Params, variant: str, source: _Source, padding_side: str):
    """The tokenizer (with its chat template from params, checked to compile), after the
    config and tokenizer read (a folder without tokenizer files, a damaged config are one
    line before the run opens, not a FAILED run), and `layers_path` / `attn_path` /
    `mlp_path`, when params set them, resolved on the model built from its config on the
    meta device (no weights, no memory)."""
    from transformers import AutoConfig

    spec = params.variant(variant)
    try:
        config = AutoConfig.from_pretrained(source.path, **source.kwargs)
    except (OSError, ValueError) as exc:
        raise SteeropsError(
            f"models.{variant}.id: cannot read the model's config: {_first_line(exc)}"
        ) from None
    _check_causal_lm(config, variant, source.name)
    tokenizer = load_tokenizer(params, variant, padding_side=padding_side)
    if not (spec.layers_path or spec.attn_path or spec.mlp_path):
        model_type = getattr(config, "model_type", None)
        if model_type not in ARCHITECTURES:  # before the weights load and a run opens
            raise unknown_architecture(model_type, variant)
        return tokenizer
    try:
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(
                config, trust_remote_code=spec.trust_remote_code
            )
    except (OSError, ValueError):  # not a causal LM transformers builds: loading will say
        return tokenizer
    resolve_layout(skeleton, spec.layers_path, variant, spec.attn_path, spec.mlp_path)
    return tokenizer


def _check_causal_lm(config: Any, variant: str, name: str) -> None:
    """A checkpoint AutoModelForCausalLM has no class for (LLaVA, an encoder-decoder) is one
    line saying so, not an `unknown architecture` that sends the user to `layers_path`.
    Code from the model's repository (`auto_map`) names its own class: not checked."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    if type(config) in MODEL_FOR_CAUSAL_LM_MAPPING:
        return
    if "AutoModelForCausalLM" in (getattr(config, "auto_map", None) or {}):
        return
    classes = ", ".join(getattr(config, "architectures", None) or [])
    what = type(config).__name__ + (f", for {classes}" if classes else "")
    raise SteeropsError(
        f"models.{variant}.id: {name!r} is not a causal LM that AutoModelForCausalLM can load "
        f"({what}); steerops steers causal language models only, whatever layers_path says"
    )


def load_tokenizer(params: Params, variant: str, padding_side: str = "left"):
    """The variant's tokenizer, its chat template from params first, then its own, then one
    in the model's folder (`folder_chat_template`); with none, prompts are the bare text,
    which a warning line says."""
    source = _source(params, variant)
    try:
        tok = AutoTokenizer.from_pretrained(source.path, **source.kwargs)
    except (OSError, ValueError) as exc:  # missing or unreadable tokenizer files
        folder = Path(source.path)
        names = ("tokenizer*", "vocab*", "merges.txt", "*.model", "*.tiktoken")
        if folder.is_dir() and not any(any(folder.glob(n)) for n in names):
            raise SteeropsError(
                f"models.{variant}.id: no tokenizer in {folder} (tokenizer.json, or "
                "tokenizer_config.json with its vocabulary files)"
            ) from None
        # transformers' message runs over several lines ("from one of: (1) ..."): one line
        raise SteeropsError(
            f"models.{variant}.id: cannot load tokenizer: {' '.join(str(exc).split())}"
        ) from None
    tok.padding_side = padding_side
    if tok.pad_token_id is None:
        # Common for base models; padded positions are masked, so any id works.
        tok.pad_token = tok.eos_token
    template = chat_template(params, variant)
    if template is None and not tok.chat_template:
        template = folder_chat_template(source.path, source.kwargs.get("revision"))
        if template is None:
            _warn_bare_prompts(variant, source.name)
    if template is not None:
        tok.chat_template = template
    return tok


@functools.cache  # once per process: the check stages and the load both read the tokenizer
def _warn_bare_prompts(variant: str, source: str) -> None:
    log.warning(
        "models.%s: %r has no chat template (not in its tokenizer, no chat_template.jinja / "
        "chat_template.json): prompts are the bare text; an instruction-tuned model's "
        "numbers depend on its template (models.%s.chat_template gives one)",
        variant,
        source,
        variant,
    )


_PICKLES = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def check_model_folder(path: Path, variant: str) -> None:
    """A local model id that exists must be a model folder (its config.json in it)."""
    if path.exists() and not (path / "config.json").is_file():
        raise SteeropsError(
            f"models.{variant}.id: {path} is not a model folder (no config.json in it)"
        )


def _refuse_pickles(source: str, variant: str) -> None:
    """A local folder must have safetensors weights; pickled ones are never read."""
    path = Path(source)
    check_model_folder(path, variant)
    if path.is_dir():
        for weights in sorted(path.glob("*.safetensors")):
            _check_complete(weights, variant)
    if not path.is_dir() or any(path.glob("*.safetensors")):
        return
    pickled = sorted(p.name for pattern in _PICKLES for p in path.glob(pattern))
    if pickled:
        raise SteeropsError(
            f"models.{variant}.id: {path} has only pickled weights ({', '.join(pickled)}); "
            "steerops loads safetensors only (convert them once in a trusted environment)"
        )


def _check_complete(weights: Path, variant: str) -> None:
    """A safetensors file that opens: safetensors checks its header and that its size is
    what the header says (a lazy open reads no weights), so a truncated or foreign file is
    one line before any run opens."""
    try:
        with safe_open(str(weights), framework="pt"):
            pass
    except Exception as exc:  # safetensors' own error type, OSError (a broken link)
        raise SteeropsError(
            f"models.{variant}.id: {weights} is not a complete safetensors file "
            f"({_first_line(exc)}; truncated or damaged?)"
        ) from None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
