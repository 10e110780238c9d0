"""The report's choice against a random direction steered at its own layer and coefficient.

A steering vector can move the trait because of its direction, or because any push of that
size at that layer moves it (the model breaks the same way whatever the direction).
`random_baseline` is a random unit vector, steered through the same grid: its config at
the choice's layer and coefficient is the control, and the paired gain (the choice's
held-out trait minus the control's, question by question) says how much of the effect the
direction itself carries."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from steerops import stats
from steerops.report.markdown import cell, coherence_words, interval
from steerops.report.tables import (
    at_config,
    choices,
    first_record,
    held_coherence,
    paired_gap,
    same_cell,
)

CONTROL = "random_baseline"


@dataclass(frozen=True)
class Control:
    """The control's held-out numbers at the choice's config (None: not steered there) and
    the choice's paired gain over it."""

    steered: bool  # the control was steered at the choice's layer and coefficient
    delta: stats.Interval | None
    coherence: dict | None  # `tables.held_coherence`: mean, interval, answers under the bar
    gain: stats.Interval | None
    own: dict | None = None  # the control's own gap row: its verdict over its whole grid


def controls(
    frame: pd.DataFrame, gap: pd.DataFrame, seed: int, min_coherence: float
) -> dict[tuple, Control]:
    """Per (model, trait): the control of its choice (`tables.selection_choice`); none
    where nothing was chosen, the choice is the control itself, or the control was not
    steered in its cell's (model, trait, position, component)."""
    out = {}
    for pair, _, choice in choices(gap):
        if str(choice["method"]) == CONTROL:
            continue
        cell = same_cell(frame, choice)
        at = at_config(frame, choice["layer"], choice["coefficient"])
        methods = frame["method"].astype(str)
        ours = first_record(frame[cell & at & (methods == str(choice["method"]))])
        if ours is None or not (cell & (methods == CONTROL)).any():
            continue
        control = first_record(frame[cell & at & (methods == CONTROL)])
        # its verdict over its own grid, which the tables list apart from this config
        own = first_record(gap[same_cell(gap, choice) & (gap["method"].astype(str) == CONTROL)])
        if control is None:
            out[pair] = Control(False, None, None, None, own)
            continue
        delta = stats.Interval(
            int(control["heldout_n"] or 0),
            stats.as_number(control["heldout_trait_delta"]),
            stats.as_number(control["heldout_delta_lo"]),
            stats.as_number(control["heldout_delta_hi"]),
        )
        coherence = held_coherence(control, min_coherence, seed)
        out[pair] = Control(True, delta, coherence, paired_gap(ours, control, seed), own)
    return out


def control_words(c: Control | None, threshold: float) -> str | None:
    """The control as one line of "In short"; None without one."""
    if c is None:
        return None
    if not c.steered:
        return (
            f"no `{CONTROL}` config at this layer and coefficient: no random direction to "
            f"compare with (add the coefficient to its grid){_own_words(c.own)}"
        )
    assert c.delta is not None and c.gain is not None and c.coherence is not None
    coherence = (
        ""
        if stats.as_number(c.coherence["coherence"]) is None
        else f", coherence {coherence_words(c.coherence, threshold)}"
    )
    alike = f" ({stats.DEGENERATE_NOTE})" if stats.degenerate(c.delta.lo, c.delta.hi) else ""
    said = (
        f"one random direction (`{CONTROL}`, a single draw) at the same layer and "
        "coefficient: held-out delta "
        f"{interval(c.delta.mean, c.delta.lo, c.delta.hi)}{alike}, n {c.delta.n}{coherence}"
    )
    if c.gain.mean is not None:
        said += (
            f"; this config's paired gain over it "
            f"{interval(c.gain.mean, c.gain.lo, c.gain.hi)}, n {c.gain.n}"
        )
    return said + _own_words(c.own)


def _own_words(own: dict | None) -> str:
    """ "; over its own grid, `random_baseline` is **no effect** (its choice on the selection
    half, layer 17, coefficient 0.2: held-out delta -5.0 [-20.0, +0.0])": the control's row
    in the tables, which need not be the config compared here."""
    if own is None:
        return ""
    said = f"; over its own grid, `{CONTROL}` is **{own.get('status')}**"
    if stats.as_number(own.get("layer")) is None:
        return said
    held = interval(own.get("delta"), own.get("delta_lo"), own.get("delta_hi"))
    return (
        f"{said} (its choice on the selection half, layer {cell(own.get('layer'))}, coefficient "
        f"{cell(own.get('coefficient'))}" + (f": held-out delta {held})" if held else ")")
    )
