"""Params for activation extraction."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from steerops.config.base import LayerSpec, Strict


class ExtractionConfig(Strict):
    variant: str = "base"
    positions: list[str] = Field(default_factory=lambda: ["prompt[-1]", "response[:5]"])
    layers: LayerSpec = Field("all", description="all, 15, 5,10,15, 5-20, 0-30:5, 30%-60%, "
                              "mixtures")
    component: Literal["residual", "attn_out", "mlp_out"] = "residual"
    dtype: Literal["float32", "bfloat16"] = "float32"
    token_budget: int = Field(16384, ge=1, description="max padded tokens per forward batch")
    shard_examples: int = Field(256, ge=1, description="examples per resumable shard")
    val_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    padding_side: Literal["left", "right"] = Field(
        "right", description="padding of extraction batches (results agree either way)")
