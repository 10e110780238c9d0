"""Read trait activations (the `steerops extract` contract) for vector fitting.

Tensors are read one layer at a time, so memory holds one [n_examples, hidden] matrix
whatever the number of layers. Row order inside each class is sorted by
(source_index, rollout): with paired datasets, positive row i and negative row i then come
from the same source prompt, which is what `pca` pairs on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from steerops.errors import SteeropsError
from steerops.io import file_md5, read_json
from steerops.paths import activations_dir

TENSORS_FILE = "activations.safetensors"
METADATA_FILE = "metadata.json"


@dataclass
class ClassRows:
    """Row indices of the positive and negative examples of one split."""

    pos: torch.Tensor
    neg: torch.Tensor


@dataclass
class TraitActivations:
    directory: Path
    metadata: dict[str, Any]
    layers: list[int]
    hidden_size: int
    file_hash: str  # MD5 of activations.safetensors, the hash DVC records for it
    train: ClassRows
    val: ClassRows

    def layer(self, layer: int) -> torch.Tensor:
        """[n_examples, hidden] float32 activations at `layer`."""
        with safe_open(str(self.directory / TENSORS_FILE), framework="pt") as f:
            return f.get_tensor(f"layer_{layer}").to(torch.float32)

    def mean_norm(self, layer: int) -> float | None:
        value = (self.metadata.get("mean_norm") or {}).get(str(layer))
        return None if value is None else float(value)


def load_activations(params, trait: str, variant: str, position: str,
                     component: str) -> TraitActivations:
    directory = activations_dir(params.out, trait, variant, position, component)
    tensors, meta_file = directory / TENSORS_FILE, directory / METADATA_FILE
    for path in (tensors, meta_file):
        if not path.is_file():
            raise SteeropsError(f"activations not found: {path} (run `steerops extract "
                                f"--trait {trait} --variant {variant} --position "
                                f"'{position}'` first)")
    meta = read_json(meta_file)
    if not isinstance(meta.get("examples"), list):
        raise SteeropsError(f"{meta_file}: missing key 'examples'")
    with safe_open(str(tensors), framework="pt") as f:
        shapes = {key: f.get_slice(key).get_shape() for key in f.keys()}
    layers = sorted(int(k[len("layer_"):]) for k in shapes if k.startswith("layer_"))
    if not layers:
        raise SteeropsError(f"{tensors}: no layer_<L> tensors")
    hidden = int(meta.get("hidden_size") or shapes[f"layer_{layers[0]}"][-1])
    expected = [len(meta["examples"]), hidden]
    for layer in layers:
        if list(shapes[f"layer_{layer}"]) != expected:
            raise SteeropsError(f"{tensors}: layer_{layer} has shape {shapes[f'layer_{layer}']}"
                                f", metadata says {expected} (examples x hidden_size)")
    train, val = _split_rows(meta["examples"], meta_file)
    return TraitActivations(directory, meta, layers, hidden, file_md5(tensors), train, val)


def _split_rows(examples: list[dict], where: Path) -> tuple[ClassRows, ClassRows]:
    rows: dict[tuple[str, str], list[tuple[int, int, int]]] = {}
    for i, ex in enumerate(examples):
        polarity, split = ex.get("polarity"), ex.get("split", "train")
        if polarity not in ("positive", "negative"):
            raise SteeropsError(f"{where}: examples[{i}].polarity: expected positive or "
                                f"negative (got {polarity!r})")
        if split not in ("train", "val"):
            raise SteeropsError(f"{where}: examples[{i}].split: expected train or val "
                                f"(got {split!r})")
        key = (int(ex.get("source_index", i)), int(ex.get("rollout", 0)), i)
        rows.setdefault((split, polarity), []).append(key)

    def indices(split: str, polarity: str) -> torch.Tensor:
        return torch.tensor([i for *_, i in sorted(rows.get((split, polarity), []))],
                            dtype=torch.long)

    train = ClassRows(indices("train", "positive"), indices("train", "negative"))
    if len(train.pos) == 0 or len(train.neg) == 0:
        raise SteeropsError(f"{where}: need train examples of both polarities "
                            f"(positive: {len(train.pos)}, negative: {len(train.neg)})")
    return train, ClassRows(indices("val", "positive"), indices("val", "negative"))
