"""A near copy's comparison made where the cleaned dims weigh.

A cleaned variant that removed under `tables.BARELY` of its vector at the chosen layer is a
near copy there: its gain over the uncleaned method says nothing of the dims. The same dims
can hold much more of the vector at another layer (`peak_share_layer`). When the grid
steered both methods there at the choice's coefficient, their paired held-out gain at that
one config (the same layer and coefficient for both, so only the dims differ) is the
comparison that tests them."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from steerops import stats
from steerops.report.markdown import cell, interval
from steerops.report.tables import BARELY, KEY, paired_gap, same_value, selection_choice


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


def weighed(
    frame: pd.DataFrame, curve: pd.DataFrame, gap: pd.DataFrame, seed: int
) -> dict[tuple, Weighed]:
    """Per (model, trait, cleaned variant) of each (model, trait)'s choice: the near copies
    whose dims hold at least `BARELY` of the vector at another layer, compared there."""
    out = {}
    if curve.empty or "peak_share_layer" not in curve:
        return out
    for (model, trait), mine in gap.groupby(["model", "trait"], sort=True):
        choice = selection_choice(mine)
        if choice is None:
            continue
        same = pd.Series(True, index=curve.index)
        for k in [*KEY, "method"]:
            same &= curve[k].astype(str) == str(choice[k])
        # the choice's cell at its coefficient: the layer is the dims' own
        cell_rows = pd.Series(True, index=frame.index)
        for k in KEY:
            cell_rows &= frame[k].astype(str) == str(choice[k])
        coefficient = choice["coefficient"]
        cell_rows &= frame["coefficient"].map(lambda x, c=coefficient: same_value(x, c))
        for row in curve[same].itertuples(index=False):
            layer, share = stats.as_number(row.peak_share_layer), stats.as_number(row.peak_share)
            near = stats.as_number(getattr(row, "removed_share", None))
            if layer is None or share is None or near is None:
                continue
            if near >= BARELY or share < BARELY or str(row.dims_cleaned) == "0":
                continue
            at = cell_rows & frame["layer"].map(lambda x, lay=layer: same_value(x, lay))
            cleaned = _one(frame[at & (frame["method"].astype(str) == str(row.variant))])
            uncleaned = _one(frame[at & (frame["method"].astype(str) == str(row.method))])
            gain = (
                paired_gap(cleaned, uncleaned, seed)
                if cleaned is not None and uncleaned is not None
                else None
            )
            out[(str(model), str(trait), str(row.variant))] = Weighed(
                str(row.variant),
                str(row.method),
                int(layer),
                share,
                float(coefficient),
                cleaned,
                uncleaned,
                gain,
            )
    return out


def _one(rows: pd.DataFrame) -> dict | None:
    return rows.iloc[0].to_dict() if len(rows) else None


def weighed_words(w: Weighed | None, threshold: float) -> str | None:
    """The comparison as one line under the cleaning answer; None without one."""
    if w is None:
        return None
    where = f"at layer {w.layer}, coefficient {cell(w.coefficient)}"
    if w.cleaned is None or w.uncleaned is None:
        return (
            f"{where}, where they weigh, the grid did not steer both: add {w.layer} to "
            "`steering.layers` to test them"
        )
    sides = "; ".join(
        f"`{name}` {_side(row, threshold)}"
        for name, row in ((w.variant, w.cleaned), (w.method, w.uncleaned))
    )
    said = f"{where}, the same config for both: {sides}"
    if w.gain is None or w.gain.mean is None:
        return said + "; no question scored in both"
    if w.gain.lo is not None and w.gain.lo > 0:
        verdict = "cleaning strengthens the steering there"
    elif w.gain.hi is not None and w.gain.hi < 0:
        verdict = "cleaning weakens the steering there"
    elif stats.degenerate(w.gain.lo, w.gain.hi):
        verdict = "no trait difference there: each question's trait score was the same in both"
    else:
        verdict = "no detectable difference there"
    gain = interval(w.gain.mean, w.gain.lo, w.gain.hi)
    return f"{said}; gain (cleaned - uncleaned, paired, held out) {gain}, n {w.gain.n}: {verdict}"


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
