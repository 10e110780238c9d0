"""Params for activation extraction."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from steerops.config.base import LayerSpec, Positions, Strict
from steerops.specs import Component, Layers, parse_position


class ExtractionConfig(Strict):
    variant: str = Field("base", description="model variant (from `models`) to read")
    positions: Positions = Field(
        default_factory=lambda: [parse_position("prompt[-1]"), parse_position("response[:5]")],
        description="token positions, e.g. prompt[-1], response[:5], all[:]",
    )
    layers: LayerSpec = Field(
        Layers("all"),
        description="all, 15, 5,10,15, 5-20, 0-30:5, 30%-60%, mixtures; another set replaces "
        "the folder's activations (vectors of the old set are then refused until built again)",
    )
    component: Component = Field(
        "residual", description="block output (residual) or what its attention / MLP adds to it"
    )
    dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="dtype of the saved activations"
    )
    token_budget: int = Field(16384, ge=1, description="max padded tokens per forward batch")
    shard_examples: int = Field(256, ge=1, description="examples per resumable shard")
    val_fraction: float = Field(
        0.2,
        ge=0.0,
        lt=1.0,
        description="share of source prompts held out as val (seeded; a prompt's rollouts and "
        "a pair stay together): vectors choose and report layers on them",
    )
    padding_side: Literal["left", "right"] = Field(
        "right", description="padding of extraction batches (results agree either way)"
    )
    compile: bool = Field(
        False,
        description="run the decoder blocks compiled with torch.compile for the residual "
        "component (GPU: faster; activations agree to float rounding; the first batches pay "
        "the compile time; attn_out/mlp_out and offloaded blocks run eager)",
    )
