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

The check beside it, `example_median`: each example's median kept-token norm, and the median
of those over the examples. A token the rule keeps but far above the others and recurring
(a template token just under the massive bar) raises the mean and not this; the vectors
stage warns when the unit exceeds it by `UNIT_SKEW` (`steerops.vectors.warnings`). On
SmolLM2's refusal activations the unit is 0.98-1.03x its check at blocks 2-20, 1.06x at block
1 and 1.13x at block 0.
"""

from __future__ import annotations

import torch

# Per example and layer: sum of kept token norms, kept tokens, massive prompt tokens,
# whether the pooled window holds a massive token (0/1), and the lower median of the kept
# token norms (NaN when none is kept).
FIELDS = ("norm_sum", "kept", "massive", "window_massive", "norm_median")
SUMMED = 4  # the leading FIELDS a layer's summary adds over examples


def token_norm_stats(
    hidden: torch.Tensor,
    prompt: torch.Tensor,
    window: torch.Tensor,
    threshold: float,
    ratio: float,
) -> torch.Tensor:
    """[batch, 5] float64 (`FIELDS`) from `hidden` [batch, seq, hid] and boolean masks
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
    median = norms.masked_fill(~kept, float("nan")).nanmedian(-1).values
    return torch.stack(
        [
            norm_sum,
            kept.sum(-1).to(wide),
            (prompt & massive).sum(-1).to(wide),
            (window & massive).any(-1).to(wide),
            median.to(wide),
        ],
        dim=1,
    )


def prompt_median(magnitude: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
    """[batch]: each row's lower median (numpy's sorted[(n - 1) // 2]) of `magnitude`
    [batch, seq, hid] >= 0 over its `prompt` tokens and all dims, NaNs left out; NaN for a
    row without any. By nanmedian's sort, which on an H200 beat an exact bisection and an
    exact count of bit patterns (3.0 against 5.8 and 12.6 ms per layer of a 64 x 256 x 2560
    bf16 batch, bench/token_norm.py), as on this project's CPUs at extraction's shapes."""
    # sorted in the values' own dtype on CUDA (half the bytes of float32), elsewhere in
    # float32 (the same values), which every backend's nanmedian takes
    values = magnitude if magnitude.device.type == "cuda" else magnitude.float()
    masked = values.masked_fill(~prompt[..., None], float("nan")).flatten(1)
    return masked.nanmedian(-1).values.to(magnitude.dtype)


def summarize(rows: torch.Tensor) -> dict:
    """Per-layer metadata from every example's `FIELDS` row [examples, FIELDS]."""
    norm_sum, kept, massive, window_massive = (float(v) for v in rows[:, :SUMMED].sum(0))
    medians = rows[:, SUMMED]
    medians = medians[~medians.isnan()]  # examples with a kept token
    return {
        "token_norm": round(norm_sum / kept, 6) if kept else None,
        "tokens": int(kept),
        "massive_tokens": int(massive),
        "window_massive": int(window_massive),
        # the median example's median kept-token norm (lower medians both)
        "example_median": round(float(medians.median()), 6) if len(medians) else None,
    }
