"""Multimodal checkpoints load as their text decoder alone: steerops only ever feeds text.

google/gemma-3-4b/12b/27b-it are `Gemma3Config` checkpoints that AutoModelForCausalLM builds
as Gemma3ForConditionalGeneration, SigLIP tower and projector included: 0.42B parameters
(0.78 GiB in bf16) that no steerops stage runs. They load here as the text class of their
`text_config` (Gemma3ForCausalLM), the checkpoint's text weights renamed onto it by
`from_pretrained(key_mapping=...)`; the vision weights are left on disk. Hidden states and
logits are identical (tested on tiny random checkpoints of every key layout below).

Not used when params name module paths (`layers_path`, `attn_path`, `mlp_path`) or give a
`device_map` of module names: those were written against the model AutoModelForCausalLM
builds, which then loads as it does; nor for a pre-quantized checkpoint.
"""

from __future__ import annotations

from typing import Any

# multimodal model_type -> the model_type its text_config must have
TEXT_MODELS = {"gemma3": "gemma3_text"}

# Checkpoint names -> the text class's. The hub's gemma-3-*-it and transformers 5's own saves
# use language_model.model.*; saves by transformers 4.52-4.x model.language_model.*; the
# optional extra model. is a double nesting some 5.x releases wrote.
KEY_MAPPING = {
    r"^language_model\.model\.(?:model\.)?": "model.",
    r"^model\.language_model\.(?:model\.)?": "model.",
    r"^language_model\.lm_head\.": "lm_head.",
}

# left on disk on purpose: not "unexpected" (transformers would print a 400-line report)
VISION_WEIGHTS = {r"(^|\.)vision_tower\.", r"(^|\.)multi_modal_projector\."}


def text_config(config: Any) -> Any | None:
    """The config to load instead of `config` (a copy of its text part), or None to load
    `config` as it is: any model but a listed multimodal one, or one whose text class would
    compute otherwise (Gemma3ForCausalLM applies final_logit_softcapping and a bidirectional
    mask that the multimodal class does not; no Gemma 3 chat checkpoint sets either)."""
    want = TEXT_MODELS.get(str(getattr(config, "model_type", "")))
    text = getattr(config, "text_config", None)
    if want is None or text is None or getattr(config, "vision_config", None) is None:
        return None
    if getattr(config, "quantization_config", None) is not None:
        return None  # its scales and quantized layout are the whole model's
    if getattr(text, "model_type", None) != want:
        return None
    if getattr(text, "final_logit_softcapping", None) is not None:
        return None
    if getattr(text, "use_bidirectional_attention", False):
        return None
    text = text.__class__.from_dict(text.to_dict())  # the caller's config stays as it was
    # the outer config holds these for the whole model: gemma-3-*-it stop on [1, 106]
    text.tie_word_embeddings = getattr(config, "tie_word_embeddings", text.tie_word_embeddings)
    if getattr(config, "dtype", None) is not None:  # what `dtype: auto` loads
        text.dtype = config.dtype
    if getattr(config, "eos_token_id", None) is not None:
        text.eos_token_id = config.eos_token_id
    return text


_CLASSES: dict[str, type] = {}  # one subclass per text config class, as transformers' own


def text_model_class(config: Any) -> type:
    """The causal-LM class of a text config, told that the vision weights it finds in the
    checkpoint are skipped on purpose."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    config_class: Any = type(config)
    if config_class.__name__ not in _CLASSES:
        base: Any = MODEL_FOR_CAUSAL_LM_MAPPING[config_class]
        ignored = set(base._keys_to_ignore_on_load_unexpected or ()) | VISION_WEIGHTS
        attrs = {"_keys_to_ignore_on_load_unexpected": ignored}
        _CLASSES[config_class.__name__] = type(base.__name__, (base,), attrs)
    return _CLASSES[config_class.__name__]
