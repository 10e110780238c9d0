"""A near copy's comparison made where the cleaned dims weigh.

A cleaned variant that removed under `tables.BARELY` of its vector at the chosen layer is a
near copy there: its gain over the uncleaned method says nothing of the dims. The same dims
can hold much more of the vector at another layer (`peak_share_layer`). When the grid
steered both methods there at the choice's coefficient, their paired held-out gain at that
one config is the comparison that tests them. Not only the dims differ: the cleaned unit
vector is renormalised, so at the same coefficient it pushes 1/sqrt(1 - share) harder
along every other dim, and the line says so. Its "helps" and "hurts" follow the cleaning
curve's rules (the method's `gain_k` cleaned variants together, enough questions for a
sign test of that many claims)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from steerops import stats
from steerops.report.markdown import cell, interval
from steerops.report.tables import (
    BARELY,
    GROUP,
    at_config,
    choices,
    first_record,
    near_copies_of,
    paired_gap,
    same_cell,
    same_value,
    settings_differ,
)


@dataclass(frozen=True)
class Weighed:
    """The two methods at (`layer`, `coefficient`): each one's held-out delta and coherence
    (None: not steered there) and the cleaned one's paired gain over the uncleaned."""

    variant: str
    method: str
    layer: int
    share: float  # of the uncleaned vector's squared norm the dims hold at `layer`
    coefficient: float
    cleaned: dict | None
    uncleaned: dict | None
    gain: stats.Interval | None
    k: int = 1  # the method's cleaned variants compared together (the curve's `gain_k`)
    layer_steered: bool = True  # the grid steered some config at `layer`

    @property
    def compared(self) -> bool:
        return self.gain is not None and self.gain.mean is not None


def weighed(
    frame: pd.DataFrame, curve: pd.DataFrame, gap: pd.DataFrame, seed: int
) -> dict[tuple, Weighed]:
    """Per (model, trait, cleaned variant) of each (model, trait)'s choice: the near copies
    whose dims hold at least `BARELY` of the vector at another layer, compared there."""
    out = {}
    if curve.empty or "peak_share_layer" not in curve:
        return out
    methods = frame["method"].astype(str)
    for (model, trait), mine, choice in choices(gap):
        in_cell = same_cell(frame, choice)
        coefficient = choice["coefficient"]
        # the near copies of the choice's method: the same config, under BARELY of it
        near = near_copies_of(mine, choice["method"])
        for row in curve[same_cell(curve, choice, GROUP)].itertuples(index=False):
            layer, share = stats.as_number(row.peak_share_layer), stats.as_number(row.peak_share)
            if layer is None or share is None or share < BARELY:
                continue
            if str(row.variant) not in near:
                continue
            # the choice's cell at its coefficient: the layer is the dims' own
            at = in_cell & at_config(frame, layer, coefficient)
            cleaned = first_record(frame[at & (methods == str(row.variant))])
            uncleaned = first_record(frame[at & (methods == str(row.method))])
            k = 1 if pd.isna(row.gain_k) else int(row.gain_k)
            gain = None
            if cleaned is not None and uncleaned is not None:
                if not settings_differ(cleaned, uncleaned):
                    gain = paired_gap(cleaned, uncleaned, seed, stats.family_confidence(k))
            out[(str(model), str(trait), str(row.variant))] = Weighed(
                str(row.variant),
                str(row.method),
                int(layer),
                share,
                float(coefficient),
                cleaned,
                uncleaned,
                gain,
                k,
                bool((in_cell & frame["layer"].map(lambda x, n=layer: same_value(x, n))).any()),
            )
    return out


def weighed_words(w: Weighed | None, threshold: float) -> str | None:
    """The comparison as one line under the cleaning answer; None without one."""
    if w is None:
        return None
    where = f"at layer {w.layer}, coefficient {cell(w.coefficient)}"
    if w.cleaned is None or w.uncleaned is None:
        if not w.layer_steered:
            return (
                f"{where}, where they weigh, the grid steered nothing: add {w.layer} to "
                "`steering.layers` to test them"
            )
        missing = " and ".join(
            f"`{name}`"
            for name, row in ((w.variant, w.cleaned), (w.method, w.uncleaned))
            if row is None
        )
        return f"{where}, where they weigh, the grid did not steer {missing} to compare"
    if settings_differ(w.cleaned, w.uncleaned):
        return f"{where}: not compared (their cells ran under different steering settings)"
    sides = "; ".join(
        f"`{name}` {_side(row, threshold)}"
        for name, row in ((w.variant, w.cleaned), (w.method, w.uncleaned))
    )
    if not w.compared:
        return f"{where}: {sides}; no question scored in both"
    assert w.gain is not None
    needed = stats.min_questions(w.k)
    if (w.gain.lo > 0 or w.gain.hi < 0) and w.gain.n < needed:
        verdict = f"too few held-out questions to tell ({w.gain.n}; {needed} needed)"
    elif w.gain.lo > 0:
        verdict = "the cleaned vector steers more"
    elif w.gain.hi < 0:
        verdict = "the cleaned vector steers less"
    elif stats.degenerate(w.gain.lo, w.gain.hi):
        verdict = "no trait difference: each question's trait score was the same in both"
    else:
        verdict = "no detectable difference"
    gain = interval(w.gain.mean, w.gain.lo, w.gain.hi)
    level = "" if w.k <= 1 else f" at {stats.family_confidence(w.k):.1%} (one of {w.k})"
    push = 1 / (1 - w.share) ** 0.5
    return (
        f"{where}, where they weigh: **{verdict}** (gain, cleaned - uncleaned, paired, held "
        f"out, {gain}{level}, n {w.gain.n}); {sides}. Not the dims alone: the cleaned unit "
        f"vector is renormalised, so at one coefficient it pushes {push:.2f}x harder along "
        "the other dims"
    )


def _side(row: dict, threshold: float) -> str:
    """ "held-out delta +40.0 [+15.0, +65.0], coherence 71.20" (under the bar: said)."""
    coherence = stats.as_number(row.get("heldout_coherence_mean"))
    under = "" if stats.coherent(coherence, threshold) else f", under {threshold:g}"
    said = interval(
        row.get("heldout_trait_delta"), row.get("heldout_delta_lo"), row.get("heldout_delta_hi")
    )
    return (
        f"held-out delta {said or 'unscored'}, coherence "
        f"{stats.coherence_text(coherence, 2) if coherence is not None else 'unscored'}{under}"
    )
