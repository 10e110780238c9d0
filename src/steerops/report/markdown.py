"""Tables as markdown: an estimate and its interval in one "estimate [low, high]" cell, pipes
inside cells escaped (a token such as `<|im_start|>` stays one cell)."""

from __future__ import annotations

import numpy as np
import pandas as pd

# (estimate, low, high) columns printed as one "estimate [low, high]" column
INTERVALS = [
    ("delta", "delta_lo", "delta_hi"),
    ("gap", "gap_lo", "gap_hi"),
    ("gain", "gain_lo", "gain_hi"),
    ("search_trait_delta", "search_delta_lo", "search_delta_hi"),
    ("heldout_trait_delta", "heldout_delta_lo", "heldout_delta_hi"),
]


def markdown_table(table: pd.DataFrame) -> str:
    if table.empty:
        return "_no data_"
    table = table.copy()
    for mid, lo, hi in INTERVALS:
        if {mid, lo, hi} <= set(table.columns):
            table[mid] = [interval(*v) for v in zip(table[mid], table[lo], table[hi], strict=True)]
            table = table.drop(columns=[lo, hi]).rename(columns={mid: f"{mid} [95% CI]"})
    head = "| " + " | ".join(table.columns) + " |"
    rule = "| " + " | ".join("---" for _ in table.columns) + " |"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def interval(mid, lo, hi) -> str:
    if mid is None or (isinstance(mid, float) and np.isnan(mid)):
        return ""
    return f"{mid:+.1f} [{lo:+.1f}, {hi:+.1f}]"


def cell(value) -> str:
    if value is None:  # missing, as a NaN is
        return ""
    if isinstance(value, float):
        return "" if np.isnan(value) else f"{value:.4g}"
    return str(value).replace("|", "\\|")  # a bare pipe would split the cell
