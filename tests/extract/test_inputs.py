"""The seeded train/val split of extraction inputs: a polarity with two or more source
prompts keeps at least one of them on each side whenever a val share is asked for, and a
prompt's rollouts share its split."""

from __future__ import annotations

import numpy as np
import pytest

from steerops.extract.engine import Example
from steerops.extract.inputs import assign_splits


def _splits(n_sources: dict[str, int], val_fraction: float, seed: int) -> dict[str, list[str]]:
    """{polarity: the split of each source prompt}, from two rollouts per prompt."""
    examples = [
        Example(np.zeros(1, dtype=np.int64), 1, {"polarity": p, "source_index": i, "rollout": r})
        for p, n in n_sources.items()
        for i in range(n)
        for r in range(2)
    ]
    assign_splits(examples, seed, val_fraction, n_sources)
    out: dict[str, list[str]] = {p: [] for p in n_sources}
    for p, n in n_sources.items():
        for i in range(n):
            [split] = {
                e.info["split"]
                for e in examples
                if e.info["source_index"] == i and e.info["polarity"] == p
            }  # both rollouts alike
            out[p].append(split)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("negatives", [3, 4])  # paired, and unpaired (drawn per polarity)
def test_a_small_val_share_still_holds_out_one_source_per_polarity(seed, negatives):
    """0.1 of 3 (or 4) sources rounds to none: one source of each polarity goes to val, so
    vectors always have val prompts to choose a layer on."""
    splits = _splits({"positive": 3, "negative": negatives}, 0.1, seed)
    assert {p: s.count("val") for p, s in splits.items()} == {"positive": 1, "negative": 1}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_large_val_share_still_leaves_one_source_per_polarity_to_train_on(seed):
    """0.9 of 2 sources rounds to both: one of each polarity stays in train."""
    splits = _splits({"positive": 2, "negative": 2}, 0.9, seed)
    assert {p: s.count("train") for p, s in splits.items()} == {"positive": 1, "negative": 1}


def test_no_val_share_holds_out_nothing():
    """val_fraction 0 (a valid setting): every source trains, none is forced into val."""
    splits = _splits({"positive": 3, "negative": 3}, 0.0, 0)
    assert set(splits["positive"] + splits["negative"]) == {"train"}
