"""A near copy's comparison made where the cleaned dims weigh.

A cleaned variant that removed under `tables.BARELY` of its vector at the chosen layer is a
near copy there: its gain over the uncleaned method says nothing of the dims. The same dims
can hold much more of the vector at another layer (`peak_share_layer`). When the grid
steered both methods there at the choice's coefficient, their paired held-out gain at that
one config is the comparison that tests them. Not only the dims differ there: the cleaned
unit vector is renormalised, so at the same coefficient it pushes 1/sqrt(1 - share) harder
along every other dim, and the line says so. Where the grid also steered the cleaned
variant at the choice's coefficient x sqrt(1 - share) (within 1%), that config is compared
instead: the same push along the other dims, so only the dims differ. Its "helps" and
"hurts" follow the cleaning
curve's rules (the method's `gain_k` cleaned variants together, enough questions for a
sign test of that many claims)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from steerops import stats
from steerops.report.markdown import cell, coherence_words, interval
from steerops.report.tables import (
    BARELY,
    at_config,
    choices,
    curve_rows_of,
    differing_questions,
    first_record,
    held_coherence,
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
    # each side's `tables.held_coherence` (cleaned, uncleaned): interval, answers under the bar
    coherences: tuple[dict | None, dict | None] = (None, None)
    # the cleaned variant's coefficient when the grid steered it at the matched push
    # (`coefficient` x sqrt(1 - share)); None: both at `coefficient`
    cleaned_coefficient: float | None = None
    differing: int | None = None  # held-out questions whose trait scores differ between them

    @property
    def push(self) -> float:
        """How much harder the renormalised cleaned vector pushes along the other dims
        than the uncleaned one at one coefficient."""
        return 1 / (1 - self.share) ** 0.5

    @property
    def matching(self) -> float:
        """The cleaned variant's coefficient that pushes the other dims as hard as the
        uncleaned one at `coefficient`."""
        return matching(self.coefficient, self.share)

    @property
    def compared(self) -> bool:
        return self.gain is not None and self.gain.mean is not None


def weighed(
    frame: pd.DataFrame, curve: pd.DataFrame, gap: pd.DataFrame, seed: int, min_coherence: float
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
        rows = curve_rows_of(curve, choice)  # a cleaned variant chosen: its uncleaned method's
        # the near copies of that method: the same config, under BARELY of it
        near = near_copies_of(mine, rows["method"].iloc[0]) if len(rows) else frozenset()
        for row in rows.itertuples(index=False):
            layer, share = stats.as_number(row.peak_share_layer), stats.as_number(row.peak_share)
            if layer is None or share is None or share < BARELY:
                continue
            if str(row.variant) not in near:
                continue
            # the choice's cell at its coefficient: the layer is the dims' own; the cleaned
            # variant where the grid steered it at the same push along the other dims
            at = in_cell & at_config(frame, layer, coefficient)
            uncleaned = first_record(frame[at & (methods == str(row.method))])
            variant = in_cell & (methods == str(row.variant))
            matched = _matched(frame[variant], layer, coefficient, share, uncleaned)
            there = at if matched is None else in_cell & at_config(frame, layer, matched)
            cleaned = first_record(frame[there & variant])
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
                tuple(
                    None if side is None else held_coherence(side, min_coherence, seed)
                    for side in (cleaned, uncleaned)
                ),
                None if matched is None else float(matched),
                differing_questions(cleaned, uncleaned),
            )
    return out


# a grid coefficient within 1% of the matched push stands for it (0.189 for 0.18856)
MATCHED_WITHIN = 0.01


def matching(coefficient: float, share: float) -> float:
    """The coefficient at which a cleaned unit vector, renormalised after dims holding
    `share` of its squared norm were zeroed, pushes the other dims as hard as the uncleaned
    one at `coefficient`."""
    return coefficient * (1 - share) ** 0.5


def push_note(share: float) -> str:
    """What a cleaning gain at the chosen configs holds beside the dims, for dims holding
    `share` of the uncleaned vector: the cleaned one pushes the other dims harder."""
    return (
        f"the cleaned vector, renormalised, pushes {1 / matching(1.0, share):.3f}x harder "
        "along the other dims at a coefficient, so the gain holds that push too (the cleaned "
        f"one at the coefficient x {matching(1.0, share):.3f} matches it)"
    )


def _matched(
    rows: pd.DataFrame, layer: float, coefficient: Any, share: float, uncleaned: dict | None
) -> Any:
    """The coefficient at `layer` among a cleaned variant's `rows` that pushes its
    renormalised vector along the other dims as hard as the uncleaned one at
    `coefficient` (`coefficient` x sqrt(1 - share), the closest within `MATCHED_WITHIN`),
    steered under the `uncleaned` config's settings; None without one."""
    target = matching(stats.as_number(coefficient) or 0.0, share)
    found = [
        (abs(c - target), r["coefficient"])
        for r in rows.to_dict("records")
        if same_value(r["layer"], layer)
        and (c := stats.as_number(r["coefficient"]))
        and math.isclose(c, target, rel_tol=MATCHED_WITHIN)
        and not settings_differ(r, uncleaned)
    ]
    return min(found, key=lambda f: f[0])[1] if found else None


def weighed_words(w: Weighed | None, threshold: float) -> str | None:
    """The comparison as one line under the cleaning answer; None without one."""
    if w is None:
        return None
    where = f"at layer {w.layer}, coefficient {cell(w.coefficient)}"
    if w.cleaned_coefficient is not None:
        where = (
            f"at layer {w.layer}, `{w.variant}` at coefficient {cell(w.cleaned_coefficient)} "
            f"against `{w.method}` at {cell(w.coefficient)}"
        )
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
        f"`{name}` {_side(row, coherence, threshold)}"
        for name, row, coherence in zip(
            (w.variant, w.method), (w.cleaned, w.uncleaned), w.coherences, strict=True
        )
    )
    if not w.compared:
        return f"{where}: {sides}; no question scored in both"
    assert w.gain is not None
    needed = stats.min_questions(w.k)
    # the uncleaned method without an effect here (on the selection half, where configs
    # are chosen): no difference between the two is no answer on the dims
    idle = not _steers(w.uncleaned)
    if (w.gain.lo > 0 or w.gain.hi < 0) and w.gain.n < needed:
        verdict = f"too few held-out questions to tell ({w.gain.n}; {needed} needed)"
    elif w.gain.lo > 0:
        verdict = "the cleaned vector steers more"
    elif w.gain.hi < 0:
        verdict = "the cleaned vector steers less"
    elif idle:
        verdict = (
            f"cannot tell whether the dims matter: `{w.method}` has no detectable effect "
            "here on the selection half"
        )
    elif stats.degenerate(w.gain.lo, w.gain.hi):
        verdict = "no trait difference: each question's trait score was the same in both"
    else:
        verdict = "no detectable difference"
    gain = interval(w.gain.mean, w.gain.lo, w.gain.hi)
    level = "" if w.k <= 1 else f" at {stats.family_confidence(w.k):.1%} (one of {w.k})"
    rests = (
        f"; {w.differing} of the {w.gain.n} questions {'differs' if w.differing == 1 else 'differ'}"
        if w.differing is not None and 0 < w.differing < w.gain.n
        else ""
    )
    said = (
        f"{where}, where they weigh: **{verdict}** (gain, cleaned - uncleaned, paired, held "
        f"out, {gain}{level}, n {w.gain.n}{rests}); {sides}. "
    )
    if w.cleaned_coefficient is not None:
        return said + (
            "The same push along the other dims (the cleaned unit vector is renormalised: "
            f"{cell(w.coefficient)} x sqrt(1 - {w.share:.3f}) = {w.matching:.4g}, within "
            f"{MATCHED_WITHIN:.0%}), so the dims are what differs"
        )
    return said + (
        "Not the dims alone: the cleaned unit vector is renormalised, so at one coefficient "
        f"it pushes {w.push:.2f}x harder along the other dims (at {w.matching:.3g} "
        "it pushes them as hard: add it to `steering.coefficients` to compare the dims alone)"
    )


def _steers(row: dict | None) -> bool:
    """A config whose selection-half interval lies above zero."""
    lo = None if row is None else stats.as_number(row.get("selection_delta_lo"))
    return lo is not None and lo > 0


def _side(row: dict, coherence: dict | None, threshold: float) -> str:
    """ "held-out delta +40.0 [+15.0, +65.0], coherence 71.20 [60.10, 80.93] (3 of 20
    answers under 68)" of one method's config (`coherence`: its `tables.held_coherence`);
    a mean under the bar is said."""
    mean = stats.as_number(row.get("heldout_coherence_mean"))
    under = "" if stats.coherent(mean, threshold) else f", the mean under {threshold:g}"
    said = interval(
        row.get("heldout_trait_delta"), row.get("heldout_delta_lo"), row.get("heldout_delta_hi")
    )
    if mean is None:
        words = "unscored"
    elif coherence is None:
        words = stats.coherence_text(mean, 2)
    else:
        words = coherence_words(coherence, threshold)
    return f"held-out delta {said or 'unscored'}, coherence {words}{under}"
