"""The activations store: the streamed writer writes a valid safetensors file."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from steerops.extract.store import write_streamed


def test_streamed_writer_is_a_valid_safetensors_file(tmp_path):
    tensors = {
        "layer_3": torch.randn(5, 7),
        "b": torch.randn(3, 2).to(torch.bfloat16),
        "rows": torch.arange(4),
        "empty": torch.zeros(0, 4),
    }
    specs = [(k, tuple(v.shape), v.dtype) for k, v in tensors.items()]
    produced = []

    def produce(name):
        produced.append(name)
        return tensors[name]

    path = tmp_path / "x.safetensors"
    write_streamed(path, specs, produce, metadata={"format": "pt", "n": 3})
    assert produced == list(tensors)  # produced lazily, in order
    loaded = load_file(path)
    for k, v in tensors.items():
        assert loaded[k].dtype == v.dtype and torch.equal(loaded[k], v)
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"format": "pt", "n": "3"}
    before = path.read_bytes()
    with pytest.raises(ValueError, match="layer_3"):
        write_streamed(path, [("layer_3", (5, 8), torch.float32)], lambda n: tensors[n])
    assert path.read_bytes() == before  # a failed write leaves the old file
    assert [p.name for p in tmp_path.iterdir()] == ["x.safetensors"]
