"""Calibration on disk, as `steerops calibrate` writes it and cleaning and the report read it.

    <out>/calibration/<variant>/calibration.json   per-layer stats and the global dims
    <out>/calibration/<variant>/heatmap.png

calibration.json: `{variant, model, n_tokens, layers: {"<L>": {top_dims, top_values,
relative, median_abs, max_median_ratio, top_max: [{dim, value, ratio, sequence, position,
token}], massive_dims, massive: {"<d>": {...as top_max}}, norm}}, aggregate:
{top_dims_by_layer: {"<L>": [...]}, global_dims: [...], global_counts: {...}, rule: {...},
massive_dims: [...], massive_by_layer: {"<L>": [...]}, massive_layers: {"<d>": [...]},
massive_rule: {...}}}`. `top_dims`/`global_dims` are the top_mean set (largest |mean|),
`massive_dims` the massive set (see `steerops.calibration.stats`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from steerops.errors import SteeropsError
from steerops.io import read_json, write_json

CALIBRATION_FILE = "calibration.json"
HEATMAP_FILE = "heatmap.png"


def calibration_file(out: Path, variant: str) -> Path:
    return Path(out) / "calibration" / variant / CALIBRATION_FILE


def heatmap_file(out: Path, variant: str) -> Path:
    return calibration_file(out, variant).with_name(HEATMAP_FILE)


def write_calibration(out: Path, variant: str, record: dict[str, Any]) -> Path:
    path = calibration_file(out, variant)
    write_json(path, record)
    return path


def load_calibration(out: Path, variant: str, needed_by: str) -> tuple[dict[str, Any], Path]:
    """(calibration record, its path); `needed_by` names what needs it in the error."""
    path = calibration_file(out, variant)
    if not path.is_file():
        raise SteeropsError(
            f"{needed_by} needs calibration: {path} not found (run "
            f"`steerops calibrate --variant {variant}` first)"
        )
    try:
        data = read_json(path)
    except ValueError:
        raise SteeropsError(f"{path}: not valid JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("aggregate"), dict):
        raise SteeropsError(f"{path}: missing key 'aggregate'")
    return data, path


def stored_global_dims(out: Path, variant: str) -> list[int]:
    """The variant's global large-mean dims (the `top_mean` set), or none when it was not
    calibrated."""
    path = calibration_file(out, variant)
    if not path.exists():
        return []
    return [int(d) for d in read_json(path)["aggregate"]["global_dims"]]


def stored_massive_dims(out: Path, variant: str) -> list[int]:
    """The variant's massive dims (any layer), or none when it was not calibrated or the
    calibration predates the massive rule."""
    path = calibration_file(out, variant)
    if not path.exists():
        return []
    return [int(d) for d in read_json(path)["aggregate"].get("massive_dims", [])]


def stored_massive_by_layer(out: Path, variant: str) -> dict[int, list[int]] | None:
    """{layer: massive dims} of the variant's calibration; None when it was not calibrated
    or the calibration predates the massive rule."""
    path = calibration_file(out, variant)
    if not path.exists():
        return None
    table = read_json(path).get("aggregate", {}).get("massive_by_layer")
    if table is None:
        return None
    return {int(k): [int(d) for d in v] for k, v in table.items()}
