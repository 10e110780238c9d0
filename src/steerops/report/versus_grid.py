"""A search's choice against the grid's choice of the same method, on the held-out questions
both were scored on: whether searching bought anything over the grid.

Each half's numbers say how far a choice moved the trait from the unsteered model; two such
intervals side by side cannot show which choice moved it more. Both choices were scored on
the same held-out questions (the split follows `seed`, as the grid's), so the difference is
taken question by question (search - grid, in the steering direction for the trait) with
the paired bootstrap interval the report uses everywhere."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from steerops import stats
from steerops.report.markdown import cell, interval
from steerops.report.tables import pick, same_cell, same_value

VERSUS_COLUMNS = [
    "grid_layer",
    "grid_coefficient",
    "grid_status",
    "vs_grid_n",
    "vs_grid_trait_delta",
    "vs_grid_trait_delta_lo",
    "vs_grid_trait_delta_hi",
    "vs_grid_coherence_delta",
    "vs_grid_coherence_delta_lo",
    "vs_grid_coherence_delta_hi",
]


@dataclass(frozen=True)
class Versus:
    """The grid's choice of the search's method (its layer, coefficient and verdict), and
    the search's choice minus it on the held-out questions both answered (None: the same
    config, nothing to compare)."""

    layer: Any
    coefficient: Any
    status: str
    trait: stats.Interval | None
    coherence: stats.Interval | None


def versus_grid(
    frame: pd.DataFrame,
    searched: pd.DataFrame,
    heldout: dict[tuple, tuple[str, dict[str, tuple]]],
    keys: list[str],
    min_coherence: float,
    seed: int,
) -> list[Versus | None]:
    """Per row of `searched` (keyed by `keys`, as `heldout` is: `load.load_search_heldout`):
    its choice against the grid's choice of its cell and method at the report's bar, from
    the grid configs scored under the same settings (`scope`); None where there is no such
    grid, or either side chose nothing."""
    out: list[Versus | None] = []
    for _, row in searched.iterrows():
        found = heldout.get(tuple(str(row[k]) for k in keys))
        if found is None or stats.as_number(row.get("layer")) is None:
            out.append(None)
            continue
        scope, answers = found
        mine = frame[
            same_cell(frame, row)
            & (frame["method"].astype(str) == str(row["method"]))
            & (frame["scope"] == scope)
        ]
        chosen, status = pick(mine, min_coherence) if len(mine) else (None, "")
        if chosen is None:
            out.append(None)
            continue
        same = same_value(chosen["layer"], row["layer"]) and same_value(
            chosen["coefficient"], row["coefficient"]
        )
        trait = coherence = None
        if not same:
            traits, coherences = chosen["heldout_traits"], chosen["heldout_coherences"]
            common = [q for q in traits if q in answers]
            sign = float(chosen.get("sign", 1.0))
            trait = stats.paired_delta(
                [answers[q][0] for q in common], [traits[q] for q in common], seed, sign
            )
            coherence = stats.paired_delta(
                [answers[q][1] for q in common], [coherences.get(q) for q in common], seed
            )
        out.append(Versus(chosen["layer"], chosen["coefficient"], status, trait, coherence))
    return out


def versus_columns(versus: list[Versus | None]) -> pd.DataFrame:
    """`VERSUS_COLUMNS` per search row (blank where nothing was compared)."""
    rows = []
    for v in versus:
        if v is None:
            rows.append({})
            continue
        t, c = v.trait, v.coherence
        rows.append(
            {
                "grid_layer": v.layer,
                "grid_coefficient": v.coefficient,
                "grid_status": v.status,
                "vs_grid_n": None if t is None else t.n,
                "vs_grid_trait_delta": None if t is None else t.mean,
                "vs_grid_trait_delta_lo": None if t is None else t.lo,
                "vs_grid_trait_delta_hi": None if t is None else t.hi,
                "vs_grid_coherence_delta": None if c is None else c.mean,
                "vs_grid_coherence_delta_lo": None if c is None else c.lo,
                "vs_grid_coherence_delta_hi": None if c is None else c.hi,
            }
        )
    return pd.DataFrame(rows, columns=VERSUS_COLUMNS)


def versus_words(row: Any, method: str) -> str | None:
    """One line under the search's answer (from its `VERSUS_COLUMNS`); None without a grid
    choice to compare with."""
    layer = stats.as_number(row.get("grid_layer"))
    if layer is None:
        return None
    grid = (
        f"the grid's choice of `{method}` (layer {cell(row['grid_layer'])}, coefficient "
        f"{cell(row['grid_coefficient'])}, **{row['grid_status']}**)"
    )
    n = stats.as_number(row.get("vs_grid_n"))
    if n is None:
        return f"the same config as {grid}: searching found nothing past it"
    trait = [row.get(f"vs_grid_trait_delta{s}") for s in ("", "_lo", "_hi")]
    coherence = [
        stats.as_number(row.get(f"vs_grid_coherence_delta{s}")) for s in ("", "_lo", "_hi")
    ]
    lo, hi = trait[1], trait[2]
    if lo is None or hi is None:
        verdict = "no trait score on a question both answered"
    elif lo > 0:
        verdict = "the search's choice moves the trait more"
    elif hi < 0:
        verdict = "the grid's choice moves the trait more"
    else:
        verdict = "no detectable trait difference: searching bought no trait over the grid"
    if coherence[2] is not None and coherence[2] < 0:
        verdict += "; the search's choice is less coherent"
    elif coherence[1] is not None and coherence[1] > 0:
        verdict += "; the search's choice is more coherent"
    alike = f" ({stats.DEGENERATE_NOTE})" if stats.degenerate(lo, hi) else ""
    said = f"trait {interval(*trait)}{alike}"
    if coherence[0] is not None:
        said += f", coherence {interval(*coherence)}"
    return (
        f"against {grid}, on the same {int(n)} held-out questions (search - grid, paired): "
        f"{said}: {verdict}"
    )
