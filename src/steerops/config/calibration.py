"""Params for massive-activation calibration."""

from __future__ import annotations

from pydantic import Field

from steerops.config.base import Strict


class CalibrationConfig(Strict):
    variant: str = Field("instruct", description="model variant (from `models`) to calibrate")
    prompts: str = Field(
        "data/toy/calibration.jsonl",
        description="calibration prompts (JSONL: `prompt`, optional `system_prompt`)",
    )
    max_new_tokens: int = Field(16, ge=1, description="response tokens generated per prompt")
    top_k: int = Field(5, ge=1, description="top dims by |mean| recorded per layer")
    massive_threshold: float = Field(
        100.0, gt=0, description="|activation| a dim must exceed somewhere to be massive"
    )
    massive_ratio: float = Field(
        1000.0, gt=0, description="... and exceed this many times the layer's median |activation|"
    )
    massive_min_sequences: int = Field(
        2,
        ge=1,
        description="... in at least this many calibration sequences (1: one token anywhere)",
    )
    global_top_n: int = Field(5, ge=1, description="a dim counts at a layer if in its top-N")
    global_min_layers: int = Field(3, ge=1, description="... at this many layers or more")
    batch_size: int = Field(32, ge=1, description="prompts per generate/forward batch")
