"""Tables as markdown: an estimate and its interval in one "estimate [low, high]" cell, pipes
inside cells escaped (a token such as `<|im_start|>` stays one cell)."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

from steerops import stats

# what each grid verdict means, in one text for the report and the results page
VERDICT_LEGEND = (
    "Verdicts: **ok** (held-out interval above zero and a held-out mean coherence at or "
    "above the bar: the best "
    "coefficient of the grid steered, which a finer grid or `steerops search` may beat), "
    "**no effect** (no coherent config's interval is above zero on the selection half, or "
    "the chosen one's reaches zero held out: no optimal or recommended coefficient; none "
    "detected on these questions, not none at all), **opposite effect** (the chosen "
    f"config's held-out interval lies below zero on at least {stats.MIN_HELDOUT} questions: "
    "the trait moved against the steering direction; check the vector's sign and "
    "`steering.direction`, or, after an effect on the selection half, the halves disagree), "
    "**incoherent held out**, **too few held out** (an interval above zero on fewer than "
    f"{stats.MIN_HELDOUT} held-out questions: no sign or permutation test could tell an "
    "effect at 5% on so few), **needs finer coefficients** (no steered config coherent; "
    "`best_coherence_reached` in the gap analysis is the best a steered config got), "
    "**baseline incoherent** (no steered config coherent, and the unsteered model is under "
    "the bar on the selection half too: no coefficient reaches it; check the judge's "
    "coherence scale or the bar), **trait unscored** (the judge gave no coherent steered "
    "config a trait score, or scored no steered config at all: a failure, not a finding), "
    "**held out unscored** (the judge gave the choice no held-out trait or coherence score: "
    "a failure, not a finding). Coherences print rounded down, so none shows at a bar it is "
    "under; p and q values rounded up (3 significant digits), so none shows under a level it "
    "is over."
)

# (estimate, low, high) columns printed as one "estimate [low, high]" column
INTERVALS = [
    ("delta", "delta_lo", "delta_hi"),
    ("selection_delta", "selection_delta_lo", "selection_delta_hi"),
    ("gap", "gap_lo", "gap_hi"),
    ("preclean_delta", "preclean_delta_lo", "preclean_delta_hi"),
    ("clean_after_delta", "clean_after_delta_lo", "clean_after_delta_hi"),
    ("gain", "gain_lo", "gain_hi"),
    ("search_trait_delta", "search_delta_lo", "search_delta_hi"),
    ("heldout_trait_delta", "heldout_delta_lo", "heldout_delta_hi"),
    ("credited_delta", "credited_lo", "credited_hi"),
    ("heldout_credited_delta", "heldout_credited_lo", "heldout_credited_hi"),
    ("vs_grid_trait_delta", "vs_grid_trait_delta_lo", "vs_grid_trait_delta_hi"),
    ("vs_grid_coherence_delta", "vs_grid_coherence_delta_lo", "vs_grid_coherence_delta_hi"),
]

# the cleaning gains' intervals are Bonferroni over a method's `gain_k` variants: 95% together;
# a selection or search half's interval is of the config chosen on it: optimistic, not 95%
HEADERS = {
    "gain": "gain [95% CI, all gain_k together]",
    "selection_delta": "selection_delta [interval; chose the config]",
    "search_trait_delta": "search_trait_delta [interval; chose the config]",
}


NO_WIDTH = "†"  # marks an interval of no width; the note under the table says what it means
NO_WIDTH_NOTE = (
    f"{NO_WIDTH} an interval of no width: every question gave the same value (one question, "
    "or all alike), which says nothing of its precision."
)


def markdown_table(table: pd.DataFrame, empty: str = "no data") -> str:
    """`table` as markdown (intervals as one column); `empty` says why there is no row."""
    if table.empty:
        return f"_{empty}_"
    table = table.copy()
    flat = False
    for mid, lo, hi in INTERVALS:
        if {mid, lo, hi} <= set(table.columns):
            rows = list(zip(table[mid], table[lo], table[hi], strict=True))
            flat = flat or any(_no_width(*v) for v in rows)
            # the mark only in tables: they carry the note; a sentence says it in words
            table[mid] = [interval(*v) + (f" {NO_WIDTH}" if _no_width(*v) else "") for v in rows]
            label = HEADERS.get(mid, f"{mid} [95% CI]")
            table = table.drop(columns=[lo, hi]).rename(columns={mid: label})
    head = "| " + " | ".join(table.columns) + " |"
    rule = "| " + " | ".join("---" for _ in table.columns) + " |"
    shown = [
        coherence_cell if _is_coherence(c) else p_cell if _is_p(c) else cell for c in table.columns
    ]
    body = [
        "| " + " | ".join(f(v) for f, v in zip(shown, row, strict=True)) + " |"
        for row in table.itertuples(index=False)
    ]
    note = ["", NO_WIDTH_NOTE] if flat else []
    return "\n".join([head, rule, *body, *note])


def numeric_order(value: Any) -> tuple[float, str]:
    """A layer or coefficient's sort key, as a value or as printed: by number ("0.2",
    12, the first of "[1, 2]"), then by text (several vectors' "4+8" after every number)."""
    text = str(value)
    number = stats.as_number(text.split(",")[0].strip("[]() "))
    return (number if number is not None else float("inf"), text)


def where(row: Any) -> str:
    """`method` at position (and component, when not the residual stream)."""
    component = str(row.get("component", "residual"))
    at = f" {component}" if component not in ("residual", "", "nan") else ""
    position = row.get("position")
    return f"`{row['method']}`" + (f" at {position}{at}" if position is not None else at)


def interval(mid, lo, hi) -> str:
    if mid is None or (isinstance(mid, float) and np.isnan(mid)):
        return ""
    return stats.interval_text(mid, lo, hi)


def coherence_words(row: Any, threshold: float) -> str:
    """ "83.22 [71.80, 92.93] (5 of 20 answers under 68)": a held-out coherence, its
    interval where the row has one, and its answers under the bar."""
    get = row.get if isinstance(row, dict) else lambda k: getattr(row, k, None)
    lo, hi = stats.as_number(get("coherence_lo")), stats.as_number(get("coherence_hi"))
    spread = (
        f" [{stats.coherence_text(lo, 2)}, {stats.coherence_text(hi, 2)}]"
        if lo is not None and hi is not None
        else ""
    )
    under = stats.under_bar_text(
        get("coherence_scored"), get("under_bar"), threshold, get("coherence_unscored")
    )
    return f"{stats.coherence_text(get('coherence'), 2)}{spread}{under}"


def _no_width(mid, lo, hi) -> bool:
    bounds = [stats.as_number(v) for v in (mid, lo, hi)]
    return None not in bounds and all(np.isfinite(bounds)) and bounds[1] == bounds[2]


def _is_coherence(column: str) -> bool:
    # a judged coherence or an interval bound of one (not the bar `min_coherence`), printed
    # rounded down as every line prints it
    return re.search(r"(^|_)coherence(_mean|_reached|_lo|_hi)?$", column) is not None and not (
        column.startswith("min_")
    )


def _is_p(column: str) -> bool:
    # a p or q value (`heldout_p`, `heldout_q`), printed as the verdict lines print it
    return re.search(r"(^|_)[pq]$", column) is not None


def p_cell(value) -> str:
    """A p or q rounded up to 3 significant digits (`stats.p_text`), as every line prints
    it, so a table and a line never show one value two ways; "" when missing."""
    return stats.p_text(value) if cell(value) else ""


def coherence_cell(value) -> str:
    """A coherence that never prints at or above a bar it is under (67.996: "67.99")."""
    text = cell(value)
    return stats.coherence_text(value, 2) if text else text


def cell(value) -> str:
    if value is None:  # missing, as a NaN is
        return ""
    if isinstance(value, float):
        return "" if np.isnan(value) else f"{value:.4g}"
    return str(value).replace("|", "\\|")  # a bare pipe would split the cell
