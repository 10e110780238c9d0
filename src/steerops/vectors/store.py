"""Steering vectors on disk: `vectors.safetensors` (`layer_<L>`: [hidden] float32 unit
vectors) and `metadata.json` beside it (contract in docs/internals.md).

Both files are written atomically; the tensors first, so a reader that finds
`metadata.json` never pairs it with missing tensors from an interrupted write.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from steerops.errors import SteeropsError
from steerops.io import load_tensors, read_json, save_tensors, write_json
from steerops.paths import vectors_dir

TENSORS_FILE = "vectors.safetensors"
METADATA_FILE = "metadata.json"
_PREFIX = "layer_"


def save_vectors(directory: str | Path, vectors: dict[int, torch.Tensor],
                 metadata: dict[str, Any]) -> None:
    """Write one float32 vector per layer and the JSON metadata, atomically."""
    directory = Path(directory)
    tensors = {f"{_PREFIX}{layer}": v.detach().to("cpu", torch.float32).reshape(-1)
               for layer, v in sorted(vectors.items())}
    save_tensors(directory / TENSORS_FILE, tensors)
    write_json(directory / METADATA_FILE, metadata)


def load_vectors(directory: str | Path) -> tuple[dict[int, torch.Tensor], dict[str, Any]]:
    """Read `{layer: vector}` and the metadata written by `save_vectors`."""
    directory = Path(directory)
    for name in (TENSORS_FILE, METADATA_FILE):
        if not (directory / name).is_file():
            raise SteeropsError(f"vectors not found: {directory / name} "
                                f"(run `steerops vectors`, or `steerops clean` for a cleaned "
                                f"method, first)")
    try:
        tensors = load_tensors(directory / TENSORS_FILE)
        metadata = read_json(directory / METADATA_FILE)
    except Exception as exc:  # corrupt file: name it instead of a library traceback
        raise SteeropsError(f"{directory}: unreadable vectors ({exc.__class__.__name__})") \
            from None
    vectors = {}
    for key, tensor in tensors.items():
        if not key.startswith(_PREFIX) or not key[len(_PREFIX):].isdigit():
            raise SteeropsError(f"{directory / TENSORS_FILE}: unexpected tensor {key!r} "
                                f"(expected layer_<L>)")
        vectors[int(key[len(_PREFIX):])] = tensor.to(torch.float32)
    return dict(sorted(vectors.items())), metadata


def vectors_for(params, trait: str, variant: str, position: str, component: str,
                method: str) -> tuple[dict[int, torch.Tensor], dict[str, Any]]:
    """The vectors a run of `steerops vectors`/`clean` stored for this combination."""
    return load_vectors(vectors_dir(params.out, trait, variant, position, component, method))


def check_hidden_size(vector: torch.Tensor, hidden_size: int, where: str) -> None:
    """Fail with one line when a vector cannot be added to a model's hidden states."""
    size = vector.shape[-1] if vector.dim() else 0
    if vector.dim() != 1 or size != hidden_size:
        raise SteeropsError(f"{where}: vector has shape {tuple(vector.shape)} but the model's "
                            f"hidden size is {hidden_size}")
