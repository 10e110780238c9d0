"""Which massive dims a cleaned method removes, read from a calibration.json.

The dims come from `aggregate` in the calibration contract (docs/internals.md), from one of
two sets (`cleaning.dim_set`):
- `top_mean`: `global_dims` ordered by importance, `top_dims_by_layer["<L>"]` per layer;
- `massive`: `massive_dims` (massive at any layer), `massive_by_layer["<L>"]` per layer. A
  layer with fewer massive dims than `layertopN` asks for loses the ones it has (none at
  layers without massive activations).
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
    dim_set: str = "top_mean",
) -> dict[int, list[int]]:
    """{layer: dims} for `cleaning`; `where` names the source in errors (calibration file)."""
    if cleaning.select == "dims":
        by_layer = {layer: list(cleaning.dims) for layer in layers}
        where = "method suffix"
    else:
        assert calibration is not None, "calibration required for calibrated cleaning"
        by_layer = {
            layer: _calibrated(cleaning, calibration["aggregate"], layer, where, dim_set)
            for layer in layers
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


_KEYS = {  # dim_set -> (all-layer key, per-layer key)
    "top_mean": ("global_dims", "top_dims_by_layer"),
    "massive": ("massive_dims", "massive_by_layer"),
}


def _calibrated(
    cleaning: Cleaning, aggregate: dict[str, Any], layer: int, where: str, dim_set: str
) -> list[int]:
    overall, per_layer = _KEYS[dim_set]
    if cleaning.select == "layertop":
        table = aggregate.get(per_layer)
        if table is None:
            raise SteeropsError(f"{where}: missing key aggregate.{per_layer} (calibrate again)")
        if str(layer) not in table:
            raise SteeropsError(
                f"{where}: aggregate.{per_layer} has no layer {layer} (calibrate that layer too)"
            )
        ranked = list(table[str(layer)])
        if dim_set == "massive":
            return ranked[: cleaning.n]
        key = f"aggregate.{per_layer}.{layer}"
    else:
        if overall not in aggregate:
            raise SteeropsError(f"{where}: missing key aggregate.{overall} (calibrate again)")
        ranked, key = list(aggregate[overall]), f"aggregate.{overall}"
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
