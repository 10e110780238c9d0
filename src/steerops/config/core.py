"""Params shared by every stage: output locations, trait datasets, experiment tracking."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator

from steerops.config.base import Once, Strict
from steerops.errors import SteeropsError
from steerops.io import check_trait_name


class PathsConfig(Strict):
    toy: str = Field("data/toy", description="where `steerops toy` builds the toy world")
    smollm2: str = Field(
        "data/smollm2", description="where `steerops smollm2` writes the real model's folder"
    )
    out: str = Field("outputs", description="root of every stage's outputs")


class TraitsConfig(Strict):
    root: str = Field("data/toy/traits", description="<root>/<category>/<trait>/ datasets")
    names: Annotated[list[str], Once] = Field(
        default_factory=lambda: ["toy/refusal"],
        min_length=1,
        description="trait(s), CATEGORY/NAME",
    )

    @field_validator("names")
    @classmethod
    def _category_slash_name(cls, names: list[str]) -> list[str]:
        # checked when params load (not at each trait's turn), and spelled one way: a
        # trailing slash (a shell's completion) would name the same trait otherwise
        try:
            return list(dict.fromkeys("/".join(check_trait_name(name)) for name in names))
        except SteeropsError as exc:
            raise ValueError(str(exc)) from None


class TrackingConfig(Strict):
    enabled: bool = Field(True, description="track runs in MLflow (off: no run is opened)")
    uri: str | None = Field(
        None,
        description="MLflow tracking URI; default sqlite:///<params dir>/mlflow.db "
        "(MLFLOW_TRACKING_URI wins when set)",
    )
    experiment: str | None = Field(None, description="MLflow experiment; default: `experiment`")
