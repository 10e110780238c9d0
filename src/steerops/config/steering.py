"""Params for steered generation and the grid `steerops steer` sweeps."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from steerops.config.base import LayerSpec, Methods, Positions, Strict
from steerops.specs import Component, Layers, Scope, parse_method, parse_position


class SteeringConfig(Strict):
    variant: str = Field("instruct", description="model variant that is steered")
    vector_variant: str = Field("base", description="variant the vectors were extracted on")
    methods: Methods = Field(
        default_factory=lambda: [parse_method("mean_diff")],
        min_length=1,
        description="vector methods swept (one grid cell each with every position), e.g. "
        "mean_diff,probe,mean_diff_top1",
    )
    positions: Positions = Field(
        default_factory=lambda: [parse_position("prompt[-1]")],
        min_length=1,
        description="positions the vectors were extracted at, e.g. prompt[-1]",
    )
    component: Component = Field(
        "residual", description="component the vectors were extracted from (added to the residual)"
    )
    layers: LayerSpec = Field(
        Layers("all"), description="layers to steer: all, 15, 5,10,15, 5-20, 0-30:5, 30%-60%"
    )
    coefficients: list[float] = Field(
        default_factory=lambda: [0.5, 1.0, 1.5, 2.0],
        min_length=1,
        description="steering coefficients (see coefficient_unit); a negative one steers "
        "the other way, and its trait delta still counts in `direction`'s sense",
    )
    coefficient_unit: Literal["norm", "absolute"] = Field(
        "norm",
        description="norm: weight = coefficient x the layer's mean per-token residual norm "
        "over the trait prompts' tokens (first and massive tokens left out; not the "
        "activations' pooled mean_norm); "
        "absolute: weight = coefficient",
    )
    direction: Literal["positive", "negative"] = Field(
        "positive",
        description="negative subtracts the vector (to suppress the trait), and a trait that "
        "falls is then the effect the verdicts look for",
    )
    scope: Scope = Field(
        "all",
        description="steer prompt and response tokens, or generated tokens only (the first "
        "generated token comes from the unsteered prompt, so max_new_tokens: 1 steers nothing)",
    )
    max_new_tokens: int = Field(24, ge=1, description="tokens generated per response")
    subset: int | None = Field(
        None, ge=0, description="first N steering questions only (0 or unset: all)"
    )
    save_responses: Literal["best", "all", "none"] = Field(
        "best",
        description="response files: per layer the config chosen on the selection half "
        "(none where no config qualifies), all, or none",
    )
    min_coherence: float = Field(
        68.0, ge=0, le=100, description="coherence a config needs to count as best (0-100)"
    )
    max_batch_rows: int | Literal["auto"] = Field(
        "auto",
        description="rows decoded at once (halved on out-of-memory); auto: 256 off CUDA, on "
        "CUDA what 70% of the free memory holds (35% beside a local judge), up to 1,024",
    )
    loop: Literal["static", "hf"] = Field(
        "static",
        description="decode loop: static (the engine's own: static cache, one fixed-shape step, "
        "CUDA graphs on CUDA, finished rows refilled) or hf (HF generate, the reference); "
        "both give the same tokens in float32 (in 16-bit floats, as any two batchings, they "
        "can part at a near tie)",
    )
    cache_implementation: Literal["static"] | None = Field(
        None, description="loop hf: 'static' for a compiled static KV cache (CUDA); default dynamic"
    )

    @field_validator("max_batch_rows")
    @classmethod
    def _at_least_one_row(cls, value: int | str) -> int | str:
        if value != "auto" and int(value) < 1:
            raise ValueError("must be >= 1 or auto")
        return value

    @field_validator("coefficients")
    @classmethod
    def _each_once(cls, value: list[float]) -> list[float]:
        # a repeat is a config swept twice: counted twice in progress and served counts
        if repeated := sorted({c for c in value if value.count(c) > 1}):
            raise ValueError(f"{', '.join(f'{c:g}' for c in repeated)} given more than once")
        return value
