"""What an interrupted run's kept tokens are keyed by besides the model: where its weights
go and on what hardware (`placement`)."""

from __future__ import annotations

import pytest
import torch

from steerops.config import Params
from steerops.models.identity import placement


def _params(**spec) -> Params:
    return Params.model_validate({"models": {"base": {"id": "m", **spec}}})


@pytest.fixture
def gpus(monkeypatch):
    """This machine's accelerators, as torch reports them (a list the test sets)."""
    names: list[str] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: bool(names))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(names))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: names[i])
    return names


def test_the_same_params_on_other_accelerators_are_another_placement(gpus):
    """`device: cuda` (or a `device_map` plan) on an A100, then on an H100: the same params,
    other kernels, so another key; on CPU the accelerators present do not matter."""
    on_gpu = _params(device="cuda")
    gpus[:] = ["NVIDIA A100-SXM4-80GB"]
    a100 = placement(on_gpu, "base")
    gpus[:] = ["NVIDIA H100 80GB HBM3"]
    h100 = placement(on_gpu, "base")
    assert a100 != h100 and h100["hardware"] == ["NVIDIA H100 80GB HBM3"]
    mapped = _params(device=None, device_map="auto")
    with_gpu = placement(mapped, "base")
    gpus.clear()
    assert placement(mapped, "base") != with_gpu  # `auto` on a machine without one: CPU
    assert placement(mapped, "base")["hardware"] == ["cpu"]
    on_cpu = _params(device="cpu")
    gpus[:] = ["NVIDIA H100 80GB HBM3"]
    assert placement(on_cpu, "base")["hardware"] == ["cpu"]
    offloaded = _params(device=None, device_map={"": "cpu"})
    assert placement(offloaded, "base")["hardware"] == ["cpu"]
    assert placement(on_cpu, "base")["torch"] == torch.__version__
