"""What a cell's grid steered, in words: "best of N steered configs (layers ...;
coefficients ...)", and the note when the next larger coefficient at the chosen layer was
incoherent on the selection half (the choice is the grid's last coherent step)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from steerops import stats
from steerops.report.markdown import cell, coherence_words, numeric_order
from steerops.report.trial_words import narrowed
from steerops.search.store import read_before_of

CELL = ["model", "trait", "position", "component", "method"]


def grids(frame: pd.DataFrame, threshold: float) -> dict[tuple, dict[str, Any]]:
    """Per cell, what its grid steered (layers and coefficients as printed, config count)
    and, per (layer, coefficient), whether it was coherent on the selection half: an ok
    choice is "best of" that grid, and one next to an incoherent coefficient says so."""
    out: dict[tuple, dict[str, Any]] = {}
    if frame.empty:
        return out
    steered = frame[frame["coefficient"].map(lambda c: stats.as_number(c) not in (0, None))]
    for key, rows in steered.groupby(CELL, sort=False):
        # signed: -0.4 and +0.4 are two configs; None: no coherence score (not incoherent)
        coherent = {
            (cell(r.layer), stats.as_number(r.coefficient) or 0.0): (
                None
                if stats.as_number(r.selection_coherence_mean) is None
                else stats.coherent(r.selection_coherence_mean, threshold)
            )
            for r in rows.itertuples(index=False)
        }
        out[key] = {
            "layers": sorted({cell(x) for x in rows["layer"]}, key=numeric_order),
            "coefficients": sorted({cell(x) for x in rows["coefficient"]}, key=numeric_order),
            "coherent": coherent,
            # configs of earlier sweeps of the cell (`load.load_results`)
            "earlier": int(rows["earlier_configs"].max()) if "earlier_configs" in rows else 0,
        }
    return out


def earlier_words(grid: dict[str, Any] | None) -> str | None:
    """The line when the cell's log holds configs an earlier sweep steered (under its
    settings and vectors) and the latest dropped: the held-out half was computed for them
    too, so a grid revised after reading it is not a first look (as a search says of the
    held-out reads before it); None without. A grid only extended leaves none behind, so
    no line is no proof of a first look."""
    earlier = (grid or {}).get("earlier") or 0
    if not earlier:
        return None
    return (
        f"the cell's results log also holds {earlier} config{'s' if earlier != 1 else ''} "
        "of earlier sweeps under the same settings (another grid of layers or coefficients): "
        "their held-out numbers were computed too, so if this grid was chosen after reading "
        "them, its held-out figure is not a first look"
    )


def grid_words(row, grid: dict[str, Any] | None, trials=None, search=None) -> tuple[str, str]:
    """("best of N steered configs (layers ...; coefficients ...)", a note when the next
    larger coefficient at the chosen layer was incoherent on the selection half, pointing
    at the cell's search `trials` when they tried a coefficient between the two (with the
    held-out verdict of the `search`'s own choice when it lies between them), else
    suggesting a search)."""
    if not grid:
        return "optimal", ""
    n = len(grid["coherent"])
    coherent = sum(v is True for v in grid["coherent"].values())
    # one coherent config is no comparison: said so, not "best of"
    which = "the only coherent one" if coherent == 1 and n > 1 else "best"
    best = (
        f"{which} of {n} steered config{'s' if n != 1 else ''} "
        f"(layer{'s' if len(grid['layers']) != 1 else ''} {', '.join(grid['layers'])}; "
        f"coefficient{'s' if len(grid['coefficients']) != 1 else ''} "
        f"{', '.join(grid['coefficients'])})"
    )
    layer, coefficient = cell(row.layer), stats.as_number(row.coefficient) or 0.0
    same_sign = [c for (x, c) in grid["coherent"] if x == layer and c * coefficient > 0]
    if len(same_sign) > 1 and all(abs(c) >= abs(coefficient) for c in same_sign):
        # the best may lie below the grid: a smaller coefficient was never tried
        best += (
            f"; {coefficient:g} is the smallest coefficient steered here: nothing smaller was tried"
        )
    # the stronger coefficients of the same sign at the chosen layer, weakest first
    larger = sorted(
        (
            c
            for (x, c) in grid["coherent"]
            if x == layer and c * coefficient > 0 and abs(c) > abs(coefficient)
        ),
        key=abs,
    )
    if not larger or grid["coherent"][layer, larger[0]] is not False:
        return best, ""
    again = next((c for c in larger[1:] if grid["coherent"][layer, c] is True), None)
    if again is not None:  # a dip, or noise on the selection half: no one edge to find
        return best, (
            f"; the next larger coefficient here ({larger[0]:g}) is incoherent on the "
            f"selection half, but {again:g} is coherent again: coherence is not lost at one "
            "edge here"
        )
    searched = narrowed(trials, row.layer, coefficient, larger[0])
    held = _held_out(search, layer, coefficient, larger[0]) if searched else ""
    cliff = (
        f"; the next larger coefficient here ({larger[0]:g}) is incoherent on the selection "
        "half, so this one is the grid's last coherent step: coherence is lost between the "
        + (
            f"two (the search's trials between them narrow where{held})"
            if searched
            else "two (a finer grid or `steerops search` finds where)"
        )
    )
    return best, cliff


def _held_out(search, layer: str, low: float, high: float) -> str:
    """What the search's own choice says held out when it lies between the grid's last
    coherent step and the next (`low`, `high`) at `layer`: its trials found the edge on the
    search half, which the other half need not share."""
    if search is None:
        return ""
    get = search.get if hasattr(search, "get") else lambda k: getattr(search, k, None)
    chosen = stats.as_number(get("coefficient"))
    if chosen is None or cell(get("layer")) != layer or chosen * low <= 0:
        return ""  # nothing chosen, another layer, or steering the other way
    if not abs(low) < abs(chosen) < abs(high):
        return ""
    status = get("status")
    if status == stats.OK:
        second = (
            " (not a first look: that half was read before)"
            if read_before_of(get("heldout_read_before"))
            else ""
        )
        return (
            f", on the search half; its choice between them, {cell(chosen)}, is ok held out"
            + second
        )
    if status != stats.INCOHERENT:
        return f" on the search half, but its choice between them, {cell(chosen)}, is {status}"
    # chosen just over the bar on one half, under it on the other: a mean over a few
    # answers this near the bar does not locate the edge
    there = stats.as_number(get("search_coherence"))
    held = {k: get(f"heldout_{k}") for k in ("coherence", "coherence_lo", "coherence_hi")}
    return (
        f" on the search half, but its choice between them, {cell(chosen)}"
        + (f" (coherence {stats.coherence_text(there, 2)} there)" if there is not None else "")
        + " is incoherent held out"
        + (
            f" ({coherence_words(held, 0.0)})"  # no answer counts given: no bar said
            if stats.as_number(held["coherence"]) is not None
            else ""
        )
        + ": a mean coherence this near the bar does not locate the edge"
        + (
            ""
            if stats.as_number(get("coherence_margin"))
            else " (a margin over it, `search.coherence_margin`, keeps the search's choice "
            "clear of it)"
        )
    )
