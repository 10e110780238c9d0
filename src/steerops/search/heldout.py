"""Held-out protocol: search on one part of the questions, report on the other.

The maximum of many noisy evaluations is biased upwards; evaluating the chosen config once on
questions the search never saw gives an honest number next to the search's own. The split is
the one the grid and the report use (`steerops.stats.split_questions`, seeded by the
experiment's seed), so the grid's scores on the search half serve the search.
"""

from __future__ import annotations

import math
from pathlib import Path

from steerops import stats
from steerops.stats import (
    coherence_interval,
    coherence_unscored,
    credited_delta,
    half_stats,
    moved_under_bar,
    paired_mean,
    split_questions,
    under_bar,
)
from steerops.steering.configs import Config
from steerops.steering.store import ResultsLog

__all__ = ["earlier_reads", "evaluate_heldout", "split_questions"]


def evaluate_heldout(
    evaluator,
    config: Config,
    direction: str,
    seed: int,
    written: list[dict] | None = None,
    *,
    min_coherence: float,
    chosen_at: float | None = None,
) -> dict:
    """Baseline and the chosen config on the evaluator's (held-out) questions: means, the
    delta in the steering direction and its paired bootstrap interval, how many answers
    score under `min_coherence`, and the responses.

    Served from a log (the search's own, or another one such as the grid's when the winner is
    a known trial), the config has no responses: the ones `written` for this same choice by
    an earlier finalisation (a rerun), else generated (greedy: the same text; not logged,
    counted in `rows_generated`). Whichever log served it, so a first run and a rerun or
    resume (which finds a copied entry in the search's own log) write the same file."""
    base = evaluator.baseline()
    [result] = evaluator.evaluate([config])
    sign = stats.direction_sign(direction)
    half = half_stats(result.scores, base.scores, seed, sign)
    coherences = [c for _, c in result.scores]
    scored, under = under_bar(coherences, min_coherence)
    # the bar the search half's mean was chosen at, when a margin raised it: a mean over it
    # can hide answers under it held out
    under_raised = None
    if chosen_at is not None and chosen_at > min_coherence:
        _, under_raised = under_bar(coherences, chosen_at)
    deltas = [paired_mean([s], [b], sign) for s, b in zip(result.scores, base.scores, strict=True)]
    credited = credited_delta(deltas, coherences, min_coherence, seed)
    spread = coherence_interval(coherences, seed)
    n = len(evaluator.questions)
    responses, again = list(result.responses), 0
    if not responses:
        if written is not None:
            responses = written
        else:
            responses, again = list(evaluator.responses([result])[0].responses), n
    return {
        "trait_delta": half.trait_delta,
        "delta_lo": half.delta_lo,
        "delta_hi": half.delta_hi,
        "p": half.p,  # one-sided sign-flip p of the delta
        "trait_mean": result.trait_mean,
        "coherence_mean": result.coherence_mean,
        "coherence_lo": spread.lo,  # its interval: the bar decides the verdict
        "coherence_hi": spread.hi,
        "coherence_scored": scored,
        # with a delta and no coherence score: counted as unmoved in the credited delta
        "coherence_unscored": coherence_unscored(deltas, coherences),
        "under_bar": under,
        "under_margin": under_raised,  # answers under `chosen_at` (None: no margin)
        "under_bar_moved": moved_under_bar(deltas, coherences, min_coherence),
        # the delta with the answers under the bar counted as unmoved (`stats.credited_delta`)
        "credited_delta": credited.mean,
        "credited_lo": credited.lo,
        "credited_hi": credited.hi,
        "baseline_trait": base.trait_mean,
        "baseline_coherence": base.coherence_mean,
        "n": half.n,
        "n_questions": n,
        # answers the judge's endpoint refused, left out of these numbers (a rerun asks again)
        "n_refused": getattr(result, "n_refused", 0) + getattr(base, "n_refused", 0),
        "settings_hash": evaluator.settings_hash,
        "rows_generated": (0 if getattr(base, "cached", False) else n)
        + (0 if getattr(result, "cached", False) else n)
        + again,
        "responses": responses,
    }


def earlier_reads(log_file: Path, settings_hash: str, layer: int, coefficient: float) -> list[dict]:
    """The other configs whose held-out scores the search's own log (`log_file`) holds under
    these settings (`settings_hash`: the held-out half's): earlier searches of the cell chose
    them and read the held-out half for them, so a search setting changed since (a margin,
    a range) may have been chosen knowing how they did. The latest entry of each, in the
    order first read: {layer, coefficient, trait_delta, coherence_mean}."""
    seen: dict[tuple[int, float], dict] = {}
    for entry in ResultsLog(log_file).entries:
        if entry["type"] != "config" or entry.get("settings_hash") != settings_hash:
            continue
        vectors, c = entry["config"]["vectors"], entry["config"].get("coefficient")
        if len(vectors) != 1 or c is None:  # no search's: it steers one vector
            continue
        at, c = int(vectors[0]["layer"]), float(c)
        # the chosen config itself (the log keeps its coefficient as drawn, to the bit;
        # isclose only absorbs a JSON round trip)
        if at == layer and math.isclose(c, coefficient, rel_tol=1e-12, abs_tol=0.0):
            continue
        result = entry.get("result") or {}
        seen[at, c] = {
            "layer": at,
            "coefficient": c,
            "trait_delta": result.get("trait_delta"),
            "coherence_mean": result.get("coherence_mean"),
        }
    return list(seen.values())
