"""Tiny randomly initialised configs of every architecture the resolver supports."""

from __future__ import annotations

import torch
import transformers as T

VOCAB = 96
_COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)


def _gemma3_multimodal() -> T.PretrainedConfig:
    text = T.Gemma3TextConfig(**_COMMON, head_dim=8)
    vision = T.SiglipVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=28,
        patch_size=14,
    )
    return T.Gemma3Config(
        text_config=text,
        vision_config=vision,
        mm_tokens_per_image=4,
        image_token_index=VOCAB - 1,
        boi_token_index=VOCAB - 3,
        eoi_token_index=VOCAB - 2,
    )


CONFIGS = {
    "llama": lambda: T.LlamaConfig(**_COMMON),
    "mistral": lambda: T.MistralConfig(**_COMMON),
    "qwen2": lambda: T.Qwen2Config(**_COMMON),
    "gemma2": lambda: T.Gemma2Config(**_COMMON, head_dim=8),
    "gemma3_text": lambda: T.Gemma3TextConfig(**_COMMON, head_dim=8),
    "gemma3": _gemma3_multimodal,
    "gpt2": lambda: T.GPT2Config(
        vocab_size=VOCAB,
        n_embd=32,
        n_layer=3,
        n_head=4,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    ),
    "gpt_neox": lambda: T.GPTNeoXConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    ),
    "phi3": lambda: T.Phi3Config(**_COMMON),
    "olmo2": lambda: T.Olmo2Config(**_COMMON),
}

ARCHS = sorted(CONFIGS)


def tiny_model(arch: str, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """A random-weight model of `arch`, in eval mode, with 3 decoder blocks and hidden 32."""
    torch.manual_seed(seed)
    config = CONFIGS[arch]()
    if arch == "gemma3":
        model = T.Gemma3ForConditionalGeneration(config)
    else:
        model = T.AutoModelForCausalLM.from_config(config)
    return model.to(dtype).eval()
