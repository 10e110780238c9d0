"""The seeded split of the steering questions into a selection half and a held-out half,
and a config's numbers on one half (see `steerops.stats`)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from steerops.errors import SteeropsError
from steerops.stats.intervals import Score, delta_interval, mean_of, paired_differences
from steerops.stats.permutation import sign_flip_p


def split_questions(
    questions: Sequence[str], heldout_fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """(selection, held-out) questions: a seeded shuffle of the distinct questions, both parts
    non-empty, each in the questions' order."""
    unique = list(dict.fromkeys(questions))
    if len(unique) < 2:
        raise SteeropsError(
            "steering.json questions: the held-out protocol needs at least 2 "
            f"distinct questions, got {len(unique)}"
        )
    order = list(range(len(unique)))
    random.Random(seed).shuffle(order)
    n_heldout = min(len(unique) - 1, max(1, round(len(unique) * heldout_fraction)))
    heldout_idx = set(order[:n_heldout])
    selection = [q for i, q in enumerate(unique) if i not in heldout_idx]
    heldout = [q for i, q in enumerate(unique) if i in heldout_idx]
    return selection, heldout


@dataclass(frozen=True)
class HalfStats:
    """A config's numbers on one half of the questions, against the baseline on that half."""

    n: int  # questions scored for the delta
    trait_mean: float | None
    coherence_mean: float | None
    trait_delta: float | None  # in the steering direction
    delta_lo: float | None
    delta_hi: float | None
    p: float | None  # one-sided sign-flip p of the delta (`sign_flip_p`)

    def prefixed(self, prefix: str) -> dict[str, Any]:
        return {f"{prefix}_{k}": v for k, v in asdict(self).items()}


def half_stats(
    steered: Sequence[Score], baseline: Sequence[Score], seed: int, sign: float = 1.0
) -> HalfStats:
    """Means over scored responses, the paired delta's interval and its sign-flip test
    (scores in question order)."""
    traits = [t for t, _ in steered]
    d = paired_differences(traits, [t for t, _ in baseline], sign)  # one set, two readings
    delta = delta_interval(d, seed)
    return HalfStats(
        delta.n,
        mean_of(traits),
        mean_of([c for _, c in steered]),
        delta.mean,
        delta.lo,
        delta.hi,
        sign_flip_p(d, seed),
    )
