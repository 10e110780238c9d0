"""The report's metrics.json: counts of its findings (cells ok, aliases, near copies,
searches against the grid...) and the best cell with its checks, for `dvc metrics diff`
across experiments."""

from __future__ import annotations

import numpy as np
import pandas as pd

from steerops import stats
from steerops.report import tables
from steerops.report.versus_grid import COMPARED
from steerops.search.store import read_before_of


def findings(gap: pd.DataFrame, held: pd.Series) -> int:
    """How many findings the cells `held` are: a cell, its aliases and its near copies
    repeat one test, so they count once, held when any of them is (their held-out
    coherences, and so their verdicts, can still differ near the bar)."""
    if gap.empty:
        return 0
    cells = [tuple(map(str, r)) for r in gap[tables.KEY].itertuples(index=False)]
    twin = {
        (*cell, str(m)): str(a or "") or str(c or "")
        for cell, m, a, c in zip(
            cells,
            gap["method"],
            gap["alias_of"].fillna(""),
            gap["near_copy_of"].fillna(""),
            strict=True,
        )
    }

    def root(cell: tuple, method: str) -> str:  # an alias of a near copy: its twin's twin
        seen = {method}
        while (nxt := twin.get((*cell, method), "")) and nxt not in seen:
            seen.add(method := nxt)
        return method

    keys = [f"{c}|{root(c, str(m))}" for c, m in zip(cells, gap["method"], strict=True)]
    return int(held.groupby(keys).any().sum())


def report_metrics(gap, prepost, errors, searched) -> dict:
    """A handful of counts and the best cell: chosen on the selection half like every best
    (the largest selection-half delta of a cell's chosen config), reported held out."""
    count = gap[gap["alias_of"] == ""]["status"].value_counts()
    return {
        "cells": int((gap["alias_of"] == "").sum()),
        "cells_ok": int(count.get(stats.OK, 0)),
        # of those, the ones whose held-out test holds over every cell tested (q < 0.05)
        "cells_ok_at_fdr_5pct": int(
            ((gap["status"] == stats.OK) & (gap["heldout_q"] < stats.FDR)).sum()
        ),
        "cells_no_effect": int(count.get(stats.NO_EFFECT, 0)),
        "cells_opposite_effect": int(count.get(stats.OPPOSITE, 0)),
        "cells_incoherent_heldout": int(count.get(stats.INCOHERENT, 0)),
        "cells_too_few_heldout": int(count.get(stats.TOO_FEW, 0)),
        "cells_needing_finer_coefficients": int(count.get(stats.NEEDS_FINER, 0)),
        "cells_baseline_incoherent": int(count.get(stats.BASELINE_INCOHERENT, 0)),
        "cells_trait_unscored": int(count.get(stats.UNSCORED, 0)),
        "cells_heldout_unscored": int(count.get(stats.HELDOUT_UNSCORED, 0)),
        "aliases": int((gap["alias_of"] != "").sum()),
        # cleaned cells counted above whose test repeats their uncleaned method's (a q
        # with the p in its twin's place: `cells_ok_at_fdr_5pct` may count both)
        "near_copies": int((gap["near_copy_of"] != "").sum()),
        # the ok cells counted once: an alias or a near copy repeats its twin's finding
        "findings_ok": findings(gap, gap["status"] == stats.OK),
        "findings_ok_at_fdr_5pct": findings(
            gap, (gap["status"] == stats.OK) & (gap["heldout_q"] < stats.FDR)
        ),
        **_best_cell(gap),
        "flagged_preclean_gaps": (
            int((prepost["flag"] == tables.LIKELY_BUG).sum()) if len(prepost) else 0
        ),
        "best_predictor_loo_mae": _num(errors["loo_mae"].min()) if len(errors) else None,
        "searches": int(len(searched)),
        "searches_ok": int((searched["status"] == stats.OK).sum()) if len(searched) else 0,
        # of those, the ones whose held-out test holds over the report's searches (q < 0.05)
        "searches_ok_at_fdr_5pct": int(
            ((searched["status"] == stats.OK) & (searched["heldout_q"] < stats.FDR)).sum()
        ),
        # of those ok, the ones whose held-out half was read before for other choices of
        # earlier searches of the cell: not a first look
        "searches_ok_read_before": _ok_read_before(searched),
        # each search's choice against the grid's, paired on the held-out questions
        # (`versus_grid`): how many were compared, and moved the trait further than it
        **_versus_counts(searched),
    }


def _versus_counts(searched: pd.DataFrame) -> dict[str, int]:
    compared = searched.get("vs_grid", pd.Series(dtype=object)) == COMPARED
    none = pd.Series(dtype=float)
    lo = pd.to_numeric(searched.get("vs_grid_trait_delta_lo", none), errors="coerce")
    hi = pd.to_numeric(searched.get("vs_grid_trait_delta_hi", none), errors="coerce")
    return {
        "searches_vs_grid_compared": int(compared.sum()),
        "searches_beating_grid": int((compared & (lo > 0)).sum()),
        "searches_beaten_by_grid": int((compared & (hi < 0)).sum()),
    }


def _ok_read_before(searched: pd.DataFrame) -> int:
    if not len(searched) or "heldout_read_before" not in searched:
        return 0
    earlier = searched["heldout_read_before"].map(read_before_of).astype(bool)
    return int(((searched["status"] == stats.OK) & earlier).sum())


def _best_cell(gap: pd.DataFrame) -> dict:
    """The cell chosen on the selection half alone (`tables.selection_choice`), with its
    held-out verdict, delta, interval and n. It is `best_cell` only when that verdict is OK
    (no effect is never a best); otherwise `best_cell` is None and `selection_choice` names
    the cell that did not hold."""
    best = tables.selection_choice(gap)
    if best is None:
        return {"best_cell": None, "selection_choice": None}
    cell = " ".join(str(best[k]) for k in tables.GROUP)
    return {
        "best_cell": cell if best["status"] == stats.OK else None,
        "selection_choice": cell,
        "best_status": best["status"],
        "best_selection_delta": _num(best["selection_delta"]),
        "best_heldout_delta": _num(best["delta"]),
        "best_heldout_delta_lo": _num(best["delta_lo"]),
        "best_heldout_delta_hi": _num(best["delta_hi"]),
        "best_heldout_n": None if pd.isna(best["n"]) else int(best["n"]),
    }


def best_checks(gap: pd.DataFrame, again: dict, randoms: dict, weighs: dict, asked: int) -> dict:
    """What the selection choice is checked against (None: no such check): how often
    `asked` other splits of its questions chose it again and their choice held out
    (`resplit.resplits`), its paired held-out gain over a random direction at its config
    (`control.controls`), and its near copy compared where the dims weigh (`weighed.weighed`;
    the first cleaned variant compared there)."""
    best = tables.selection_choice(gap)
    pair = (str(best["model"]), str(best["trait"])) if best is not None else None
    r = again.get(pair)
    c = randoms.get(pair)
    compared = [w for (*at, _), w in sorted(weighs.items()) if tuple(at) == pair and w.compared]
    w = compared[0] if compared else None
    return {
        "resplits": asked if r is None else r.splits,
        "resplits_same_config": None if r is None else r.same_config,
        "resplits_ok": None if r is None else r.ok,
        **_interval_fields("gain_over_random", c.gain if c is not None else None),
        "weighed_layer": None if w is None else w.layer,
        **_interval_fields("weighed_gain", w.gain if w is not None else None),
        "weighed_variant": None if w is None else w.variant,
        # the cleaned variant's coefficient there when it matched the push (None: the
        # choice's own, or nothing compared: weighed_layer None)
        "weighed_cleaned_coefficient": None if w is None else w.cleaned_coefficient,
    }


def _interval_fields(name: str, interval: stats.Interval | None) -> dict:
    """`name`, `name_lo`, `name_hi` and `name_n` (its questions) of an interval (each None
    without one)."""
    if interval is None:
        return {name: None, f"{name}_lo": None, f"{name}_hi": None, f"{name}_n": None}
    return {
        name: interval.mean,
        f"{name}_lo": interval.lo,
        f"{name}_hi": interval.hi,
        f"{name}_n": interval.n,
    }


def _num(value) -> float | None:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else float(value)
