"""Activations on disk, as `steerops extract` writes them and every consumer reads them.

    <out>/activations/<cat>/<trait>/<variant>/<position>/<component>/          trait mode
    <out>/tasks/<tasks>/<variant>/<position>/<component>/<condition>/          task-set mode

Each folder holds `activations.safetensors` (`layer_<L>`: [n_examples, hidden]) and
`metadata.json` (row order and provenance; contract in docs/internals.md), and while an
extraction runs, its resumable shards in `.partial/`.

The final tensors file holds one [n_examples, hidden] matrix per layer, more than memory may
hold at once, so `write_streamed` writes it tensor by tensor: the header (names, dtypes,
shapes, byte offsets) is known up front, then each tensor's bytes are appended as it is
produced. The file is byte-compatible with the safetensors format (8-byte little-endian
header length, JSON header padded with spaces to 8 bytes, then the data) and is renamed
into place only when complete. Readers read one layer at a time for the same reason.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from steerops.errors import SteeropsError
from steerops.io import atomic_path, read_json
from steerops.specs import Position, position_slug

TENSORS_FILE = "activations.safetensors"
METADATA_FILE = "metadata.json"
PARTIAL_DIR = ".partial"
_PREFIX = "layer_"

_DTYPE_CODES = {
    torch.float32: "F32",
    torch.bfloat16: "BF16",
    torch.float16: "F16",
    torch.int64: "I64",
    torch.int32: "I32",
}

TensorSpec = tuple[str, tuple[int, ...], torch.dtype]  # name, shape, dtype


def activations_dir(
    out: Path, trait: str, variant: str, position: str | Position, component: str = "residual"
) -> Path:
    return Path(out) / "activations" / trait / variant / position_slug(position) / component


def task_activations_dir(
    out: Path, tasks: str, variant: str, position: str | Position, component: str, condition: str
) -> Path:
    return Path(out) / "tasks" / tasks / variant / position_slug(position) / component / condition


def is_complete(folder: Path) -> bool:
    return (folder / TENSORS_FILE).is_file() and (folder / METADATA_FILE).is_file()


def read_metadata(folder: Path) -> dict[str, Any]:
    return read_json(Path(folder) / METADATA_FILE)


def layer_shapes(folder: Path) -> dict[int, list[int]]:
    """{layer: shape} of the stored tensors, without reading them."""
    with safe_open(str(Path(folder) / TENSORS_FILE), framework="pt") as f:
        return {
            int(k[len(_PREFIX) :]): list(f.get_slice(k).get_shape())
            for k in f.keys()
            if k.startswith(_PREFIX)
        }


def stored_layers(folder: Path) -> list[int]:
    return sorted(layer_shapes(folder))


def read_layer(folder: Path, layer: int) -> torch.Tensor:
    """[n_examples, hidden] float32 activations at `layer` (one layer in memory at a time)."""
    with safe_open(str(Path(folder) / TENSORS_FILE), framework="pt") as f:
        return f.get_tensor(f"{_PREFIX}{layer}").to(torch.float32)


def write_streamed(
    path: str | os.PathLike,
    specs: Sequence[TensorSpec],
    produce: Callable[[str], torch.Tensor],
    metadata: dict[str, str] | None = None,
) -> None:
    """Write tensors named in `specs` (name, shape, dtype), in that order, calling
    `produce(name)` for each only when its turn comes."""
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for name, shape, dtype in specs:
        size = _numel(shape) * torch.empty(0, dtype=dtype).element_size()
        header[name] = {
            "dtype": _DTYPE_CODES[dtype],
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for name, shape, dtype in specs:
            tensor = produce(name).detach().to("cpu").contiguous()
            if tuple(tensor.shape) != tuple(shape) or tensor.dtype != dtype:
                raise ValueError(
                    f"{name}: produced {tuple(tensor.shape)} {tensor.dtype}, "
                    f"declared {tuple(shape)} {dtype}"
                )
            if tensor.numel():
                f.write(memoryview(tensor.view(torch.uint8).numpy()))


def completed(folder: Path, expected_hash: str) -> dict | None:
    """The metadata of a finished extraction with this settings hash in `folder`, else None."""
    if not is_complete(Path(folder)):
        return None
    try:
        meta = read_metadata(folder)
    except (OSError, ValueError):
        return None
    return meta if meta.get("settings_hash") == expected_hash else None


def require_complete(folder: Path, how: str) -> None:
    """Fail with one line naming the missing file and the command (`how`) that writes it."""
    for name in (TENSORS_FILE, METADATA_FILE):
        if not (Path(folder) / name).is_file():
            raise SteeropsError(f"activations not found: {Path(folder) / name} (run {how} first)")


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for dim in shape:
        n *= int(dim)
    return n
