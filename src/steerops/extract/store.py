"""Write a safetensors file one tensor at a time.

`safetensors.save_file` needs every tensor in memory at once; the final activations file
holds one [n_examples, hidden] matrix per layer, so it is written here tensor by tensor
instead: the header (names, dtypes, shapes, byte offsets) is known up front, then each
tensor's bytes are appended as it is produced. The file is byte-compatible with the
safetensors format (8-byte little-endian header length, JSON header padded with spaces to
8 bytes, then the data) and is renamed into place only when complete.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence

import torch

from steerops.io import atomic_path

_DTYPE_CODES = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16",
                torch.int64: "I64", torch.int32: "I32"}


TensorSpec = tuple[str, tuple[int, ...], torch.dtype]  # name, shape, dtype


def write_streamed(path: str | os.PathLike, specs: Sequence[TensorSpec],
                   produce: Callable[[str], torch.Tensor],
                   metadata: dict[str, str] | None = None) -> None:
    """Write tensors named in `specs` (name, shape, dtype), in that order, calling
    `produce(name)` for each only when its turn comes."""
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for name, shape, dtype in specs:
        size = _numel(shape) * torch.empty(0, dtype=dtype).element_size()
        header[name] = {"dtype": _DTYPE_CODES[dtype], "shape": list(shape),
                        "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for name, shape, dtype in specs:
            tensor = produce(name).detach().to("cpu").contiguous()
            if tuple(tensor.shape) != tuple(shape) or tensor.dtype != dtype:
                raise ValueError(f"{name}: produced {tuple(tensor.shape)} {tensor.dtype}, "
                                 f"declared {tuple(shape)} {dtype}")
            if tensor.numel():
                f.write(memoryview(tensor.view(torch.uint8).numpy()))


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for dim in shape:
        n *= int(dim)
    return n
