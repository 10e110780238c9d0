"""Steering vectors on disk, as `steerops vectors` / `clean` write them and steering,
search and the report read them.

    <out>/vectors/<cat>/<trait>/<variant>/<position>/<component>/<method>/
        vectors.safetensors   `layer_<L>`: [hidden] float32 unit vectors
        metadata.json         method, provenance and per-layer numbers (docs/internals.md)

Both files are written atomically, the tensors first; the metadata records the tensors'
MD5, so a pair left mismatched by a kill between the two renames is reported, not used.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import torch

from steerops.errors import SteeropsError
from steerops.io import file_md5, load_tensors, read_json, save_tensors, write_json
from steerops.paths import MethodLike, PositionLike, cell_dir
from steerops.specs import parse_method

TENSORS_FILE = "vectors.safetensors"
METADATA_FILE = "metadata.json"
_PREFIX = "layer_"


# vectors_dir(out, trait, variant, position, component, method)
vectors_dir = partial(cell_dir, "vectors")


def layer_entry(metadata: dict[str, Any], layer: int) -> dict[str, Any]:
    """A vector set's metadata for one layer (`layers.<layer>`: `mean_norm`, `norm_unit`,
    ...); {} when it records none."""
    return (metadata.get("layers") or {}).get(str(layer)) or {}


def recorded_mean_norm(metadata: dict[str, Any], layer: int) -> float | None:
    """The layer's mean activation norm recorded with the vectors (the `norm` unit)."""
    norm = layer_entry(metadata, layer).get("mean_norm")
    return None if norm is None else float(norm)


def is_stored(directory: str | Path) -> bool:
    return all((Path(directory) / name).is_file() for name in (TENSORS_FILE, METADATA_FILE))


def save_vectors(
    directory: str | Path, vectors: dict[int, torch.Tensor], metadata: dict[str, Any]
) -> None:
    """Write one float32 vector per layer and the JSON metadata, atomically."""
    directory = Path(directory)
    tensors = {
        f"{_PREFIX}{layer}": v.detach().to("cpu", torch.float32).reshape(-1)
        for layer, v in sorted(vectors.items())
    }
    save_tensors(directory / TENSORS_FILE, tensors)
    write_json(
        directory / METADATA_FILE, {**metadata, "tensors_md5": file_md5(directory / TENSORS_FILE)}
    )


def load_vectors(
    directory: str | Path, out_flag: str = ""
) -> tuple[dict[int, torch.Tensor], dict[str, Any]]:
    """Read `{layer: vector}` and the metadata written by `save_vectors`; `out_flag` as in
    `vectors_for`, for the command an error suggests."""
    directory = Path(directory)
    for name in (TENSORS_FILE, METADATA_FILE):
        if not (directory / name).is_file():
            raise SteeropsError(
                f"vectors not found: {directory / name} "
                f"(run {rebuild_command(directory.name, out_flag)} first)"
            )
    try:
        tensors = load_tensors(directory / TENSORS_FILE)
        metadata = read_json(directory / METADATA_FILE)
    except Exception as exc:  # corrupt file: name it instead of a library traceback
        raise SteeropsError(
            f"{directory}: unreadable vectors ({exc.__class__.__name__}; "
            f"run {rebuild_command(directory.name, out_flag)} again)"
        ) from None
    if not isinstance(metadata, dict):
        raise SteeropsError(f"{directory / METADATA_FILE}: expected a JSON object")
    if metadata.get("tensors_md5") not in (None, file_md5(directory / TENSORS_FILE)):
        raise SteeropsError(
            f"{directory}: {TENSORS_FILE} does not match {METADATA_FILE} "
            f"(interrupted write? run {rebuild_command(directory.name, out_flag)} again)"
        )
    vectors = {}
    for key, tensor in tensors.items():
        if not key.startswith(_PREFIX) or not key[len(_PREFIX) :].isdigit():
            raise SteeropsError(
                f"{directory / TENSORS_FILE}: unexpected tensor {key!r} (expected layer_<L>)"
            )
        vectors[int(key[len(_PREFIX) :])] = tensor.to(torch.float32)
    return dict(sorted(vectors.items())), metadata


def rebuild_command(method: str, out_flag: str = "") -> str:
    """The command that writes vectors for `method` (a directory's name), into the run
    folder `out_flag` names (" --out DIR"; "": the pipeline's outputs)."""
    try:
        cleaned = parse_method(method).cleaning is not None
    except SteeropsError:
        return f"`steerops vectors{out_flag}`"
    if cleaned:
        return f"`steerops clean --variants {method}{out_flag}`"
    return f"`steerops vectors --methods {method}{out_flag}`"


def vectors_for(
    out: Path,
    trait: str,
    variant: str,
    position: PositionLike,
    component: str,
    method: MethodLike,
    out_flag: str = "",
) -> tuple[dict[int, torch.Tensor], dict[str, Any]]:
    """The vectors a run of `steerops vectors`/`clean` stored for this combination;
    `out_flag` (" --out DIR") goes into the commands the not-found error suggests, when `out`
    is a run's folder, not the pipeline's outputs."""
    parse_method(method)  # an unknown name gets its own error, not "not found"
    directory = vectors_dir(out, trait, variant, position, component, method)
    missing = [
        directory / n for n in (TENSORS_FILE, METADATA_FILE) if not (directory / n).is_file()
    ]
    if missing:
        raise SteeropsError(
            f"vectors not found: {missing[0]} "
            f"({_remedy(out, trait, variant, position, component, method, out_flag)})"
        )
    return load_vectors(directory, out_flag)


def _remedy(
    out: Path,
    trait: str,
    variant: str,
    position: PositionLike,
    component: str,
    method: MethodLike,
    out_flag: str,
) -> str:
    """The commands that make the missing vectors, extraction first when the position's
    activations are missing too."""
    from steerops.specs import parse_position

    # the activations folder (`extract.store.activations_dir`, the same scheme one level up;
    # importing it would make every stage that reads vectors depend on extraction code)
    activations = cell_dir("activations", out, trait, variant, position, component, method).parent
    where = f"--trait {trait} --variant {variant} --position '{parse_position(position).text}'"
    if component != "residual":
        where += f" --component {component}"
    where += out_flag
    make = rebuild_command(str(method))[:-1] + f" {where}`"
    if not (activations / METADATA_FILE).is_file():
        return f"no activations there either: run `steerops extract {where}`, then {make}"
    return f"run {make} first"


def check_hidden_size(vector: torch.Tensor, hidden_size: int, where: str) -> None:
    """Fail with one line when a vector cannot be added to a model's hidden states."""
    if vector.dim() != 1 or vector.shape[0] != hidden_size:
        raise SteeropsError(
            f"{where}: vector has shape {tuple(vector.shape)} but the model's "
            f"hidden size is {hidden_size}"
        )
