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


class CleaningConfig(Strict):
    calibration_variant: str = "instruct"
    variants: list[str] = Field(
        default_factory=lambda: ["mean_diff_top1", "probe_top1", "mean_diff_preclean"]
    )
