"""The `norm` coefficient unit: the mean per-token residual norm at a layer.

    token_norm(L) = mean over kept tokens t of || h_L(t) ||_2

Kept tokens are every prompt token of every example (the chat template's tokens included)
except each sequence's first token and massive-activation tokens. A token is massive at
layer L when its largest |x| exceeds `threshold` and `ratio` x the median |x| over its
sequence's prompt tokens and all dims (the calibration rule, `calibration.massive_threshold`
/ `massive_ratio`, with the sequence's prompt as the reference population so the unit does
not depend on batching).

Why per token and over the prompt: a pooled window's mean is shorter than its tokens
(averaging cancels), so a unit read off the pooled rows meant a different strength at
`response[:5]` than at `prompt[-1]`; the prompt tokens are the same for every position of
a trait. Why massive tokens are left out: on models with massive activations the first
token's norm is 100-200x an ordinary token's and would set the unit alone. Why the first
token always: it is the attention sink, and below (and after) the layers where the rule
calls it massive its norm is still 5-16x an ordinary token's (SmolLM2's blocks 1-8 and 28,
where it raised the unit by 7-26%).
"""

from __future__ import annotations

import torch

# Per example and layer: sum of kept token norms, kept tokens, massive prompt tokens, and
# whether the pooled window holds a massive token (0/1).
FIELDS = ("norm_sum", "kept", "massive", "window_massive")


def token_norm_stats(
    hidden: torch.Tensor,
    prompt: torch.Tensor,
    window: torch.Tensor,
    threshold: float,
    ratio: float,
) -> torch.Tensor:
    """[batch, 4] float64 (`FIELDS`) from `hidden` [batch, seq, hid] and boolean masks
    [batch, seq] of each row's prompt tokens and pooled window; on `hidden`'s device, with
    no host synchronisation (the caller copies it to the host with the pooled rows)."""
    wide = torch.float32 if hidden.device.type == "mps" else torch.float64  # mps: no float64
    norms = hidden.float().norm(dim=-1)  # [batch, seq]; before `magnitude`, one copy at a time
    magnitude = hidden.abs()  # exact in the hidden states' dtype: half the bytes of fp32
    peak = magnitude.amax(-1).float()  # [batch, seq]
    median = prompt_median(magnitude, prompt).float()
    massive = (peak > threshold) & (peak > ratio * median[:, None])
    first = prompt & (prompt.cumsum(-1) == 1)  # each row's first prompt token, either padding
    kept = prompt & ~massive & ~first
    # where, not a product: a non-finite value at a padding position must not reach the sum
    norm_sum = torch.where(kept, norms.to(wide), 0.0).sum(-1)
    return torch.stack(
        [
            norm_sum,
            kept.sum(-1).to(wide),
            (prompt & massive).sum(-1).to(wide),
            (window & massive).any(-1).to(wide),
        ],
        dim=1,
    )


def prompt_median(magnitude: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
    """[batch]: each row's lower median (numpy's sorted[(n - 1) // 2]) of `magnitude`
    [batch, seq, hid] >= 0 over its `prompt` tokens and all dims, NaNs left out; NaN for a
    row without any. On CUDA by bisection (a sort of every prompt value took 5.6 ms per layer
    of a 64 x 256 x 2560 batch on an H200, a third of extraction), elsewhere by nanmedian's
    sort (faster on a CPU)."""
    if magnitude.device.type == "cuda":
        return bisected_median(magnitude, prompt)
    # sorted in float32 (the same values), which every backend's nanmedian takes
    masked = magnitude.float().masked_fill(~prompt[..., None], float("nan")).flatten(1)
    return masked.nanmedian(-1).values.to(magnitude.dtype)


# Non-negative floats order as their bit patterns read as signed integers; per dtype: that
# integer type, the pattern of +inf (the largest non-NaN value) and a pattern above it.
_BITS = {
    torch.bfloat16: (torch.int16, 0x7F80, 0x7FFF),
    torch.float16: (torch.int16, 0x7C00, 0x7FFF),
    torch.float32: (torch.int32, 0x7F800000, 0x7FFFFFFF),
}


def bisected_median(magnitude: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
    """`prompt_median` by bisection on the values' bit patterns: a fixed number of counting
    passes (15 for 16-bit floats, 31 for float32), no sort and no host synchronisation."""
    if magnitude.dtype not in _BITS:
        magnitude = magnitude.float()
    int_type, inf, above = _BITS[magnitude.dtype]
    bits = magnitude.contiguous().view(int_type)
    valid = prompt[..., None] & ~magnitude.isnan()  # NaNs of either sign are left out
    bits = torch.where(valid, bits, above).flatten(1)  # the rest count above every value
    # the lower median is the smallest v with at least `rank` values <= v
    rank = torch.div(valid.flatten(1).sum(-1) + 1, 2, rounding_mode="floor")
    lo = torch.full_like(rank, -1)  # fewer than `rank` values <= lo
    hi = torch.full_like(rank, inf)  # at least `rank` values <= hi (for rows with any)
    for _ in range(int(inf).bit_length()):
        mid = (lo + hi) // 2
        enough = (bits <= mid[:, None].to(int_type)).sum(-1) >= rank
        hi, lo = torch.where(enough, mid, hi), torch.where(enough, lo, mid)
    median = hi.to(int_type).view(magnitude.dtype)
    return torch.where(rank > 0, median, float("nan"))


def summarize(totals: torch.Tensor) -> dict:
    """Per-layer metadata from the `FIELDS` column sums over every example."""
    norm_sum, kept, massive, window_massive = (float(v) for v in totals)
    return {
        "token_norm": round(norm_sum / kept, 6) if kept else None,
        "tokens": int(kept),
        "massive_tokens": int(massive),
        "window_massive": int(window_massive),
    }
