"""Read trait activations (the `steerops extract` contract) for vector fitting.

Tensors are read one layer at a time, so memory holds one [n_examples, hidden] matrix
whatever the number of layers. Row order inside each class is sorted by
(source_index, rollout). `ClassRows.pairs` matches rows by (source_index, rollout) across
the classes, which is what `pca` subtracts on a paired trait (metadata `paired`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from steerops.errors import SteeropsError
from steerops.extract import store
from steerops.io import file_md5
from steerops.specs import Position
from steerops.traits import POLARITIES


@dataclass
class ClassRows:
    """Row indices of the positive and negative examples of one split."""

    pos: torch.Tensor
    neg: torch.Tensor
    # (positive rows, negative rows) with the same (source_index, rollout), in that order
    pairs: tuple[torch.Tensor, torch.Tensor] | None = None


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
        return store.read_layer(self.directory, layer)

    @property
    def paired(self) -> bool | None:
        """Whether the trait pairs its prompts (None: activations that predate the flag)."""
        value = self.metadata.get("paired")
        return None if value is None else bool(value)

    def mean_norm(self, layer: int) -> float | None:
        """Mean norm of the pooled rows (depends on the window; a record only)."""
        value = (self.metadata.get("mean_norm") or {}).get(str(layer))
        return None if value is None else float(value)

    def token_norm(self, layer: int) -> dict | None:
        """The per-token norm summary (`steerops.extract.token_norm`), None when the
        activations predate it."""
        return (self.metadata.get("token_norm") or {}).get(str(layer))

    def norm_unit(self, layer: int) -> tuple[float | None, str]:
        """(the `norm` coefficient unit, its kind): the mean per-token norm (NaN where the
        extraction recorded none: an activation at a kept prompt token was not finite, and
        JSON holds that as null), or for older activations the pooled rows' mean norm."""
        entry = self.token_norm(layer)
        if entry is not None and "token_norm" in entry:
            value = entry["token_norm"]
            return float("nan") if value is None else float(value), "token"
        return self.mean_norm(layer), "pooled_window"


def load_activations(
    out: Path,
    trait: str,
    variant: str,
    position: Position | str,
    component: str,
    out_flag: str = "",
    traits_root: Path | None = None,
    params=None,
) -> TraitActivations:
    """`out_flag` (e.g. " --out runs/mine"): what the extract command it suggests needs to
    write where this run reads. Activations extracted from other responses or prompts than
    the pipeline holds now (`traits_root`: where the trait's prompts are), or from another
    model than `params` name for `variant` now, are refused."""
    directory = store.activations_dir(out, trait, variant, position, component)
    rerun = store.extract_command(trait, variant, position, component, out_flag)
    store.require_complete(directory, rerun)
    tensors, meta_file = directory / store.TENSORS_FILE, directory / store.METADATA_FILE
    meta = store.read_metadata(directory)
    if not isinstance(meta.get("examples"), list):
        raise SteeropsError(f"{meta_file}: missing key 'examples'")
    changed = store.changed_source(meta, out, traits_root, trait, variant, position)
    if changed is not None:
        raise SteeropsError(f"{directory}: extracted from {changed}: rerun {rerun}")
    if params is not None and (other := store.other_model(meta, params, variant)):
        raise SteeropsError(f"{directory}: extracted from {other}: rerun {rerun}")
    shapes = store.layer_shapes(directory)
    layers = sorted(shapes)
    if not layers:
        raise SteeropsError(f"{tensors}: no layer_<L> tensors")
    hidden = int(meta.get("hidden_size") or shapes[layers[0]][-1])
    expected = [len(meta["examples"]), hidden]
    for layer in layers:
        if shapes[layer] != expected:
            raise SteeropsError(
                f"{tensors}: layer_{layer} has shape {shapes[layer]}"
                f", metadata says {expected} (examples x hidden_size)"
            )
    md5 = file_md5(tensors)
    recorded = meta.get("tensors_md5")
    if recorded is not None and md5 != recorded:  # older extractions record none
        raise SteeropsError(
            f"{tensors}: does not match the MD5 in {store.METADATA_FILE}; rerun {rerun}"
        )
    train, val = _split_rows(meta["examples"], meta_file)
    return TraitActivations(directory, meta, layers, hidden, md5, train, val)


def _split_rows(examples: list[dict], where: Path) -> tuple[ClassRows, ClassRows]:
    rows: dict[tuple[str, str], list[tuple[int, int, int]]] = {}
    for i, ex in enumerate(examples):
        polarity, split = ex.get("polarity"), ex.get("split", "train")
        if polarity not in POLARITIES:
            raise SteeropsError(
                f"{where}: examples[{i}].polarity: expected positive or negative (got {polarity!r})"
            )
        if split not in ("train", "val"):
            raise SteeropsError(
                f"{where}: examples[{i}].split: expected train or val (got {split!r})"
            )
        key = (int(ex.get("source_index", i)), int(ex.get("rollout", 0)), i)
        rows.setdefault((split, polarity), []).append(key)

    def indices(split: str, polarity: str) -> torch.Tensor:
        return torch.tensor(
            [i for *_, i in sorted(rows.get((split, polarity), []))], dtype=torch.long
        )

    def pairs(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        negative = {(s, r): i for s, r, i in rows.get((split, "negative"), [])}
        matched = [
            (i, negative[(s, r)])
            for s, r, i in sorted(rows.get((split, "positive"), []))
            if (s, r) in negative
        ]
        return (
            torch.tensor([p for p, _ in matched], dtype=torch.long),
            torch.tensor([n for _, n in matched], dtype=torch.long),
        )

    train = ClassRows(indices("train", "positive"), indices("train", "negative"), pairs("train"))
    if len(train.pos) == 0 or len(train.neg) == 0:
        raise SteeropsError(
            f"{where}: need train examples of both polarities "
            f"(positive: {len(train.pos)}, negative: {len(train.neg)})"
        )
    return train, ClassRows(indices("val", "positive"), indices("val", "negative"), pairs("val"))


# Mean differences below this share of the rows' mean norm are float rounding, not a trait:
# the same inputs summed in another order differ by about 1e-7 of their norm.
SAME_CLASSES = 1e-5


def check_classes_differ(acts: TraitActivations, trait: str, position: str) -> None:
    """A clear error, before anything is written, when the positive and negative examples
    carry the same activations at a layer: every method would fit rounding noise there
    (mean_diff would scale it to a unit vector, the probe would fail half-way through the
    stage). At every layer: the same prompts read where responses are not; at some: e.g. a
    sliding-window layer whose window sees only the chat template's shared ending."""
    pos = torch.cat([acts.train.pos, acts.val.pos])
    neg = torch.cat([acts.train.neg, acts.val.neg])
    same: dict[int, float] = {}
    for layer in acts.layers:
        x = acts.layer(layer).double()
        scale = float(x.norm(dim=1).mean())
        gap = float((x[pos].mean(0) - x[neg].mean(0)).norm())
        if gap <= SAME_CLASSES * scale:
            same[layer] = gap / scale if scale > 0 else 0.0
    if not same:
        return
    largest = max(same.values())
    if len(same) == len(acts.layers):
        raise SteeropsError(
            f"{trait} at {position!r}: the positive and negative examples' activations do not "
            f"differ at any layer (largest mean difference {largest:.1e} of their norm): are "
            f"the positive and negative prompts the same? ({acts.directory})"
        )
    raise SteeropsError(
        f"{trait} at {position!r}: the positive and negative examples' activations do not "
        f"differ at layer(s) {', '.join(map(str, sorted(same)))} (largest mean difference "
        f"{largest:.1e} of their norm; the other layers differ): no method can fit a "
        "direction there; leave them out of extraction.layers and extract again "
        f"({acts.directory})"
    )
