"""What identifies the model a variant loads, for the records and settings hashes of stages
that must notice new weights under an unchanged name (nothing is loaded)."""

from __future__ import annotations

from typing import Any


def variant_identity(params, variant: str) -> dict[str, Any]:
    """`{variant, id, revision, fingerprint[, chat_template_md5]}`: the content fingerprint
    of what the variant loads, and the md5 of a chat template params name (the tokenizer's
    own, or a chat_template.json beside it, is in the fingerprint already)."""
    from steerops.io import text_md5
    from steerops.models.chat_template import chat_template
    from steerops.models.fingerprint import model_fingerprint
    from steerops.models.loading import model_source

    spec = params.variant(variant)
    identity = {
        "variant": variant,
        "id": spec.id,
        "revision": spec.revision,
        "fingerprint": model_fingerprint(model_source(params, variant), spec.revision),
    }
    template = chat_template(params, variant)
    if template is not None:
        identity["chat_template_md5"] = text_md5(template)
    return identity


def placement(params, variant: str) -> dict[str, Any]:
    """Where the variant's weights go (`device`, `device_map`): what an interrupted run's
    kept tokens also depend on, as kernels differ between devices; a resume elsewhere starts
    afresh rather than mix two devices' greedy tokens in one output."""
    spec = params.variant(variant)
    return {"device": spec.device, "device_map": spec.device_map}
