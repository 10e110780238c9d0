"""Tiny randomly initialised configs of every architecture the resolver supports, and of a
few it does not list (`UNLISTED`), which work only once params name their modules."""

from __future__ import annotations

import torch
import transformers as T
from tokenizers import Tokenizer, models, pre_tokenizers

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
    "qwen3": lambda: T.Qwen3Config(**_COMMON, head_dim=8),
    "gemma": lambda: T.GemmaConfig(**_COMMON, head_dim=8),
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

_SMALL = dict(vocab_size=VOCAB, pad_token_id=0, bos_token_id=1, eos_token_id=2)
# name -> (config, the params a user gives: layers_path, attn_path, mlp_path)
UNLISTED = {
    # Granite scales attention and MLP outputs by residual_multiplier before adding them.
    "granite": (
        lambda: T.GraniteConfig(**_COMMON, residual_multiplier=0.5),
        ("model.layers", "self_attn", "mlp"),
    ),
    # Falcon-7B style: attention and MLP in parallel on one input, both added.
    "falcon": (
        lambda: T.FalconConfig(
            **_SMALL, hidden_size=32, num_hidden_layers=3, num_attention_heads=4
        ),
        ("transformer.h", "self_attention", "mlp"),
    ),
    "gptj": (
        lambda: T.GPTJConfig(**_SMALL, n_embd=32, n_layer=3, n_head=4, rotary_dim=4),
        ("transformer.h", "attn", "mlp"),
    ),
    "opt": (
        lambda: T.OPTConfig(
            **_SMALL,
            hidden_size=32,
            num_hidden_layers=3,
            num_attention_heads=4,
            ffn_dim=64,
            word_embed_proj_dim=32,
        ),
        ("model.decoder.layers", "self_attn", "fc2"),
    ),
}


def tiny_model(arch: str, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """A random-weight model of `arch`, in eval mode, with 3 decoder blocks and hidden 32."""
    torch.manual_seed(seed)
    config = CONFIGS[arch]() if arch in CONFIGS else UNLISTED[arch][0]()
    if arch == "gemma3":
        model = T.Gemma3ForConditionalGeneration(config)
    else:
        model = T.AutoModelForCausalLM.from_config(config)
    return model.to(dtype).eval()


DIGIT_SPECIAL = ["<pad>", "<bos>", "<eos>", "<unk>", "<|user|>", "<|assistant|>"]
DIGIT_WORDS = [
    "rate",
    "coherence",
    "of",
    "for",
    "how",
    "do",
    "i",
    "bake",
    "bread",
    "?",
    "sure",
    "sorry",
    "no",
    "help",
    "first",
    "get",
    "flour",
    ":",
    ".",
]
DIGIT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ '<|' + m['role'] + '|> ' + m['content']"
    " + ' ' + eos_token + ' ' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def digit_tokenizer(digits: bool = True, merge_ten: bool = True) -> T.PreTrainedTokenizerFast:
    """A word-level tokenizer that spells integers with digit tokens and the merge "10"
    (100 = "10" + "0"; without `merge_ten`, "1" + "0" + "0"), with a chat template;
    `digits` off, it cannot spell them."""
    numbers = [str(i) for i in range(10)] + (["10"] if merge_ten else []) if digits else []
    vocab = {t: i for i, t in enumerate(DIGIT_SPECIAL + numbers + DIGIT_WORDS)}
    merges = [("1", "0")] if digits and merge_ten else []
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Digits(individual_digits=False)]
    )
    tok.add_special_tokens(DIGIT_SPECIAL)
    fast = T.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        pad_token="<pad>",
        padding_side="left",
    )
    fast.chat_template = DIGIT_TEMPLATE
    return fast
