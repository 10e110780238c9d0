"""Load a model variant from params: hub id or local path, dtype, placement, chat template.

Padding side is set explicitly: left for anything that generates (new tokens line up at the
right edge) and is passed by callers that need another side.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from steerops.errors import SteeropsError
from steerops.models.resolver import ModelLayout, resolve_layout

if TYPE_CHECKING:  # annotations only: extraction and its bench run without pydantic
    from steerops.config import ModelVariant, Params

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
        return next(self.model.parameters()).device

    @property
    def input_device(self) -> torch.device:
        """Where input ids go (the embedding's device, also under a device_map)."""
        return self.model.get_input_embeddings().weight.device


def model_source(params: Params, variant: str) -> str:
    """The local path (resolved against params) or hub id a variant loads from."""
    spec = params.variant(variant)
    local = params.path(spec.id)
    if local.exists():
        return str(local)
    if spec.id.startswith((".", "/", "~")) or not _HUB_ID.match(spec.id):
        raise SteeropsError(f"models.{variant}.id: model not found: {local}")
    return spec.id


def model_fingerprint(source: str) -> str:
    """Identify a local model's weights ("hub" for a hub id, identified by id and revision).

    Small folders (the toy, test models) are hashed by content; large ones by file names,
    sizes and modification times, so hashing never reads gigabytes.
    """
    from steerops.io import file_md5, text_md5

    path = Path(source)
    if not path.is_dir():
        return "hub"
    files = sorted(p for p in path.rglob("*") if p.is_file())
    listing: list[tuple]
    if sum(p.stat().st_size for p in files) <= 256 << 20:
        listing = [(p.relative_to(path).as_posix(), file_md5(p)) for p in files]
    else:
        listing = [
            (p.relative_to(path).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in files
        ]
    return text_md5(repr(listing))


def load_model(params: Params, variant: str, padding_side: str = "left") -> LoadedModel:
    spec = params.variant(variant)
    source = model_source(params, variant)
    tokenizer = load_tokenizer(params, variant, padding_side=padding_side)
    kwargs: dict = {"revision": spec.revision, "trust_remote_code": spec.trust_remote_code}
    if spec.dtype != "auto":
        kwargs["dtype"] = _DTYPES[spec.dtype]
    else:
        kwargs["dtype"] = "auto"
    if spec.device_map is not None:
        kwargs["device_map"] = spec.device_map
    # transformers' per-load progress bar would add a line to every one-line error path
    hf_logging.disable_progress_bar()
    try:
        model: Any = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except OSError as exc:
        raise SteeropsError(
            f"models.{variant}.id: cannot load {source!r}: {_first_line(exc)}"
        ) from None
    if spec.device_map is None:
        model.to(spec.device or "cpu")
    model.eval()
    model.requires_grad_(False)
    layout = resolve_layout(model, spec.layers_path, variant)
    return LoadedModel(variant, spec, source, model, tokenizer, layout)


def load_tokenizer(params: Params, variant: str, padding_side: str = "left"):
    spec = params.variant(variant)
    source = model_source(params, variant)
    try:
        tok = AutoTokenizer.from_pretrained(
            source, revision=spec.revision, trust_remote_code=spec.trust_remote_code
        )
    except OSError as exc:
        raise SteeropsError(
            f"models.{variant}.id: cannot load tokenizer: {_first_line(exc)}"
        ) from None
    tok.padding_side = padding_side
    if tok.pad_token_id is None:
        # Common for base models; padded positions are masked, so any id works.
        tok.pad_token = tok.eos_token
    if spec.chat_template:
        template = spec.chat_template
        path = params.path(template)
        if len(template) < 4096 and "{" not in template:
            if not path.is_file():
                raise SteeropsError(f"models.{variant}.chat_template: file not found: {path}")
            template = path.read_text(encoding="utf-8")
        tok.chat_template = template
    return tok


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
