"""Params for completing trait prompts with a model variant (and optional vetting)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from steerops.config.base import Strict


class GenerateConfig(Strict):
    variant: str = Field("base", description="model variant (from `models`) to complete with")
    max_new_tokens: int | Literal["auto"] = Field(
        "auto",
        description="tokens per response; 'auto': the most response tokens any "
        "extraction position needs",
    )
    auto_open_ended: int = Field(
        32,
        ge=1,
        description="'auto' length when a position is open-ended (response[:]) or "
        "none reads the response",
    )
    vet_min_new_tokens: int = Field(
        32,
        ge=1,
        description="with vetting, 'auto' generates at least this many tokens so the "
        "judge sees whole answers",
    )
    temperature: float = Field(0.0, ge=0.0, description="0 = greedy")
    rollouts: int = Field(1, ge=1, description="completions per prompt")
    batch_size: int = Field(64, ge=1, description="prompts per generate batch")
    vet: bool = Field(False, description="score completions with the judge and mark which are kept")
    positive_min: float = Field(60.0, description="keep a positive response if trait >= this")
    negative_max: float = Field(40.0, description="keep a negative response if trait <= this")
    paired_filter: bool = Field(
        False,
        description="keep a (source_index, rollout) only if its positive and negative "
        "completions both pass; needs as many positive as negative prompts",
    )
