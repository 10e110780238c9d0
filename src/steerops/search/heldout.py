"""Held-out protocol: search on one part of the questions, report on the other.

The maximum of many noisy evaluations is biased upwards; evaluating the chosen config once on
questions the search never saw gives an honest number next to the search's own.
"""

from __future__ import annotations

import random

from steerops.errors import SteeropsError
from steerops.search.loop import signed_delta
from steerops.steering.configs import Config


def split_questions(
    questions: list[str], heldout_fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """(search, held-out) questions: a seeded shuffle, both parts non-empty, order kept."""
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
    search = [q for i, q in enumerate(unique) if i not in heldout_idx]
    heldout = [q for i, q in enumerate(unique) if i in heldout_idx]
    return search, heldout


def evaluate_heldout(evaluator, config: Config, direction: str) -> dict:
    """Baseline and the chosen config on the evaluator's (held-out) questions."""
    base = evaluator.baseline()
    [result] = evaluator.evaluate([config])
    delta = (
        None
        if base.trait_mean is None
        else signed_delta(result.trait_mean, base.trait_mean, direction)
    )
    n = len(evaluator.questions)
    return {
        "trait_delta": delta,
        "trait_mean": result.trait_mean,
        "coherence_mean": result.coherence_mean,
        "baseline_trait": base.trait_mean,
        "baseline_coherence": base.coherence_mean,
        "n_questions": n,
        "settings_hash": evaluator.settings_hash,
        "rows_generated": (0 if getattr(base, "cached", False) else n)
        + (0 if getattr(result, "cached", False) else n),
        "responses": list(result.responses),
    }
