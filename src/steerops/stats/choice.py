"""Choosing a config on the selection half and the verdict its held-out half gives."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from steerops.stats.coherence import COHERENCE_DECIMALS, coherent
from steerops.stats.intervals import as_number
from steerops.stats.permutation import TEST_LEVEL

# verdicts of a choice (the grid's and the report's; a search words its own, see search)
OK = "ok"
NO_EFFECT = "no effect"
INCOHERENT = "incoherent held out"
NEEDS_FINER = "needs finer coefficients"
# no steered config coherent, and the unsteered model itself under the bar on the selection
# half: no coefficient reaches it (the judge's coherence scale, or the bar, to check)
BASELINE_INCOHERENT = "baseline incoherent"
# steered configs coherent on the selection half but the judge gave none a trait score, or
# it scored no steered config at all: a failure, not a finding
UNSCORED = "trait unscored"
# a choice the judge gave no held-out trait or coherence score: a failure, not a finding
HELDOUT_UNSCORED = "held out unscored"
# an interval above zero on fewer held-out questions than a sign or permutation test could
# find an effect with: every one of n questions moving the same way has sign-test p =
# 2 * 0.5**n, which first falls below 5% at n = 6 (`min_questions`); a bootstrap over 1-5
# questions reads certainty from them
TOO_FEW = "too few held out"
MIN_HELDOUT = 6
# a choice whose held-out interval lies wholly below zero, on enough questions to tell: the
# trait moved against the steering direction (a vector's sign or a trait's direction to
# check), which "no effect" would hide
OPPOSITE = "opposite effect"
# below this many held-out questions a verdict's interval is called out where it is printed
FEW_HELDOUT = 10


def choose(
    rows: Sequence[Mapping[str, Any]], min_coherence: float
) -> tuple[Mapping[str, Any] | None, str]:
    """The config to report, chosen on selection-half numbers only, and its verdict.

    Rows carry `coefficient`, `selection_trait_delta`, `selection_delta_lo`,
    `selection_coherence_mean` and the held-out `heldout_delta_lo` and
    `heldout_coherence_mean`. The choice is `select`'s; the held-out half then gives the
    verdict (`heldout_verdict`)."""
    pick, verdict = select(rows, min_coherence)
    if pick is None:
        return pick, verdict or NEEDS_FINER
    if verdict is not None:  # the choice among the coherent configs, none with an effect
        return pick, OPPOSITE if moved_against(pick) else verdict
    return pick, heldout_verdict(pick, min_coherence)


def opposite_words(row: Mapping[str, Any]) -> str:
    """What an OPPOSITE choice says: with no effect where it was chosen, every coherent
    config moved the trait the other way (a vector's sign or the trait's direction); with
    one, the two halves disagree (the selection half's effect reversed held out)."""
    if no_effect_on_selection(row):
        return (
            "the trait moved against the steering direction held out; check the vector's "
            "sign and `steering.direction`"
        )
    return (
        "the selection half's effect reversed held out: the halves disagree (more questions "
        "tell which holds)"
    )


def moved_against(row: Mapping[str, Any]) -> bool:
    """Whether a choice's held-out interval lies wholly below zero on at least MIN_HELDOUT
    questions (`OPPOSITE`)."""
    hi = as_number(row.get("heldout_delta_hi"))
    n = as_number(row.get("heldout_n")) or 0
    return hi is not None and hi < 0 and n >= MIN_HELDOUT


def select(
    rows: Sequence[Mapping[str, Any]], min_coherence: float
) -> tuple[Mapping[str, Any] | None, str | None]:
    """Choose on the selection half: candidates are steered configs (coefficient != 0)
    coherent there; among those with an effect there (interval above zero) the largest delta
    wins (ties: more coherent, smaller |coefficient|, lower layer) -> (pick, None). With
    coherent candidates but none with an effect, (the strongest, NO_EFFECT); with none,
    (None, NEEDS_FINER), or (None, UNSCORED) when steered configs are coherent but none has
    a trait score or none has a coherence score, or (None, BASELINE_INCOHERENT) when the
    rows' `selection_baseline_coherence` is under the bar too."""
    candidates = steered_coherent(rows, min_coherence)
    if not candidates:
        # a judge that read nothing
        unread = any(map(steered, rows)) and best_steered_coherence(rows) is None
        if unread or steered_coherent(rows, min_coherence, scored=False):
            return None, UNSCORED
        base = {as_number(r.get("selection_baseline_coherence")) for r in rows} - {None}
        if base and not any(coherent(c, min_coherence) for c in base):  # one per cell
            return None, BASELINE_INCOHERENT
        return None, NEEDS_FINER
    effective = [r for r in candidates if not no_effect_on_selection(r)]
    if not effective:
        return max(candidates, key=choice_rank), NO_EFFECT
    return max(effective, key=choice_rank), None


def steered(row: Mapping[str, Any]) -> bool:
    """Whether a config row steers (coefficient != 0): the unsteered one is no candidate."""
    return as_number(row.get("coefficient")) not in (None, 0.0)


def steered_coherent(
    rows: Sequence[Mapping[str, Any]], min_coherence: float, scored: bool = True
) -> list[Mapping[str, Any]]:
    """Steered configs (coefficient != 0) coherent on the selection half (`scored`: with a
    trait delta there)."""
    return [
        r
        for r in rows
        if steered(r)
        and (not scored or as_number(r.get("selection_trait_delta")) is not None)
        and coherent(r.get("selection_coherence_mean"), min_coherence)
    ]


def no_effect_on_selection(row: Mapping[str, Any]) -> bool:
    """Whether a config's selection-half interval reaches zero: `select` picks among the
    others, and a NO_EFFECT choice with it was decided there, not by its held-out interval."""
    return (as_number(row.get("selection_delta_lo")) or 0.0) <= 0


def heldout_verdict(row: Mapping[str, Any], min_coherence: float) -> str:
    """OK, NO_EFFECT (OPPOSITE when the interval lies below zero: `moved_against`) or
    INCOHERENT from the held-out interval and coherence; HELDOUT_UNSCORED
    when the judge gave either no score there (a judge failure must not read as "no
    effect"); TOO_FEW for an interval above zero on fewer than MIN_HELDOUT questions. The
    sign-flip test does not decide (`unconfirmed` says where it disagrees): where few
    questions move, its discreteness would halve the verdict's power (see `steerops.stats`)."""
    lo, coherence = (
        as_number(row.get("heldout_delta_lo")),
        as_number(row.get("heldout_coherence_mean")),
    )
    if lo is None or coherence is None:
        return HELDOUT_UNSCORED
    if lo <= 0:
        return OPPOSITE if moved_against(row) else NO_EFFECT
    if not coherent(coherence, min_coherence):
        return INCOHERENT
    return OK if (as_number(row.get("heldout_n")) or 0) >= MIN_HELDOUT else TOO_FEW


def unconfirmed(p: Any, lo: Any) -> bool:
    """Whether an interval above zero (lower bound `lo`) lacks its sign-flip test: one-sided
    `p` at or above TEST_LEVEL, the level of the interval's lower bound (False without a p)."""
    p, lo = as_number(p), as_number(lo)
    return p is not None and lo is not None and lo > 0 and p >= TEST_LEVEL


SCORE_RANGE = (0.0, 100.0)  # every judge scores trait and coherence 0-100
# a mean this close to the scale's end has no room to move (a probability-weighted judge's
# answers of "100" average a hair under it)
SATURATED_WITHIN = 0.5


def saturated(pick: Mapping[str, Any]) -> bool:
    """Whether `pick` moved the trait along the steering to within SATURATED_WITHIN of the
    judge's scale end on the selection half (100 pushing up, 0 pushing down; a positive
    delta in the steering direction cannot end at the other one): a larger coefficient
    cannot steer more there, only cost coherence."""
    mean = as_number(pick.get("selection_trait_mean"))
    delta = as_number(pick.get("selection_trait_delta"))  # in the steering direction
    if mean is None or delta is None or not delta > 0:
        return False
    return min(abs(mean - end) for end in SCORE_RANGE) <= SATURATED_WITHIN


def at_largest_coefficient(rows: Sequence[Mapping[str, Any]], pick: Mapping[str, Any]) -> bool:
    """Whether `pick` sits at the largest |coefficient| its layer was run with (of more than
    one) and is not `saturated`: the optimum may lie beyond the grid."""
    if saturated(pick):
        return False
    at_layer = {
        abs(c)
        for r in rows
        if r.get("layer") == pick["layer"] and (c := as_number(r.get("coefficient"))) is not None
    }
    return len(at_layer) > 1 and abs(as_number(pick["coefficient"]) or 0.0) >= max(at_layer)


def best_steered_coherence(rows: Sequence[Mapping[str, Any]]) -> float | None:
    """The best selection-half coherence any steered (coefficient != 0) config reached."""
    values = [as_number(r.get("selection_coherence_mean")) for r in rows if steered(r)]
    scored = [v for v in values if v is not None]
    return max(scored) if scored else None


def choice_rank(row: Mapping[str, Any]) -> tuple[float, float, float, float, float, int, str]:
    """The key the choice on the selection half maximises (`select`): delta, coherence
    (both to COHERENCE_DECIMALS: float noise is no lead), the smaller |coefficient|, the
    lower layer; the last keys make it independent of row order: a positive coefficient
    before its negative twin, one vector before several ("4+8"), then the layer's text."""
    coefficient = as_number(row["coefficient"]) or 0.0
    layer = str(row.get("layer"))
    return (
        round(as_number(row["selection_trait_delta"]) or 0.0, COHERENCE_DECIMALS),
        round(as_number(row.get("selection_coherence_mean")) or 0.0, COHERENCE_DECIMALS),
        -abs(coefficient),
        -_first_layer(row.get("layer")),
        coefficient,
        -layer.count("+"),
        layer,
    )


def _first_layer(layer: Any) -> float:
    """A config's (first) layer as a number: 12, "12", or "4+8" (several vectors) -> 4."""
    value = as_number(layer)
    if value is None and isinstance(layer, str) and "+" in layer:
        value = as_number(layer.split("+")[0])
    return value or 0.0
