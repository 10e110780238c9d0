"""Params for steered generation."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from steerops.config.base import LayerSpec, Strict


class SteeringConfig(Strict):
    variant: str = Field("instruct", description="model variant that is steered")
    vector_variant: str = Field("base", description="variant the vectors were extracted on")
    method: str = "mean_diff"
    position: str = "prompt[-1]"
    methods: list[str] = Field(
        default_factory=list, description="grid swept by `steerops steer` without --method "
        "(empty: just `method`)")
    positions: list[str] = Field(
        default_factory=list, description="grid swept without --position (empty: `position`)")
    component: Literal["residual", "attn_out", "mlp_out"] = "residual"
    layers: LayerSpec = "all"
    coefficients: list[float] = Field(default_factory=lambda: [0.5, 1.0, 1.5, 2.0])
    coefficient_unit: Literal["norm", "absolute"] = Field(
        "norm", description="norm: weight = coefficient x the layer's mean activation norm; "
        "absolute: weight = coefficient")
    direction: Literal["positive", "negative"] = "positive"
    scope: Literal["all", "response"] = Field(
        "all", description="steer prompt and response tokens, or generated tokens only")
    max_new_tokens: int = Field(24, ge=1)
    subset: int | None = Field(None, ge=1, description="first N steering questions only")
    save_responses: Literal["best", "all", "none"] = "best"
    min_coherence: float = Field(68.0, ge=0, le=100)
    max_batch_rows: int = Field(256, ge=1, description="rows per generate call (halved on OOM)")
    cache_implementation: Literal["static"] | None = Field(
        None, description="'static' for a compiled static KV cache (CUDA); default dynamic")
