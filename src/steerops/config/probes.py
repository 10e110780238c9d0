"""Params for preference probes (ridge on scalar scores) and the OOD analysis."""

from __future__ import annotations

from pydantic import Field

from steerops.config.base import Strict


class ProbesConfig(Strict):
    variant: str = "instruct"
    tasks: str = "data/toy/probes/tasks.jsonl"
    scores: str = "data/toy/probes/scores.csv"
    position: str = "prompt[-1]"
    layers: str = "all"
    alphas: list[float] = Field(default_factory=lambda: [10.0**k for k in range(-3, 7)])
    standardize: bool = True
