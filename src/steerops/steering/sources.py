"""The vector sets a steering evaluation reads, loaded once each.

`VectorSources` loads each (method, position, component) vector set of a vector variant
once, checks it fits the steered model, and knows its file hash (so a result is never served
from cache after the vectors were recomputed under the same name) and each layer's mean
activation norm (the `norm` coefficient unit).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from steerops.errors import SteeropsError
from steerops.io import file_md5
from steerops.steering.configs import VectorRef, VectorSource
from steerops.vectors.store import TENSORS_FILE, check_hidden_size, vectors_dir, vectors_for


class VectorSources:
    def __init__(self, out: Path, trait: str, variant: str, hidden_size: int):
        self.out, self.trait, self.variant, self.hidden_size = out, trait, variant, hidden_size
        self._sets: dict[VectorSource, tuple[dict[int, torch.Tensor], dict, str]] = {}

    def load(self, source: VectorSource) -> tuple[dict[int, torch.Tensor], dict[str, Any], str]:
        """(vectors by layer, metadata, md5 of the tensors file)."""
        if source not in self._sets:
            args = (
                self.out,
                self.trait,
                self.variant,
                source.position,
                source.component,
                source.method,
            )
            vectors, metadata = vectors_for(*args)
            folder = vectors_dir(*args)
            for layer, vector in vectors.items():
                check_hidden_size(vector, self.hidden_size, f"{folder} layer_{layer}")
            self._sets[source] = (vectors, metadata, file_md5(folder / TENSORS_FILE))
        return self._sets[source]

    def vector(self, ref: VectorRef) -> torch.Tensor:
        vectors, _, _ = self.load(ref.source)
        if ref.layer not in vectors:
            have = ", ".join(map(str, sorted(vectors))) or "none"
            raise SteeropsError(
                f"vectors {ref.method} at {ref.position}/{ref.component}: no "
                f"layer {ref.layer} (layers: {have})"
            )
        return vectors[ref.layer]

    def layer_norm(self, ref: VectorRef) -> float:
        """The layer's mean activation norm recorded with the vectors."""
        _, metadata, _ = self.load(ref.source)
        entry = (metadata.get("layers") or {}).get(str(ref.layer)) or {}
        if entry.get("mean_norm") is None:
            raise SteeropsError(
                f"vectors {ref.method} at {ref.position}/{ref.component}: "
                f"metadata has no layers.{ref.layer}.mean_norm (needed by "
                "coefficient_unit: norm)"
            )
        return float(entry["mean_norm"])

    def norm_unit(self, ref: VectorRef) -> str:
        """What the layer's `mean_norm` measures: "token" (the mean per-token norm) or, for
        vectors built from older activations, "pooled_window"."""
        _, metadata, _ = self.load(ref.source)
        entry = (metadata.get("layers") or {}).get(str(ref.layer)) or {}
        return str(entry.get("norm_unit") or "pooled_window")

    def file_hashes(self, refs: tuple[VectorRef, ...]) -> dict[str, str]:
        """{"method|position|component": md5} of the vector files `refs` use."""
        return {f"{r.method}|{r.position}|{r.component}": self.load(r.source)[2] for r in refs}
