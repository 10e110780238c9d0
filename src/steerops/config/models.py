"""Model variants: which weights each stage loads (e.g. `base` extracts, `instruct` steers)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from steerops.config.base import Strict

TOY_MODEL = "data/toy/model"


class ModelVariant(Strict):
    id: str = Field(TOY_MODEL, description="hub id (e.g. google/gemma-3-4b-it) or local path")
    revision: str | None = Field(
        None, description="hub commit, branch or tag (hub ids only; default: the cache's refs/main)"
    )
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = Field(
        "float32", description="weights' dtype (auto: the checkpoint's)"
    )
    device: str | None = Field("cpu", description="cpu, cuda, cuda:1, mps; or use device_map")
    device_map: str | dict[str, int | str] | None = Field(
        None, description="accelerate placement: auto, or {module: device | cpu | disk}"
    )
    offload_folder: str | None = Field(
        None, description="with device_map: where modules mapped to disk are kept"
    )
    chat_template: str | None = Field(
        None, description="Jinja template or path to one; default: the tokenizer's own"
    )
    layers_path: str | None = Field(
        None, description="dotted path of the decoder blocks for architectures we do not know"
    )
    attn_path: str | None = Field(
        None, description="block submodule whose output is added as attn_out (unknown archs)"
    )
    mlp_path: str | None = Field(
        None, description="block submodule whose output is added as mlp_out (unknown archs)"
    )
    trust_remote_code: bool = Field(
        False, description="run the model repository's own code (architectures HF lacks)"
    )

    @model_validator(mode="after")
    def _one_placement(self) -> ModelVariant:
        if self.device_map is not None and self.device not in (None, "cpu"):
            raise ValueError("set either device or device_map, not both")
        return self


def pin_device(run: Any, device: str | None) -> None:
    """`--device`: every variant the run (its Params) loads goes on `device`, replacing the
    params' device / device_map (one worker per GPU on a shared params file). Placement is
    not a stage input: results do not depend on it."""
    if not device:
        return
    for name, spec in run.models.items():
        run.models[name] = spec.model_copy(update={"device": device, "device_map": None})


def default_variants() -> dict[str, ModelVariant]:
    return {"base": ModelVariant(), "instruct": ModelVariant()}
