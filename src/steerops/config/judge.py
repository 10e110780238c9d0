"""Params for the judge that scores trait and coherence."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from steerops.config.base import Strict


class JudgeConfig(Strict):
    kind: Literal["toy", "openai", "hf"] = "toy"
    model: str | None = None
    base_url: str | None = None
    api_key_env: str = Field("OPENAI_API_KEY", description="env var holding the key")
    concurrency: int = Field(8, ge=1)
    max_retries: int = Field(5, ge=0)
    timeout_s: float = Field(60.0, gt=0)
    min_prob_mass: float = Field(0.25, ge=0, le=1)
    cache_dir: str = "outputs/judge_cache"
