"""How many rows the decode loop runs at once when `steering.max_batch_rows` is `auto`.

On CPU the answer is a fixed 256: there the step is matmul-bound and larger batches gain
little (SmolLM2 went from 1.6x to 1.68x HF generate at 640 rows). On CUDA the step is
bound by launches and memory traffic, so rows are what buy speed (an H200 made 21-22k new
tok/s at 256 rows and 29k at 1,024 on a gemma-3-4b shape), up to what memory holds:
a row's static cache over its whole length, in every slot-count bucket a compiled step
keeps (their sizes halve, so they sum to under twice the largest), plus what a prefill
and a step make per row. The free memory is read once the model is loaded, and only a
share of it is planned, for what the estimate leaves out (compiled graphs' workspace,
fragmentation); a batch that still does not fit is halved (`models.batching`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch

CPU_ROWS = 256
MAX_ROWS = 1024  # the largest slot count measured on a device (docs/benchmarks.md)
FREE_SHARE = 0.7
CUDA_CHECK_EVERY = 4  # decode steps between done-mask reads on CUDA (`decode`)


# On CUDA each cache length compiles and records its own graphs (a minute or more each):
# in these multiples, traits whose questions differ by a few tokens share them
CUDA_CACHE_MULTIPLE = 64


def cache_length(longest_prompt: int, max_new: int, check_every: int, multiple: int = 8) -> int:
    """The static cache's length: the longest prompt, its new tokens and room for the steps
    between two done-mask reads, in `multiple`s (8; CUDA_CACHE_MULTIPLE for compiled graphs
    on CUDA)."""
    return -(-(longest_prompt + max_new + max(2 * check_every, 8)) // multiple) * multiple


@dataclass(frozen=True)
class DecoderShape:
    """What a decode row's memory depends on, read from a model's text config. `kv_layers`:
    the layers that cache keys and values (a hybrid's attention layers, not its
    state-space or convolution ones); `latent`: the width a multi-head latent attention
    layer caches per token (DeepSeek's compressed keys and values and rotary key), None
    for plain keys and values of `kv_heads` x `head_dim` each."""

    layers: int
    kv_heads: int
    head_dim: int
    hidden: int
    intermediate: int
    vocab: int
    kv_layers: int = 0  # 0: every layer
    latent: int | None = None

    @classmethod
    def of(cls, config) -> DecoderShape | None:
        """None for a config without an attention shape (a state-space model, say): its
        cache is not keys and values, and the estimate does not apply. A field given per
        layer counts at its largest."""
        text = config.get_text_config(decoder=True)
        heads, layers, hidden, vocab = (
            _field(text, name)
            for name in ("num_attention_heads", "num_hidden_layers", "hidden_size", "vocab_size")
        )
        if not (heads and layers and hidden and vocab):
            return None
        kinds = _layer_types(text)
        # linear attention keeps a state, not keys and values
        attending = [k for k in kinds if "attention" in k and not k.startswith("linear")]
        if kinds and not attending:
            return None
        latent = _field(text, "kv_lora_rank")
        return cls(
            kv_layers=len(attending),
            latent=latent + (_field(text, "qk_rope_head_dim") or 0) if latent else None,
            layers=layers,
            kv_heads=_field(text, "num_key_value_heads") or heads,
            head_dim=_field(text, "head_dim") or hidden // heads,
            hidden=hidden,
            # GPT-2 names it n_inner, and None means four times the hidden size
            intermediate=_field(text, "intermediate_size") or _field(text, "n_inner") or 4 * hidden,
            vocab=vocab,
        )

    def kv_bytes_per_token(self, element: int) -> int:
        """Keys and values of one token over every layer that caches them."""
        width = self.latent or 2 * self.kv_heads * self.head_dim
        return (self.kv_layers or self.layers) * width * element


def _read(config: Any, name: str) -> Any:
    """`config.name`, None where missing (newer configs raise, not return, for some fields
    they hold per layer)."""
    try:
        return getattr(config, name, None)
    except (AttributeError, RuntimeError, TypeError, ValueError):
        return None


def _field(config: Any, name: str) -> int | None:
    """A positive whole-number field of `config`, the largest where it is given per layer;
    None where it is missing or of another kind."""
    value = _read(config, name)
    values = value if isinstance(value, list | tuple) else [value]
    whole = [v for v in values if isinstance(v, int) and not isinstance(v, bool) and v > 0]
    return max(whole) if whole and len(whole) == len(values) else None


def _layer_types(config: Any) -> list[str]:
    """Each layer's kind where the config lists them ("full_attention", "mamba"...)."""
    kinds = _read(config, "layer_types")
    return [str(k) for k in kinds] if isinstance(kinds, list | tuple) else []


def row_bytes(shape: DecoderShape, element: int, longest_prompt: int, max_new: int) -> int:
    """Device bytes one row of the loop takes at most, on CUDA."""
    kv = shape.kv_bytes_per_token(element)
    cache = kv * cache_length(longest_prompt, max_new, CUDA_CHECK_EVERY, CUDA_CACHE_MULTIPLE)
    # a prefill's keys and values before they are placed, and one block's activations
    prefill = longest_prompt * (kv + (4 * shape.hidden + 2 * shape.intermediate) * element)
    # a step's logits (float32 at most) and the steering buffers every layer reads
    step = 4 * shape.vocab + shape.layers * shape.hidden * element
    return 2 * cache + prefill + step


def rows_for(free_bytes: int, per_row: int, share: float = FREE_SHARE) -> int:
    """The largest power of two up to MAX_ROWS whose rows fit in `share` of `free_bytes`
    (at least 1: a single row that does not fit fails with its own error)."""
    fit = int(share * free_bytes) // max(1, per_row)
    rows = 1
    while rows * 2 <= min(fit, MAX_ROWS):
        rows *= 2
    return rows


def free_device_bytes(device: torch.device) -> int:
    """Bytes a CUDA device can still allocate: free to the driver plus what torch's caching
    allocator holds unused."""
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


def auto_rows(
    model: torch.nn.Module, longest_prompt: int, max_new: int, share: float = FREE_SHARE
) -> tuple[int, str | None]:
    """Rows a decode step for `model` (prompts up to `longest_prompt` tokens, `max_new`
    new ones) planned in `share` of the free memory, and on CUDA what they were sized
    from, in a phrase to print."""
    devices = {p.device for p in model.parameters()}
    if not all(d.type == "cuda" for d in devices):
        return CPU_ROWS, None
    # A model split over devices runs HF generate (the static loop covers one device) and
    # holds a part of every row on each: planned by the tightest device.
    free = min(free_device_bytes(d) for d in devices) * len(devices)
    return planned_rows(model, free, longest_prompt, max_new, share)


def planned_rows(
    model: torch.nn.Module, free: int, longest_prompt: int, max_new: int, share: float
) -> tuple[int, str]:
    """`auto_rows` for `free` device bytes: the rows, and what they were sized from."""
    shape = DecoderShape.of(model.config)
    if shape is None:
        kind = getattr(model.config, "model_type", type(model).__name__)
        return CPU_ROWS, f"{kind!r} gives no attention shape to size a cache by: the fixed default"
    # the cache holds the states the decoder computes, in the embeddings' dtype (a
    # multimodal model's first parameters may be its vision tower's)
    element = cast(Any, model).get_input_embeddings().weight.element_size()
    per_row = row_bytes(shape, element, longest_prompt, max_new)
    rows = rows_for(free, per_row, share)
    return rows, (
        f"{free / 2**30:.1f} GiB free, {share:.0%} planned at {per_row / 2**20:.1f} MiB a row"
    )
