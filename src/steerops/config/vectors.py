"""Params for steering-vector methods and for cleaning massive dims out of them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from steerops.config.base import Methods, Strict
from steerops.specs import BASE_METHODS, parse_method


class VectorsConfig(Strict):
    methods: Methods = Field(
        default_factory=lambda: [parse_method(m) for m in BASE_METHODS],
        description="methods, e.g. mean_diff,probe,mean_diff_top1 (cleaning suffixes: see "
        "steerops.specs.methods)",
    )
    probe_c: float = Field(1.0, gt=0, description="inverse L2 strength of the logistic probe")
    probe_rows: Literal["unit", "standardize", "none"] = Field(
        "unit", description="probe input scaling: rows to unit norm, columns to z-scores, none"
    )
    probe_max_iter: int = Field(2000, ge=1, description="probe: logistic regression iterations")
    gradient_steps: int = Field(200, ge=1, description="gradient: optimisation steps")
    gradient_lr: float = Field(0.05, gt=0, description="gradient: learning rate")
    gradient_shrinkage: float = Field(
        0.1, ge=0, description="share of the mean variance added to the pooled class variance"
    )


class CleaningConfig(Strict):
    calibration_variant: str = Field(
        "instruct", description="model variant whose calibration.json names the massive dims"
    )
    variants: Methods = Field(
        default_factory=lambda: [
            parse_method(m) for m in ("mean_diff_top1", "probe_top1", "mean_diff_preclean")
        ],
        description="cleaned method names made by `steerops clean`, e.g. "
        "mean_diff_top1,probe_preclean",
    )
    dim_set: Literal["top_mean", "massive"] = Field(
        "top_mean",
        description="calibrated dims cleaning zeroes: largest mean (`top_mean`) or massive "
        "by the magnitude rule (`massive`)",
    )
