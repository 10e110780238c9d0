"""How the statistics print: deltas, intervals, p-values and coherences rounded so
that the text never crosses a bar the number does not, and the phrases around them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import ROUND_CEILING, ROUND_FLOOR, Context, Decimal
from typing import Any

from steerops.stats.choice import FEW_HELDOUT
from steerops.stats.coherence import COHERENCE_DECIMALS
from steerops.stats.intervals import as_number

_WIDE = Context(prec=400)


def under_bar_phrase(
    scored: Any, under: Any, min_coherence: float | None, unscored: Any = None
) -> str:
    """ "5 of 20 answers under 68, 3 answers not scored for coherence", either part alone, or
    "" when no answer is under the bar (or none was scored) and every answer was scored."""
    scored, under, unscored = as_number(scored), as_number(under), as_number(unscored)
    parts = []
    if scored and under and min_coherence is not None:
        parts.append(f"{int(under)} of {int(scored)} answers under {min_coherence:g}")
    if unscored:
        parts.append(
            f"{int(unscored)} answer{'' if unscored == 1 else 's'} not scored for coherence"
        )
    return ", ".join(parts)


def under_bar_text(
    scored: Any, under: Any, min_coherence: float | None, unscored: Any = None
) -> str:
    """ " (5 of 20 answers under 68)" after a coherence, or "" (`under_bar_phrase`)."""
    phrase = under_bar_phrase(scored, under, min_coherence, unscored)
    return f" ({phrase})" if phrase else ""


def unmoved_phrase(
    under: Any,
    min_coherence: float | None,
    moved: Any,
    credited: Sequence[Any],
    unscored: Any = None,
) -> str:
    """ "with the 5 answers under 68 counted as unmoved (2 had moved along the steering),
    delta +40.0 [+10.0, +65.0]": `credited_delta`'s (mean, lo, hi) beside the held-out
    delta, or "" when no answer is under the bar or unscored, or it was not computed.
    `unscored`: answers not scored for coherence, counted as unmoved too."""
    under, moved, unscored = as_number(under), as_number(moved), as_number(unscored)
    if min_coherence is None or not credited or as_number(credited[0]) is None:
        return ""
    which = []
    if under:
        which.append(f"{_answers(under)} under {min_coherence:g}")
    if unscored:
        which.append(f"{_answers(unscored)} not scored for coherence")
    if not which:
        return ""
    had = "" if moved is None else f" ({int(moved)} had moved along the steering)"
    return (
        f"with the {' and the '.join(which)} counted as unmoved{had}, delta "
        f"{interval_text(*credited)}"
    )


def _answers(count: float) -> str:
    return "answer" if count == 1 else f"{int(count)} answers"


def coherence_text(value: Any, decimals: int = 1) -> str:
    """A coherence as text, rounded down: one under the bar never prints at or above it
    (67.996 is "67.9", not "68.0"). Read to COHERENCE_DECIMALS first, as `coherent` reads
    it (92.53999999999999 is "92.54"), so the text is >= the bar exactly when `coherent`
    says it reaches it."""
    value = as_number(value)
    if value is None:
        return "n/a"
    if not math.isfinite(value):
        return str(value)
    step = Decimal(1).scaleb(-decimals)
    # enough digits for any float's integer part (the default context keeps 28)
    snapped = round(value, COHERENCE_DECIMALS)
    return str(Decimal(repr(snapped)).quantize(step, rounding=ROUND_FLOOR, context=_WIDE))


def delta_text(value: Any, decimals: int = 1) -> str:
    """A signed delta or interval bound; a nonzero one that would print as zero keeps
    enough digits to show its sign (an ok lower bound of 0.03 is "+0.03", not "+0.0")."""
    value = as_number(value)
    if value is None:
        return "n/a"
    text = f"{value:+.{decimals}f}"
    if value != 0 and float(text) == 0:
        text = f"{value:+.1g}"
    return text


def p_text(value: Any) -> str:
    """A p or q value to 3 significant digits, rounded up: one above a bar never prints under
    it (0.05001 is "0.0501"), and one just under a bar shows it (0.0249 is "0.0249");
    "< 0.001" below that."""
    value = as_number(value)
    if value is None:
        return "n/a"
    if value < 0.001:
        return "< 0.001"
    decimals = 2 - math.floor(math.log10(value))
    step = Decimal(1).scaleb(-decimals)
    return str(Decimal(repr(value)).quantize(step, rounding=ROUND_CEILING, context=_WIDE))


def interval_text(mid: Any, lo: Any, hi: Any) -> str:
    """ "estimate [low, high]" of a delta and its interval, as `delta_text` prints each."""
    return f"{delta_text(mid)} [{delta_text(lo)}, {delta_text(hi)}]"


def few_questions_note(n: Any) -> str | None:
    """The caveat a verdict on fewer than FEW_HELDOUT held-out questions carries."""
    n = int(as_number(n) or 0)
    if n >= FEW_HELDOUT:
        return None
    return (
        f"only {n} held-out questions: too few for the interval to mean much; steer more "
        "questions, e.g. --subset 40"
    )


def degenerate(lo: Any, hi: Any) -> bool:
    """Whether a bootstrap interval has no width: every question gave the same difference,
    so resampling cannot vary it (few questions, not precision)."""
    lo, hi = as_number(lo), as_number(hi)
    return lo is not None and lo == hi


DEGENERATE_NOTE = "every question gave the same delta: an interval of no width, not precision"
