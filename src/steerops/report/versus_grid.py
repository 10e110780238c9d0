"""A search's choice against the grid's choice of the same method, on the held-out questions
both were scored on: whether searching bought anything over the grid.

Each half's numbers say how far a choice moved the trait from the unsteered model; two such
intervals side by side cannot show which choice moved it more. Both choices were scored on
the same held-out questions (the split follows `seed`, as the grid's), so the difference is
taken question by question (search - grid, in the steering direction for the trait) with
the paired bootstrap interval the report uses everywhere. The grid's choice is made at the
search's own bar (`min_coherence`), so both face one constraint; only configs scored under
the same settings but the questions (`scope`) and with the vectors on disk now are paired."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from steerops import stats
from steerops.report.load import NOT_LOGGED, REBUILT, UNREADABLE, SearchAnswers
from steerops.report.markdown import cell, interval
from steerops.report.tables import pick, same_cell, same_value

# what `vs_grid` says of a search row
COMPARED = "compared"
SAME_CONFIG = "same config"
NO_GRID_CHOICE = "no grid choice"
OTHER_SETTINGS = "other settings"

VERSUS_COLUMNS = [
    "vs_grid",
    "grid_layer",
    "grid_coefficient",
    "grid_status",
    "vs_grid_n",
    "vs_grid_trait_delta",
    "vs_grid_trait_delta_lo",
    "vs_grid_trait_delta_hi",
    "vs_grid_coherence_n",
    "vs_grid_coherence_delta",
    "vs_grid_coherence_delta_lo",
    "vs_grid_coherence_delta_hi",
]


@dataclass(frozen=True)
class Versus:
    """What a search's choice was compared with (`state`: one of the states above, or why
    its answers could not be read, `SearchAnswers.missing`), the grid's choice of its method
    at its bar (layer, coefficient and verdict; verdict only when it chose nothing), and the
    search's choice minus it on the held-out questions both answered (when `COMPARED`)."""

    state: str
    layer: Any = None
    coefficient: Any = None
    status: str = ""
    trait: stats.Interval | None = None
    coherence: stats.Interval | None = None


def versus_grid(
    frame: pd.DataFrame,
    searched: pd.DataFrame,
    answers: dict[tuple, SearchAnswers],
    keys: list[str],
    threshold: float,
    seed: int,
) -> list[Versus | None]:
    """Per row of `searched` (keyed by `keys`, as `answers` is: `load.load_search_heldout`):
    its choice against the grid's choice of its cell and method at the search's bar (else
    `threshold`); None where the search chose nothing or the grid never steered the method."""
    out: list[Versus | None] = []
    for _, row in searched.iterrows():
        found = answers.get(tuple(str(row[k]) for k in keys))
        cell_rows = frame[
            same_cell(frame, row) & (frame["method"].astype(str) == str(row["method"]))
        ]
        if found is None or stats.as_number(row.get("layer")) is None or cell_rows.empty:
            out.append(None)
            continue
        if found.missing:
            out.append(Versus(found.missing))
            continue
        mine = cell_rows[cell_rows["scope"] == found.scope]
        if mine.empty:
            out.append(Versus(OTHER_SETTINGS))
            continue
        bar = stats.as_number(row.get("min_coherence"))
        chosen, status = pick(mine, threshold if bar is None else bar)
        if chosen is None:
            out.append(Versus(NO_GRID_CHOICE, status=status))
            continue
        at = (chosen["layer"], chosen["coefficient"], status)
        if same_value(chosen["layer"], row["layer"]) and same_value(
            chosen["coefficient"], row["coefficient"]
        ):
            out.append(Versus(SAME_CONFIG, *at))
            continue
        traits, coherences = chosen["heldout_traits"], chosen["heldout_coherences"]
        common = [q for q in traits if q in found.scores]
        sign = float(chosen.get("sign", 1.0))
        ours = [found.scores[q] for q in common]
        trait = stats.paired_delta([t for t, _ in ours], [traits[q] for q in common], seed, sign)
        coherence = stats.paired_delta(
            [c for _, c in ours], [coherences.get(q) for q in common], seed
        )
        out.append(Versus(COMPARED, *at, trait, coherence))
    return out


def versus_columns(versus: list[Versus | None]) -> pd.DataFrame:
    """`VERSUS_COLUMNS` per search row (blank where the search was not compared)."""
    rows: list[dict[str, Any]] = []
    for v in versus:
        if v is None:
            rows.append({})
            continue
        row: dict[str, Any] = {"vs_grid": v.state}
        if v.state in (COMPARED, SAME_CONFIG, NO_GRID_CHOICE):
            row |= {"grid_layer": v.layer, "grid_coefficient": v.coefficient}
            row["grid_status"] = v.status
        for name, got in (("trait", v.trait), ("coherence", v.coherence)):
            if got is not None:
                n = "vs_grid_n" if name == "trait" else "vs_grid_coherence_n"
                row[n] = got.n
                row[f"vs_grid_{name}_delta"] = got.mean
                row[f"vs_grid_{name}_delta_lo"] = got.lo
                row[f"vs_grid_{name}_delta_hi"] = got.hi
        rows.append(row)
    return pd.DataFrame(rows, columns=VERSUS_COLUMNS)


def versus_words(row: Any, bar: float) -> str | None:
    """One line under the search's answer (from its `VERSUS_COLUMNS`, the grid's choice at
    the search's `bar`); None where it was not compared."""
    state, method = row.get("vs_grid"), f"`{row['method']}`"
    if state in (UNREADABLE, NOT_LOGGED, REBUILT):
        again = " (a rerun of the search measures it again)" if state == REBUILT else ""
        return f"not compared with the grid's choice of {method}: {state}{again}"
    if state == OTHER_SETTINGS:
        return (
            f"not compared with the grid's choice of {method}: the grid was scored under "
            "other settings (e.g. another judge, generation length or steering scope)"
        )
    if state == NO_GRID_CHOICE:
        status = row.get("grid_status")
        if status == stats.UNSCORED:  # the judge's failure: nothing of the grid to compare
            return (
                f"not compared with the grid's choice of {method}: the grid has none at "
                f"coherence >= {bar:g} (**{status}**: the judge scored none of its configs)"
            )
        return (
            f"the grid of {method} chose nothing at coherence >= {bar:g} "
            f"(**{status}**): the search's choice has no grid choice to beat"
        )
    if state not in (COMPARED, SAME_CONFIG):
        return None
    margin = stats.as_number(row.get("coherence_margin")) or 0.0
    # the search chose at the bar plus its margin on its half; the grid at the bar
    stricter = f"; the search chose at >= {bar + margin:g} on its half" if margin else ""
    grid = (
        f"the grid's choice of {method} at coherence >= {bar:g} (layer "
        f"{cell(row['grid_layer'])}, coefficient {cell(row['grid_coefficient'])}, "
        f"**{row['grid_status']}**{stricter})"
    )
    if state == SAME_CONFIG:
        return f"the same config as {grid}: searching found nothing past it"
    ends = ("", "_lo", "_hi")
    trait = [stats.as_number(row.get(f"vs_grid_trait_delta{s}")) for s in ends]
    coherence = [stats.as_number(row.get(f"vs_grid_coherence_delta{s}")) for s in ends]
    n = int(stats.as_number(row.get("vs_grid_n")) or 0)
    if not n or None in trait:
        return f"against {grid}: no held-out question has a trait score from both, nothing compared"
    lo, hi = trait[1], trait[2]
    assert lo is not None and hi is not None
    if lo > 0:
        verdict = "the search's choice moves the trait further in the steering direction"
    elif hi < 0:
        verdict = "the grid's choice moves the trait further in the steering direction"
    elif lo == hi == 0:
        verdict = f"no trait difference on these {n} questions: each scored alike under both"
    else:
        verdict = (
            f"no trait difference detected on these {n} questions (the interval spans zero: "
            "not evidence the two are alike)"
        )
    said = f"trait {interval(*trait)}{_no_width(lo, hi)}"
    if coherence[0] is not None:
        said += f", coherence {interval(*coherence)}{_no_width(coherence[1], coherence[2])}"
        other_n = int(stats.as_number(row.get("vs_grid_coherence_n")) or 0)
        said += f" (n {other_n})" if other_n != n else ""
        if coherence[2] is not None and coherence[2] < 0:
            verdict += "; the search's choice is less coherent"
        elif coherence[1] is not None and coherence[1] > 0:
            verdict += "; the search's choice is more coherent"
    return (
        f"against {grid}, on the same {n} held-out questions (search - grid, paired): "
        f"{said}: {verdict}"
    )


def _no_width(lo: float | None, hi: float | None) -> str:
    return f" ({stats.DEGENERATE_NOTE})" if stats.degenerate(lo, hi) else ""
