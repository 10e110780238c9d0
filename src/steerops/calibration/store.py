"""Calibration on disk, as `steerops calibrate` writes it and cleaning and the report read it.

    <out>/calibration/<variant>/calibration.json   per-layer stats and the global dims
    <out>/calibration/<variant>/heatmap.png
    <out>/calibration/<variant>/.partial/responses.json   an interrupted run's responses

calibration.json: `{variant, model, n_tokens, layers: {"<L>": {top_dims, top_values,
relative, median_abs, max_median_ratio, top_max: [{dim, value, ratio, sequence, position,
token}], massive_dims, massive: {"<d>": {...as top_max}}, norm}}, aggregate:
{top_dims_by_layer: {"<L>": [...]}, global_dims: [...], global_counts: {...}, rule: {...},
massive_dims: [...], massive_by_layer: {"<L>": [...]}, massive_layers: {"<d>": [...]},
massive_rule: {...}}}`. `top_dims`/`global_dims` are the top_mean set (largest |mean|),
`massive_dims` the massive set (see `steerops.calibration.stats`).

`.partial/` holds the responses of the batches a run finished (`steerops.models.kept_jobs`),
so a rerun after an interruption generates only the rest; it goes once calibration.json is
written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from steerops.errors import SteeropsError
from steerops.io import read_json, write_json

CALIBRATION_FILE = "calibration.json"
HEATMAP_FILE = "heatmap.png"
PARTIAL_DIR = ".partial"


def calibration_file(out: Path, variant: str) -> Path:
    return Path(out) / "calibration" / variant / CALIBRATION_FILE


def heatmap_file(out: Path, variant: str) -> Path:
    return calibration_file(out, variant).with_name(HEATMAP_FILE)


def partial_responses_file(out: Path, variant: str) -> Path:
    return calibration_file(out, variant).parent / PARTIAL_DIR / "responses.json"


def drop_partial(out: Path, variant: str) -> None:
    """Remove what an interrupted run kept, once calibration.json is written."""
    import shutil

    shutil.rmtree(partial_responses_file(out, variant).parent, ignore_errors=True)


def write_calibration(out: Path, variant: str, record: dict[str, Any]) -> Path:
    path = calibration_file(out, variant)
    write_json(path, record)
    return path


class _Aggregate(BaseModel):
    """The keys of `aggregate` that cleaning and the report read (the rest is free)."""

    model_config = ConfigDict(extra="allow", strict=True)
    global_dims: list[int] = []
    top_dims_by_layer: dict[str, list[int]] | None = None
    massive_dims: list[int] = []
    massive_by_layer: dict[str, list[int]] | None = None


class _Layer(BaseModel):
    """The keys of a layer's entry the report reads."""

    model_config = ConfigDict(extra="allow")
    massive_dims: list[int] = []
    massive: dict[str, dict[str, Any]] = {}
    median_abs: float | None = None


class _Calibration(BaseModel):
    model_config = ConfigDict(extra="allow")
    layers: dict[str, _Layer] = {}
    aggregate: _Aggregate


def read_calibration(path: Path) -> dict[str, Any]:
    """A calibration file's record, its shape checked: a hand-edited or foreign file is one
    error line naming the key, not a crash in whatever reads it next."""
    data = read_json(path)  # not JSON: one line naming the file
    if not isinstance(data, dict) or "aggregate" not in data:
        raise SteeropsError(f"{path}: missing key 'aggregate'")
    try:
        _Calibration.model_validate(data)
    except ValidationError as exc:
        from steerops.config import describe_validation_error

        raise SteeropsError(f"{path}: {describe_validation_error(exc)}") from None
    return data


def load_calibration(out: Path, variant: str, needed_by: str) -> tuple[dict[str, Any], Path]:
    """(calibration record, its path); `needed_by` names what needs it in the error."""
    path = calibration_file(out, variant)
    if not path.is_file():
        raise SteeropsError(
            f"{needed_by} needs calibration: {path} not found (run "
            f"`steerops calibrate --variant {variant}` first)"
        )
    return read_calibration(path), path


def _stored_aggregate(out: Path, variant: str) -> dict[str, Any] | None:
    path = calibration_file(out, variant)
    return read_calibration(path)["aggregate"] if path.exists() else None


def stored_global_dims(out: Path, variant: str) -> list[int]:
    """The variant's global large-mean dims (the `top_mean` set), or none when it was not
    calibrated."""
    aggregate = _stored_aggregate(out, variant) or {}
    return list(aggregate.get("global_dims", []))


def stored_massive_dims(out: Path, variant: str) -> list[int]:
    """The variant's massive dims (any layer), or none when it was not calibrated or the
    calibration predates the massive rule."""
    aggregate = _stored_aggregate(out, variant) or {}
    return list(aggregate.get("massive_dims", []))


def stored_massive_by_layer(out: Path, variant: str) -> dict[int, list[int]] | None:
    """{layer: massive dims} of the variant's calibration; None when it was not calibrated
    or the calibration predates the massive rule."""
    table = (_stored_aggregate(out, variant) or {}).get("massive_by_layer")
    if table is None:
        return None
    return {int(k): list(v) for k, v in table.items()}
