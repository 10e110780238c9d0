"""The vector sets a steering evaluation reads, loaded once each.

`VectorSources` loads each (method, position, component) vector set of a vector variant
once, checks it fits the steered model, and knows its file hash (so a result is never served
from cache after the vectors were recomputed under the same name) and each layer's mean
activation norm (the `norm` coefficient unit).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from steerops.calibration.store import calibration_file
from steerops.errors import SteeropsError
from steerops.extract import store as activation_store
from steerops.io import file_md5, read_json
from steerops.steering.configs import VectorRef, VectorSource
from steerops.vectors.store import (
    TENSORS_FILE,
    check_hidden_size,
    layer_entry,
    rebuild_command,
    recorded_mean_norm,
    vectors_dir,
    vectors_for,
)


class VectorSources:
    def __init__(
        self,
        out: Path,
        trait: str,
        variant: str,
        hidden_size: int,
        out_flag: str = "",
        traits_root: Path | None = None,
        params=None,
    ):
        self.out, self.trait, self.variant, self.hidden_size = out, trait, variant, hidden_size
        self.out_flag = out_flag  # " --out DIR" in a missing vector's hint (--inputs DIR)
        self.traits_root = traits_root  # the trait prompts' folder (stale activations)
        self.params = params  # the model it names for `variant` (activations of another)
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
            vectors, metadata = vectors_for(*args, self.out_flag)
            folder = vectors_dir(*args)
            for layer, vector in vectors.items():
                check_hidden_size(vector, self.hidden_size, f"{folder} layer_{layer}")
            self._sets[source] = (vectors, metadata, file_md5(folder / TENSORS_FILE))
        return self._sets[source]

    def check_current(self, source: VectorSource) -> None:
        """Refuse vectors whose activations or calibration have changed since they were
        built (extract or calibrate rerun by hand, vectors not): the run would steer with
        an old direction, or old removed dims, under today's inputs. DVC reruns them
        together; an input that is gone cannot be compared and is not."""
        _, metadata, _ = self.load(source)
        what = f"vectors {source.method} at {source.position}/{source.component}"
        rerun = rebuild_command(source.method, self.out_flag)
        acts = activation_store.activations_dir(
            self.out, self.trait, self.variant, source.position, source.component
        )
        built_from = metadata.get("source_hash")
        if activation_store.is_complete(acts):
            acts_meta = activation_store.read_metadata(acts)
            if built_from:
                now = acts_meta.get("tensors_md5") or file_md5(acts / activation_store.TENSORS_FILE)
                if now != built_from:
                    raise SteeropsError(
                        f"{what} were built from other activations than {acts} now holds "
                        f"(extracted again since?): rerun {rerun}"
                    )
            changed = activation_store.changed_source(
                acts_meta, self.out, self.traits_root, self.trait, self.variant, source.position
            )
            if changed is None and self.params is not None:
                changed = activation_store.other_model(acts_meta, self.params, self.variant)
            if changed is not None:
                extract = activation_store.extract_command(
                    self.trait, self.variant, source.position, source.component, self.out_flag
                )
                raise SteeropsError(
                    f"{what}: their activations {acts} were extracted from {changed}: rerun "
                    f"{extract}, then {rerun}"
                )
        record = metadata.get("calibration") or {}
        if record.get("md5") and record.get("variant"):
            file = calibration_file(self.out, str(record["variant"]))
            if file.is_file() and file_md5(file) != record["md5"]:
                read_json(file)  # a damaged file is named as such, not as a rerun
                raise SteeropsError(
                    f"{what} removed the dims of another calibration than {file} now "
                    f"holds (calibrated again since?): rerun {rerun}"
                )

    def vector(self, ref: VectorRef) -> torch.Tensor:
        vectors, _, _ = self.load(ref.source)
        if ref.layer not in vectors:
            have = sorted(vectors)
            # the layers extracted so far and this one (another set replaces the folder's)
            wanted = ",".join(map(str, sorted({*have, ref.layer})))
            extract = activation_store.extract_command(
                self.trait, self.variant, ref.position, ref.component, self.out_flag, wanted
            )
            # the pipeline's vectors on the project's params.yaml, the file `dvc repro` reads
            pipeline = self.params is not None and not self.params.inputs_named
            pipeline = pipeline and self.params.file is not None and not self.params.params_flag
            tracked = (
                f"; or, on the pipeline, list {ref.layer} in params.yaml's extraction.layers "
                "and run `dvc repro`"
                if pipeline
                else ""
            )
            raise SteeropsError(
                f"vectors {ref.method} at {ref.position}/{ref.component}: no layer "
                f"{ref.layer} (layers: {', '.join(map(str, have)) or 'none'}): extract it "
                f"with them ({extract}), then rerun {rebuild_command(ref.method, self.out_flag)}"
                f"{tracked}"
            )
        return vectors[ref.layer]

    def layer_norm(self, ref: VectorRef) -> float:
        """The layer's mean activation norm recorded with the vectors."""
        _, metadata, _ = self.load(ref.source)
        norm = recorded_mean_norm(metadata, ref.layer)
        if norm is None and layer_entry(metadata, ref.layer).get("norm_unit") == "token":
            norm = float("nan")  # a non-finite unit is null once in JSON
        if norm is None:
            raise SteeropsError(
                f"vectors {ref.method} at {ref.position}/{ref.component}: "
                f"metadata has no layers.{ref.layer}.mean_norm (needed by "
                "coefficient_unit: norm)"
            )
        if not math.isfinite(norm) or norm <= 0:
            # a NaN unit would steer every row with NaN weights, silently
            raise SteeropsError(
                f"vectors {ref.method} at {ref.position}/{ref.component}: the `norm` unit "
                f"at layer {ref.layer} is {norm} (no finite activation at a kept prompt token "
                "when extracted: the model overflowed in its dtype, or no prompt token was "
                "kept): load the model in bfloat16 or float32 (models.<variant>.dtype) and "
                "extract again, leave the layer out of steering.layers, or steer with "
                "coefficient_unit: absolute"
            )
        return norm

    def norm_unit(self, ref: VectorRef) -> str:
        """What the layer's `mean_norm` measures: "token" (the mean per-token norm) or, for
        vectors built from older activations, "pooled_window"."""
        _, metadata, _ = self.load(ref.source)
        return str(layer_entry(metadata, ref.layer).get("norm_unit") or "pooled_window")

    def file_hashes(self, refs: tuple[VectorRef, ...]) -> dict[str, str]:
        """{"method|position|component": md5} of the vector files `refs` use."""
        return {r.file_key: self.load(r.source)[2] for r in refs}
