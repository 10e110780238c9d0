"""Params for the judge that scores trait and coherence."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from steerops.config.base import Strict

# How the judge is reached, not what it answers: no DVC stage depends on these, so raising
# the concurrency or a timeout, or naming another key variable, re-runs nothing (dvc.yaml
# declares the judge's other keys one by one; tests/test_pipeline_files.py checks both).
# (max_retries also decides when an answer that keeps failing is left unscored: a failure,
# asked again by the next run, not a score.)
JUDGE_REACH = (
    "api_key_env",
    "require_key",
    "concurrency",
    "max_retries",
    "backoff_s",
    "max_backoff_s",
    "timeout_s",
    "cache_dir",
)


class JudgeConfig(Strict):
    kind: Literal["toy", "openai", "hf", "proxy"] = Field(
        "toy",
        description="toy (exact, toy world), openai (endpoint), hf (local model), proxy "
        "(offline refusal-phrase and likelihood proxy for real text)",
    )
    model: str | None = Field(None, description="openai: the endpoint's model name")
    base_url: str | None = Field(None, description="openai: e.g. https://api.openai.com/v1")
    api_key_env: str = Field("OPENAI_API_KEY", description="env var holding the key")
    require_key: bool = Field(
        True, description="openai: fail when the key env var is unset (false: send no key)"
    )
    top_logprobs: int = Field(20, ge=1, le=20, description="openai: alternatives per answer")
    concurrency: int = Field(8, ge=1, description="openai: requests in flight")
    max_retries: int = Field(5, ge=0, description="openai: retries of a failed request")
    backoff_s: float = Field(
        1.0, gt=0, le=86400, description="first retry delay; doubles, with jitter"
    )
    max_backoff_s: float = Field(
        30.0,
        gt=0,
        le=86400,
        description="cap of our own delays; a longer Retry-After is honoured",
    )
    timeout_s: float = Field(
        60.0, gt=0, le=86400, description="openai: seconds per attempt of a request"
    )
    min_prob_mass: float = Field(
        0.25,
        ge=0,
        le=1,
        description="openai, hf: probability the integer answers must hold together, else "
        "the answer is unscored",
    )
    variant: str | None = Field(
        None, description="hf, proxy: the judge's model variant in `models`"
    )
    batch_size: int = Field(8, ge=1, description="hf, proxy: prompts per forward pass")
    prune_prob: float = Field(
        1e-4, ge=0, lt=1, description="hf: skip number prefixes less likely than this"
    )
    cache_dir: str = Field(
        "outputs/judge_cache",
        description="openai, hf: the judge's answer cache (proxy, toy: none); a run of its own "
        "(steer or search by hand, --out) reads this one but writes the answers it asks in its "
        "folder while this lies in paths.out, and shares this one when it lies outside",
    )
    version: str = Field(
        "",
        description="a label in the judge's cache key: change it when the judge behind an "
        "unchanged model name changed, so no stale score is served",
    )
