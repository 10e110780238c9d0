"""The coherence bar: whether a score reaches it, the answers under it, and the trait
delta with those answers counted as unmoved (`credited_delta`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from steerops.stats.intervals import Interval, as_number, delta_interval

# a move of an answer's trait score smaller than this (points on the 0-100 scale) is
# counted apart: a graded judge's wobble, where a 0/100 judge moves by 100 or not at all
MOVED_LITTLE = 10.0


# Decimals a coherence is read to: a mean of scores summed in another order, or a bootstrap
# quantile, is off by about 1e-14 (92.53999999999999 for 92.54); 9 decimals drop that noise
# and keep every real difference. The bar and the printed text both read it so.
COHERENCE_DECIMALS = 9


def coherent(coherence: Any, min_coherence: float) -> bool:
    """Whether a coherence (to COHERENCE_DECIMALS) reaches the bar; a missing one does not
    (0.0 is a score)."""
    value = as_number(coherence)
    return value is not None and round(value, COHERENCE_DECIMALS) >= min_coherence


def under_bar(
    coherences: Iterable[float | None], min_coherence: float
) -> tuple[int | None, int | None]:
    """(answers with a coherence score, how many of them score under the bar); (None, None)
    when none is scored. A config's coherence is a mean: over the bar, it can still hide a
    quarter of its answers under it."""
    scored = [x for x in (as_number(c) for c in coherences) if x is not None]  # NaN: unscored
    if not scored:
        return None, None
    return len(scored), sum(not coherent(c, min_coherence) for c in scored)


def coherence_unscored(deltas: Iterable[float | None], coherences: Iterable[Any]) -> int:
    """Answers with a trait delta that the judge gave no coherence score (None or NaN): left
    out of the mean, which can then stand over the bar on the answers it could read while
    the ones it would not rate (most often gibberish) carry the delta; `credited_delta`
    counts them as unmoved. An answer with no delta (refused, trait unscored) is in no
    delta, so not here either. Per question, in one order, as `credited_delta` reads them."""
    return sum(
        x is not None and as_number(c) is None for x, c in zip(deltas, coherences, strict=True)
    )


def unscored_heldout(row: Mapping[str, Any]) -> int | None:
    """`coherence_unscored` of a config row's held-out answers; None when it has none."""
    answers = _heldout_answers(row)
    return None if answers is None else coherence_unscored(*answers)


def credited_delta(
    deltas: Iterable[float | None],
    coherences: Iterable[Any],
    min_coherence: float,
    seed: int,
) -> Interval:
    """The paired delta (`delta_interval`) over the same questions, with the answers scored
    under the coherence bar counted as unmoved: such an answer keeps a delta against the
    steering but not one along it. A config's coherence is a mean, so an "ok" config can
    still owe part of its delta to broken answers the trait judge read as the trait (a
    garbled "refusal"); here those count as no change. It is not the mean over the coherent
    answers alone. An answer the judge gave no coherence score counts as unmoved too: a
    judge that will not rate an answer is most often reading gibberish, and nothing vouches
    for its delta (`coherence_unscored` counts them). `deltas` and `coherences` are per
    question, in one order, a delta None where the trait was not scored in both."""
    d = [
        min(x, 0.0) if not coherent(c, min_coherence) else x
        for x, c in zip(deltas, coherences, strict=True)
        if x is not None
    ]
    return delta_interval(np.array(d, dtype=float), seed)


def coherence_interval(coherences: Iterable[Any], seed: int) -> Interval:
    """A mean coherence's interval over the answers scored (the bootstrap `delta_interval`
    draws): the bar decides a verdict, so its margin needs one."""
    scored = [c for c in (as_number(x) for x in coherences) if c is not None]
    return delta_interval(np.array(scored, dtype=float), seed)


def credited_heldout(row: Mapping[str, Any], min_coherence: float, seed: int) -> Interval:
    """`credited_delta` of a config row's held-out answers (`_heldout_answers`); n 0 when
    the row has none."""
    answers = _heldout_answers(row)
    if answers is None:
        return Interval(0, None, None, None)
    return credited_delta(*answers, min_coherence, seed)


def moved_under_bar(
    deltas: Iterable[float | None], coherences: Iterable[Any], min_coherence: float
) -> int:
    """Answers under the coherence bar or not scored for it that moved along the steering
    (delta > 0): the ones `credited_delta` counts as unmoved."""
    return sum(
        x is not None and x > 0 and not coherent(c, min_coherence)
        for x, c in zip(deltas, coherences, strict=True)
    )


def moved_under_heldout(row: Mapping[str, Any], min_coherence: float) -> int | None:
    """`moved_under_bar` of a config row's held-out answers; None when the row has none."""
    answers = _heldout_answers(row)
    return None if answers is None else moved_under_bar(*answers, min_coherence)


def _heldout_answers(row: Mapping[str, Any]) -> tuple[list, list] | None:
    """A config row's held-out (deltas, coherences) in one question order, from its
    `heldout_deltas` and `heldout_coherences` ({question: value}); None without them."""
    deltas, coherences = row.get("heldout_deltas"), row.get("heldout_coherences")
    if not isinstance(deltas, Mapping) or not isinstance(coherences, Mapping):
        return None
    return list(deltas.values()), [coherences.get(q) for q in deltas]
