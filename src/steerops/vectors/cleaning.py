"""Which massive dims a cleaned method removes, read from a calibration.json.

The dims come from `aggregate` in the calibration contract (docs/internals.md):
`global_dims` ordered by importance, and `top_dims_by_layer["<L>"]` ordered per layer.
The calibration may come from another model variant than the activations (calibrate the
instruct model, extract from base); the caller records which.
"""

from __future__ import annotations

from typing import Any

import torch

from steerops.errors import SteeropsError
from steerops.specs import Cleaning


def dims_to_remove(
    cleaning: Cleaning,
    calibration: dict[str, Any] | None,
    layers: list[int],
    hidden_size: int,
    where: str,
) -> dict[int, list[int]]:
    """{layer: dims} for `cleaning`; `where` names the source in errors (calibration file)."""
    if cleaning.select == "dims":
        by_layer = {layer: list(cleaning.dims) for layer in layers}
        where = "method suffix"
    else:
        assert calibration is not None, "calibration required for calibrated cleaning"
        by_layer = {
            layer: _calibrated(cleaning, calibration["aggregate"], layer, where) for layer in layers
        }
    for layer, dims in by_layer.items():
        for dim in dims:
            if not isinstance(dim, int) or not 0 <= dim < hidden_size:
                raise SteeropsError(
                    f"{where}: dim {dim!r} (layer {layer}) is outside the "
                    f"activations' hidden size {hidden_size}; was the "
                    f"calibration made on another model?"
                )
    return by_layer


def _calibrated(cleaning: Cleaning, aggregate: dict[str, Any], layer: int, where: str) -> list[int]:
    if cleaning.select == "layertop":
        table = aggregate.get("top_dims_by_layer") or {}
        if str(layer) not in table:
            raise SteeropsError(
                f"{where}: aggregate.top_dims_by_layer has no layer "
                f"{layer} (calibrate that layer too)"
            )
        ranked, key = list(table[str(layer)]), f"aggregate.top_dims_by_layer.{layer}"
    else:
        if "global_dims" not in aggregate:
            raise SteeropsError(f"{where}: missing key aggregate.global_dims")
        ranked, key = list(aggregate["global_dims"]), "aggregate.global_dims"
    if cleaning.select == "global":
        return ranked
    if cleaning.n > len(ranked):
        raise SteeropsError(
            f"{where}: {cleaning.spec} asks for {cleaning.n} dims but {key} has {len(ranked)}"
        )
    return ranked[: cleaning.n]


def zero_dims(x: torch.Tensor, dims: list[int]) -> torch.Tensor:
    """A copy of `x` with the last-axis entries at `dims` set to zero."""
    out = x.clone()
    if dims:
        out[..., torch.tensor(dims, dtype=torch.long)] = 0
    return out
