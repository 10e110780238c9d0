"""Params for the Optuna coefficient search under the coherence constraint."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from steerops.config.base import Strict


class SearchConfig(Strict):
    trials: int = Field(24, ge=1)
    batch: int = Field(8, ge=1, description="trials asked and evaluated together")
    sampler: Literal["gp", "tpe"] = "gp"
    storage: str | None = Field(None, description="SQLAlchemy URL; default sqlite optuna.db")
    study: str | None = None
    coef_min: float = Field(0.0, description="coefficient range in units of layer norm")
    coef_max: float = Field(3.0)
    heldout_fraction: float = Field(0.5, gt=0, lt=1)
