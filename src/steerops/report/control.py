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
from steerops.report.markdown import interval
from steerops.report.tables import at_config, choices, first_record, paired_gap, same_cell

CONTROL = "random_baseline"


@dataclass(frozen=True)
class Control:
    """The control's held-out numbers at the choice's config (None: not steered there) and
    the choice's paired gain over it."""

    steered: bool  # the control was steered at the choice's layer and coefficient
    delta: stats.Interval | None
    coherence: float | None
    gain: stats.Interval | None


def controls(frame: pd.DataFrame, gap: pd.DataFrame, seed: int) -> dict[tuple, Control]:
    """Per (model, trait), as text: the control of its choice (`tables.selection_choice`);
    none where nothing was chosen, the choice is the control itself, or the control was
    not steered in its cell's (model, trait, position, component)."""
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
        if control is None:
            out[pair] = Control(False, None, None, None)
            continue
        delta = stats.Interval(
            int(control["heldout_n"] or 0),
            stats.as_number(control["heldout_trait_delta"]),
            stats.as_number(control["heldout_delta_lo"]),
            stats.as_number(control["heldout_delta_hi"]),
        )
        coherence = stats.as_number(control["heldout_coherence_mean"])
        out[pair] = Control(True, delta, coherence, paired_gap(ours, control, seed))
    return out


def control_words(c: Control | None) -> str | None:
    """The control as one line of "In short"; None without one."""
    if c is None:
        return None
    if not c.steered:
        return (
            f"no `{CONTROL}` config at this layer and coefficient: no random direction to "
            "compare with (add the coefficient to its grid)"
        )
    assert c.delta is not None and c.gain is not None
    coherence = "" if c.coherence is None else f", coherence {stats.coherence_text(c.coherence, 2)}"
    alike = f" ({stats.DEGENERATE_NOTE})" if stats.degenerate(c.delta.lo, c.delta.hi) else ""
    said = (
        f"one random direction (`{CONTROL}`, a single draw) at the same layer and "
        "coefficient: held-out delta "
        f"{interval(c.delta.mean, c.delta.lo, c.delta.hi)}{alike}{coherence}, n {c.delta.n}"
    )
    if c.gain.mean is not None:
        said += (
            f"; this config's paired gain over it "
            f"{interval(c.gain.mean, c.gain.lo, c.gain.hi)}, n {c.gain.n}"
        )
    return said
