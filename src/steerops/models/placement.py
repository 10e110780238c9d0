"""Where a variant's weights go (`device`, or accelerate's `device_map`), checked before any
weights load or run opens: a device this machine lacks is one line naming its params key,
not a CUDA assertion or a transformers message blamed on the model id after a run opened.
"""

from __future__ import annotations

from typing import Any

import torch

from steerops.errors import SteeropsError

# device_map strings accelerate plans itself (any other string is one device for everything)
PLANS = ("auto", "balanced", "balanced_low_0", "sequential")
OFFLOAD = ("cpu", "disk")  # device_map values that are no accelerator


def check_placement(spec: Any, variant: str) -> None:
    """`spec.device` and `spec.device_map` of variant `variant` (a ModelVariant)."""
    if spec.device is not None:
        _check(spec.device, f"models.{variant}.device")
    placement = spec.device_map
    if isinstance(placement, str):
        if placement not in PLANS:
            _check(placement, f"models.{variant}.device_map", plans=True)
    elif isinstance(placement, dict):
        for module, device in placement.items():
            key = f"models.{variant}.device_map.{module or '(whole model)'}"
            if isinstance(device, bool):  # YAML `true`: not an index
                raise SteeropsError(f"{key}: {device!r} is not a device")
            if isinstance(device, int):
                _check_index(device, key)
            elif device not in OFFLOAD:
                _check(device, key, plans=False, offload=True)


def _check(device: str, key: str, plans: bool = False, offload: bool = False) -> None:
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        kinds = "cpu, cuda, cuda:1, mps"
        if plans:
            kinds = f"{', '.join(PLANS)}, or one device: {kinds}"
        if offload:
            kinds += ", disk, or a GPU index"
        raise SteeropsError(f"{key}: {device!r} is not a device ({kinds})") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (dev.index or 0) >= count:
            raise SteeropsError(f"{key}: {device} is not available ({count} CUDA devices)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise SteeropsError(f"{key}: mps is not available on this machine")


def _check_index(index: int, key: str) -> None:
    """An integer in a device_map: the accelerator with that index."""
    count = _accelerators()
    if not 0 <= index < count:
        raise SteeropsError(f"{key}: device {index} is not available ({count} GPU devices)")


def _accelerators() -> int:
    accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6
    if accelerator is not None:
        return accelerator.device_count() if accelerator.is_available() else 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0
