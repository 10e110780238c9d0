"""Params for completing trait prompts with a model variant (and optional vetting)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from steerops.config.base import Strict


class GenerateConfig(Strict):
    variant: str = "base"
    max_new_tokens: int | Literal["auto"] = "auto"
    temperature: float = Field(0.0, ge=0.0, description="0 = greedy")
    rollouts: int = Field(1, ge=1)
    batch_size: int = Field(64, ge=1)
    vet: bool = False
    positive_min: float = Field(60.0, description="keep a positive response if trait >= this")
    negative_max: float = Field(40.0, description="keep a negative response if trait <= this")
    paired_filter: bool = False
