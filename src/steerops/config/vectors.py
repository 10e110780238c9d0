"""Params for steering-vector methods, massive-activation calibration and cleaning."""

from __future__ import annotations

from pydantic import Field

from steerops.config.base import Strict


class VectorsConfig(Strict):
    methods: list[str] = Field(
        default_factory=lambda: ["mean_diff", "probe", "gradient", "random_baseline", "pca"]
    )
    probe_c: float = Field(1.0, gt=0, description="inverse L2 strength of the logistic probe")
    gradient_steps: int = Field(200, ge=1)
    gradient_lr: float = Field(0.05, gt=0)


class CalibrationConfig(Strict):
    variant: str = "instruct"
    prompts: str = "data/toy/calibration.jsonl"
    max_new_tokens: int = Field(16, ge=1)
    top_k: int = Field(5, ge=1)
    massive_threshold: float = Field(100.0, gt=0, description="max/median ratio for 'massive'")
    global_top_n: int = Field(5, ge=1, description="a dim counts at a layer if in its top-N")
    global_min_layers: int = Field(3, ge=1, description="... at this many layers or more")


class CleaningConfig(Strict):
    calibration_variant: str = "instruct"
    variants: list[str] = Field(
        default_factory=lambda: ["mean_diff_top1", "probe_top1", "mean_diff_preclean"]
    )
