"""What identifies the model a variant loads, for the records and settings hashes of stages
that must notice new weights under an unchanged name (nothing is loaded)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def variant_identity(params, variant: str) -> dict[str, Any]:
    """`{variant, id, revision, fingerprint[, snapshot][, chat_template_md5]}`: the content
    fingerprint of what the variant loads; for a hub id the cache holds whole, the commit of
    the snapshot read (`revision` is what params ask, often none: this is the hub revision a
    reader can map the results back to); and the md5 of a chat template params name (the
    tokenizer's own, or a chat_template.json beside it, is in the fingerprint already)."""
    from steerops.io import text_md5
    from steerops.models.chat_template import chat_template
    from steerops.models.fingerprint import model_fingerprint
    from steerops.models.hub import cached_snapshot
    from steerops.models.loading import model_source

    spec = params.variant(variant)
    source = model_source(params, variant)
    identity = {
        "variant": variant,
        "id": spec.id,
        "revision": spec.revision,
        "fingerprint": model_fingerprint(source, spec.revision),
    }
    if not Path(source).is_dir():
        try:
            snapshot = cached_snapshot(source, spec.revision)
        except ValueError:  # not a hub id's shape: nothing to name
            snapshot = None
        if snapshot is not None:
            identity["snapshot"] = snapshot.name
    template = chat_template(params, variant)
    if template is not None:
        identity["chat_template_md5"] = text_md5(template)
    return identity


def placement(params, variant: str) -> dict[str, Any]:
    """Where the variant's weights go (`device`, `device_map`) and on what: the accelerators
    this machine would use for them and the torch build. An interrupted run's kept tokens
    depend on these too, as kernels differ between devices, so a resume elsewhere starts
    afresh rather than mix two devices' greedy tokens in one output."""
    import torch

    spec = params.variant(variant)
    places = [spec.device] if spec.device_map is None else _mapped(spec.device_map)
    on_cpu = all(str(p) in ("cpu", "disk") for p in places)
    gpus = [] if on_cpu or not torch.cuda.is_available() else _gpu_names()
    return {
        "device": spec.device,
        "device_map": spec.device_map,
        "hardware": gpus or ["cpu"],
        "torch": torch.__version__,
    }


def _mapped(device_map: Any) -> list[Any]:
    """The places a device_map names (a plan such as `auto` may use any accelerator)."""
    return list(device_map.values()) if isinstance(device_map, dict) else [device_map]


def _gpu_names() -> list[str]:
    import torch

    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
