"""Params for completing trait prompts with a model variant (and optional vetting)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from steerops.config.base import Strict


class GenerateConfig(Strict):
    variant: str = Field("base", description="model variant (from `models`) to complete with")
    max_new_tokens: int | Literal["auto"] = Field(
        "auto", description="tokens per response; auto: what the extraction positions read"
    )
    auto_open_ended: int = Field(
        32, ge=1, description="auto's length when a position reads to the end, or none reads"
    )
    vet_min_new_tokens: int = Field(
        32, ge=1, description="with vetting, auto's least length (the judge sees whole answers)"
    )
    temperature: float = Field(0.0, ge=0.0, description="0 = greedy")
    rollouts: int = Field(1, ge=1, description="completions per prompt")
    batch_size: int = Field(64, ge=1, description="prompts per generate batch")
    vet: bool = Field(False, description="score completions with the judge and mark which are kept")
    positive_min: float = Field(
        60.0, ge=0.0, le=100.0, description="keep a positive response if trait >= this (0-100)"
    )
    negative_max: float = Field(
        40.0, ge=0.0, le=100.0, description="keep a negative response if trait <= this (0-100)"
    )
    paired_filter: bool = Field(
        False,
        description="keep a prompt pair only if both completions pass vetting (equal "
        "counts); needs generate.vet",
    )

    @field_validator("max_new_tokens")
    @classmethod
    def _at_least_one_token(cls, value: int | str) -> int | str:
        if value != "auto" and int(value) < 1:
            raise ValueError("must be >= 1 or auto")
        return value

    @model_validator(mode="after")
    def _rollouts_sample(self) -> GenerateConfig:
        # Greedy completions of one prompt are identical: more rollouts only repeat rows.
        if self.rollouts > 1 and self.temperature == 0:
            raise ValueError("rollouts > 1 needs temperature > 0 (greedy rollouts are copies)")
        # pairs are kept or dropped by vetting's verdicts: without them it would do nothing
        if self.paired_filter and not self.vet:
            raise ValueError(
                "paired_filter needs vet: true (it keeps pairs both of whose "
                "completions pass vetting)"
            )
        return self
