"""Warnings a researcher needs about one method's vectors, one line per kind, listing the
layers it applies to; logged and stored in the vector metadata (`warnings`).

- massive_vector: more than half of a unit vector's squared norm lies in the layer's massive
  dims (calibration `aggregate.massive_by_layer`): the vector mostly moves a massive dim.
- massive_window: the pooled window held a massive token (e.g. the first token) in some
  examples: the pooled activations, and what is fitted on them, are dominated by it.
- pooled_unit: the activations predate the per-token norm, so the `norm` coefficient unit
  falls back to the pooled rows' mean norm, which depends on the window.
- nonfinite_unit: the `norm` unit is NaN or infinite (an activation overflowed at a prompt
  token outside the pooled window, or no prompt token was kept): steering in `norm` units
  refuses the layer.
- skewed_unit: the `norm` unit (a mean of token norms) exceeds the median example's median
  token norm by more than `UNIT_SKEW`: a few large tokens the massive rule keeps (a template
  token just under its bars, recurring in every prompt) set it, and a `norm` coefficient
  weighs that much more than on an ordinary token.
"""

from __future__ import annotations

import logging
import math

import torch

log = logging.getLogger(__name__)
MASSIVE_SHARE = 0.5
# Token norms are skewed a little on their own (0.98-1.03x past SmolLM2's block 1, 1.13x at 0);
# a quarter more is a unit no longer set by ordinary tokens.
UNIT_SKEW = 1.25


def massive_share(unit: torch.Tensor, dims: list[int] | None) -> float | None:
    """Share of the unit vector's squared norm in `dims` (None without a calibration)."""
    if dims is None:
        return None
    if not dims:
        return 0.0
    return round(float(unit.float()[torch.tensor(dims)].pow(2).sum()), 6)


def collect(name: str, position: str, layers: dict[str, dict], n_examples: int) -> list[str]:
    """Warning lines from the per-layer metadata of one method's vectors."""
    lines = []
    heavy = {
        k: v["massive_share"]
        for k, v in layers.items()
        if (v["massive_share"] or 0) > MASSIVE_SHARE
    }
    if heavy:
        worst = max(heavy, key=heavy.get)
        lines.append(
            f"massive_vector: {name} {position}: more than half of the squared norm is in "
            f"massive dims at layers {_span(heavy)} (up to {heavy[worst]:.2f} at layer {worst})"
        )
    window = {k: v["window_massive"] for k, v in layers.items() if v.get("window_massive")}
    if window:
        worst = max(window, key=window.get)
        lines.append(
            f"massive_window: {name} {position}: the pooled window holds a massive token in "
            f"up to {window[worst]}/{n_examples} examples (layers {_span(window)}); the "
            f"activations are dominated by it"
        )
    pooled = [k for k, v in layers.items() if v.get("norm_unit") == "pooled_window"]
    if pooled:
        lines.append(
            f"pooled_unit: {name} {position}: the norm unit is the pooled window's mean norm "
            f"at layers {_span(pooled)} (activations predate token_norm; extract again)"
        )
    broken = [k for k, v in layers.items() if v.get("norm_unit") == "token" and not _finite(v)]
    if broken:
        lines.append(
            f"nonfinite_unit: {name} {position}: the norm unit is not finite at layers "
            f"{_span(broken)} (an activation overflowed in the model's dtype at a prompt "
            "token, or no prompt token was kept): steering in `norm` units refuses these "
            "layers; load the model in bfloat16 or float32 (models.<variant>.dtype) and "
            "extract again"
        )
    skew = {
        k: v["mean_norm"] / v["unit_median"]
        for k, v in layers.items()
        if v.get("unit_median") and (v["mean_norm"] or 0) > UNIT_SKEW * v["unit_median"]
    }
    if skew:
        worst = max(skew, key=skew.get)
        lines.append(
            f"skewed_unit: {name} {position}: the norm unit (the mean per-token norm) is up to "
            f"{skew[worst]:.2f}x the median example's median token norm (layer {worst}; over "
            f"{UNIT_SKEW}x at layers {_span(skew)}): a few large tokens the massive rule keeps "
            "set it, so a `norm` coefficient there weighs that much more than an ordinary "
            "token's norm (see the calibration's near-the-bar line, or steer in `absolute` units)"
        )
    for line in lines:
        log.warning(line)
    return lines


def _finite(layer: dict) -> bool:
    """Whether a layer's `norm` unit is a number (a non-finite one is null once in JSON)."""
    unit = layer.get("mean_norm")
    return unit is not None and math.isfinite(unit)


def _span(layers) -> str:
    values = sorted(int(k) for k in layers)
    if values == list(range(values[0], values[-1] + 1)) and len(values) > 2:
        return f"{values[0]}-{values[-1]}"
    return ",".join(map(str, values))
