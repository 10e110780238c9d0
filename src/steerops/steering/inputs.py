"""What a steering result depends on besides its config: the vector files and the weights.

`VectorSources` loads each (method, position, component) vector set of a vector variant
once, checks it fits the steered model, and knows its file hash (so a result is never served
from cache after the vectors were recomputed under the same name).
"""

from __future__ import annotations

from typing import Any

import torch

from steerops.errors import SteeropsError
from steerops.io import file_md5
from steerops.paths import vectors_dir


class VectorSources:
    def __init__(self, params, trait: str, variant: str, hidden_size: int):
        self.params, self.trait, self.variant, self.hidden_size = (
            params, trait, variant, hidden_size)
        self._sets: dict[tuple[str, str, str], tuple[dict[int, torch.Tensor], dict, str]] = {}

    def load(self, method: str, position: str,
             component: str) -> tuple[dict[int, torch.Tensor], dict[str, Any], str]:
        """(vectors by layer, metadata, md5 of the tensors file)."""
        key = (method, position, component)
        if key not in self._sets:
            from steerops.vectors.store import TENSORS_FILE, check_hidden_size, vectors_for

            vectors, metadata = vectors_for(self.params, self.trait, self.variant, position,
                                            component, method)
            folder = vectors_dir(self.params.out, self.trait, self.variant, position,
                                 component, method)
            for layer, vector in vectors.items():
                check_hidden_size(vector, self.hidden_size, f"{folder} layer_{layer}")
            self._sets[key] = (vectors, metadata, file_md5(folder / TENSORS_FILE))
        return self._sets[key]

    def vector(self, method: str, position: str, component: str, layer: int) -> torch.Tensor:
        vectors, _, _ = self.load(method, position, component)
        if layer not in vectors:
            have = ", ".join(map(str, sorted(vectors))) or "none"
            raise SteeropsError(f"vectors {method} at {position}/{component}: no layer "
                                f"{layer} (layers: {have})")
        return vectors[layer]

    def layer_norm(self, method: str, position: str, component: str, layer: int) -> float:
        """The layer's mean activation norm recorded with the vectors."""
        _, metadata, _ = self.load(method, position, component)
        entry = (metadata.get("layers") or {}).get(str(layer)) or {}
        if entry.get("mean_norm") is None:
            raise SteeropsError(f"vectors {method} at {position}/{component}: metadata has no "
                                f"layers.{layer}.mean_norm (needed by coefficient_unit: norm)")
        return float(entry["mean_norm"])

    def file_hashes(self, refs) -> dict[str, str]:
        """{"method|position|component": md5} of the vector files `refs` use."""
        return {f"{r.method}|{r.position}|{r.component}":
                self.load(r.method, r.position, r.component)[2] for r in refs}
