"""The best layer of one method's vectors, chosen on one half of the val examples and
reported on the other.

The max over layers of a val accuracy is the val accuracy plus the luck of the best draw
(30 layers, ~60 examples): reported on the examples that chose it, it is optimistic. So
`split_val` deals the val examples into a selection half and a held-out half (seeded,
stratified by class, all rollouts of a source prompt and both members of a pair in the
same half, as the train/val split keeps them), `choose` picks the layer with the highest
selection-half accuracy and reports its held-out accuracy with n and a Wilson interval.
The examples of one source prompt (its rollouts; a pair's two members) are not independent
draws, so the interval counts them at their effective size (`stats.clustered_proportion`):
with one example per source it is the examples' Wilson interval.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from steerops import stats
from steerops.vectors.activations import ClassRows, TraitActivations

# extraction draws the train/val split from streams 0 and 1 of the seed
_STREAM = 2
RULE = (
    "highest selection_acc (ties: higher train_acc, then the lower layer, with every layer "
    "tied on both in tied_layers); "
    "reported: heldout_acc with a 95% Wilson interval at the effective n of its source prompts"
)


@dataclass(frozen=True)
class Halves:
    selection: ClassRows
    heldout: ClassRows
    reason: str | None  # why no layer can be chosen and reported (None: one can)
    source: dict[int, str] = field(default_factory=dict)  # val row -> its source prompt

    def heldout_sources(self) -> list[str]:
        """The source prompt of each held-out row, positives then negatives."""
        return [self.source[r] for r in self.heldout.pos.tolist() + self.heldout.neg.tolist()]

    def rows(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """{"selection"/"heldout": (positive rows, negative rows)}; none when degenerate."""
        if self.reason:
            return {}
        return {
            "selection": (self.selection.pos, self.selection.neg),
            "heldout": (self.heldout.pos, self.heldout.neg),
        }


def split_val(acts: TraitActivations, seed: int) -> Halves:
    """Deal the val examples' source prompts into two halves: within each kind of source
    (positive only, negative only, both), a seeded shuffle dealt alternately, so the halves
    differ by at most one source per kind and in all."""
    examples = acts.metadata["examples"]
    polarity = {row: "positive" for row in acts.val.pos.tolist()}
    polarity.update({row: "negative" for row in acts.val.neg.tolist()})
    groups: dict[tuple[str, int], list[int]] = {}
    for row in sorted(polarity):
        source = int(examples[row].get("source_index", row))
        # a paired trait's positive and negative of one prompt share a source (activations
        # without the `paired` flag are split as unpaired)
        groups.setdefault(("" if acts.paired else polarity[row], source), []).append(row)
    kinds: dict[tuple[str, ...], list[tuple[str, int]]] = {}
    for key in sorted(groups):
        kinds.setdefault(tuple(sorted({polarity[r] for r in groups[key]})), []).append(key)
    rng = np.random.default_rng([seed, _STREAM])
    dealt = [kinds[k][i] for k in sorted(kinds) for i in rng.permutation(len(kinds[k]))]
    halves = [{r for key in dealt[start::2] for r in groups[key]} for start in (0, 1)]
    selection, heldout = (_rows(acts.val, half) for half in halves)
    source = {r: f"{key[0]}:{key[1]}" for key, rows in groups.items() for r in rows}
    return Halves(selection, heldout, _reason(acts.val, selection, heldout), source)


def _rows(val: ClassRows, half: set[int]) -> ClassRows:
    def keep(rows: torch.Tensor) -> torch.Tensor:
        return torch.tensor([r for r in rows.tolist() if r in half], dtype=torch.long)

    return ClassRows(keep(val.pos), keep(val.neg))


def _reason(val: ClassRows, selection: ClassRows, heldout: ClassRows) -> str | None:
    if len(val.pos) + len(val.neg) == 0:
        return "no val examples to choose a layer on and report it on (extraction.val_fraction)"
    if min(len(selection.pos), len(selection.neg), len(heldout.pos), len(heldout.neg)) == 0:
        return (
            f"the val examples ({len(val.pos)} positive, {len(val.neg)} negative) cannot give "
            "both halves both classes (too few source prompts of a class in val)"
        )
    return None


def choose(
    layers: dict[str, dict[str, Any]],
    halves: Halves,
    seed: int,
    heldout_hits: Callable[[int], list[float]],
) -> dict[str, Any]:
    """The metadata's `best` record: the chosen layer and its numbers, or None for each with
    the reason. `heldout_hits(layer)`: 1/0 per held-out row (positives, then negatives),
    whether that layer's vector classifies it right."""
    n_selection = len(halves.selection.pos) + len(halves.selection.neg)
    n_heldout = len(halves.heldout.pos) + len(halves.heldout.neg)
    sources = halves.heldout_sources()
    record: dict[str, Any] = {
        "layer": None,
        "train_acc": None,
        "selection_acc": None,
        "selection_n": n_selection,
        "heldout_acc": None,
        "heldout_n": n_heldout,
        "heldout_sources": len(set(sources)),
        "heldout_lo": None,
        "heldout_hi": None,
        "reason": halves.reason,
        "tied_layers": [],
        "rule": RULE,
        "split": {
            "seed": seed,
            "selection": sorted(halves.selection.pos.tolist() + halves.selection.neg.tolist()),
            "heldout": sorted(halves.heldout.pos.tolist() + halves.heldout.neg.tolist()),
        },
    }
    if halves.reason:
        return record
    best = max(
        layers,
        key=lambda k: (layers[k]["selection_acc"], layers[k]["train_acc"], -int(k)),
    )
    values = layers[best]
    # layers no accuracy tells apart (every layer at 1.0 on an easy trait): the lowest is
    # recorded, which says nothing about where to steer
    tied = sorted(
        int(k)
        for k, v in layers.items()
        if (v["selection_acc"], v["train_acc"]) == (values["selection_acc"], values["train_acc"])
    )
    heldout = stats.clustered_proportion(heldout_hits(int(best)), sources)
    record.update(
        layer=int(best),
        train_acc=values["train_acc"],
        selection_acc=values["selection_acc"],
        heldout_acc=heldout.mean,
        heldout_lo=heldout.lo,
        heldout_hi=heldout.hi,
        tied_layers=tied if len(tied) > 1 else [],
    )
    return record
