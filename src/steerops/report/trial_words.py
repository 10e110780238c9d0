"""What a coefficient search's trials say, in words, per layer: the best coherent delta
and where coherence crosses the bar. The trials are scored on the search half (the grid's
selection half) and never held out: they say where to look, not what holds."""

from __future__ import annotations

import pandas as pd

from steerops import stats
from steerops.report.markdown import cell, numeric_order
from steerops.report.tables import same_value


def trial_lines(trials: pd.DataFrame | None, bar: float, n=None) -> list[str]:
    """One line per layer the search tried (numbered layers first, in order), with how many
    of its trials were the grid's configs the study started from (`source` "known"), or
    none; `n` the search half's questions each trial was scored on (`search_n`)."""
    scored = _scored(trials)
    if scored is None:
        return []
    lines = []
    for layer, rows in sorted(scored.groupby("layer"), key=lambda kv: numeric_order(kv[0])):
        rows = rows.assign(size=rows["coefficient"].abs()).sort_values("size", kind="mergesort")
        # this study's: an earlier study's trials on the same half are in the results log
        count = f"{len(rows)} trial{'s' if len(rows) != 1 else ''} of this study"
        # the grid's configs the study started from are among them, not new evidence
        known = int((rows["source"] == "known").sum()) if "source" in rows else 0
        count += f", {known} of them the grid's" if known else ""
        each = f", n {int(n)} each" if stats.as_number(n) else ""
        lines.append(
            f"search-half trials at layer {cell(layer)} ({count}{each}; not held out): "
            f"{_best(rows, bar)}; {_crossing(rows, bar)}"
        )
    return lines


def narrowed(trials: pd.DataFrame | None, layer, low: float, high: float) -> bool:
    """Whether the search scored a trial at `layer` with a coefficient strictly between
    `low` and `high` in size (the grid's last coherent step and the next): only then do its
    trials say more about where coherence is lost."""
    scored = _scored(trials)
    if scored is None:
        return False
    at = scored[scored["layer"].map(lambda x: same_value(x, layer))]
    values = at["coefficient"].map(lambda c: stats.as_number(c) or 0.0)
    sizes, same_way = values.abs(), values * low > 0  # the other sign is another direction
    return bool(((sizes > abs(low)) & (sizes < abs(high)) & same_way).any())


def _scored(trials: pd.DataFrame | None) -> pd.DataFrame | None:
    """The trials with scores (complete, trait and coherence known); None without any."""
    needed = {"layer", "coefficient", "trait_delta", "coherence_mean", "state"}
    if trials is None or trials.empty or not needed <= set(trials.columns):
        return None  # none, or a file without the scores these lines read
    return trials[
        (trials["state"] == "complete")
        & trials["coherence_mean"].notna()
        & trials["trait_delta"].notna()
    ]


def _best(rows: pd.DataFrame, bar: float) -> str:
    """The coherent trial with the largest delta (ties: the more coherent, then the smaller
    coefficient, as the search chooses), or the most coherent trial when none clears the
    bar. Where the trials carry their search-half interval (`delta_lo`/`delta_hi`), the
    search chose among those whose interval is above zero, and so do these words: a
    coherent delta whose interval reaches zero is said to be no effect detected."""
    # coefficient 0 steers nothing: the unsteered model is no best config
    steered = rows[rows["coefficient"].map(lambda c: (stats.as_number(c) or 0.0) != 0.0)]
    coherent = steered[steered["coherence_mean"].map(lambda c: stats.coherent(c, bar))]
    if steered.empty:
        return "no steered trial"
    if coherent.empty:
        top = steered.sort_values("coherence_mean", ascending=False, kind="mergesort").iloc[0]
        return (
            f"none coherent (the most coherent, {cell(top['coefficient'])}: coherence "
            f"{stats.coherence_text(top['coherence_mean'], 2)})"
        )
    if "delta_lo" in coherent and coherent["delta_lo"].notna().any():
        # the search's own test of an effect on its half (`stats.no_effect_on_selection`)
        found = [
            not stats.no_effect_on_selection(_as_row(t)) for t in coherent.itertuples(index=False)
        ]
        effective = coherent[found]
        if effective.empty:
            (_, top), *_ = _ranked(coherent)
            return (
                f"no coherent trial's interval is above zero: no effect detected here (the "
                f"largest coherent delta, {_delta(top)} at {cell(top.coefficient)}, coherence "
                f"{stats.coherence_text(top.coherence_mean, 2)})"
            )
        coherent = effective
    (best, top), *rest = _ranked(coherent)
    said = (
        f"best coherent delta {_delta(top)} at "
        f"{cell(top.coefficient)} (coherence {stats.coherence_text(top.coherence_mean, 2)})"
    )
    # the others on that delta: what chose between them, as the grid says it
    tied = [(rank, t) for rank, t in rest if rank[0] == best[0]]
    if not tied:
        return said
    others = ", ".join(
        f"{cell(t.coefficient)} (coherence {stats.coherence_text(t.coherence_mean, 2)})"
        for _, t in tied
    )
    level = [rank for rank, _ in tied if rank[1] == best[1]]  # tied on coherence too
    # a tie on size too is a coefficient and its negative twin: the positive one was chosen
    last = (
        "the positive coefficient"
        if all(rank[2] == best[2] for rank in level)
        else "the smaller coefficient"
    )
    how = last if len(level) == len(tied) else f"coherence, then {last}" if level else "coherence"
    return f"{said}, tied on that delta with {others}: chosen on {how}"


def _delta(trial) -> str:
    """ "+55.0 [+30.0, +80.0]", or the delta alone where the trial has no interval."""
    lo, hi = getattr(trial, "delta_lo", None), getattr(trial, "delta_hi", None)
    if stats.as_number(lo) is None or stats.as_number(hi) is None:
        return stats.delta_text(trial.trait_delta)
    return stats.interval_text(trial.trait_delta, lo, hi)


def _as_row(trial) -> dict:
    """A trial as the search's choice reads a config row (its search half is the selection
    half)."""
    return {
        "coefficient": trial.coefficient,
        "layer": trial.layer,
        "selection_trait_delta": trial.trait_delta,
        "selection_coherence_mean": trial.coherence_mean,
        "selection_delta_lo": getattr(trial, "delta_lo", None),
    }


def _ranked(coherent: pd.DataFrame) -> list:
    """(the search's rank key, trial) of each coherent trial, best first."""
    # ranked by the search's own key (`stats.choice_rank`), whose parts word the ties
    return sorted(
        ((stats.choice_rank(_as_row(t)), t) for t in coherent.itertuples(index=False)),
        key=lambda ranked_trial: ranked_trial[0],
        reverse=True,
    )


def _crossing(rows: pd.DataFrame, bar: float) -> str:
    """Between which two coefficients (by size) coherence first falls under the bar, and
    the first larger one where it is over it again (a dip, or noise on the search half's
    questions: then the first fall is not where coherence is lost)."""
    last = None
    trials = list(rows.itertuples(index=False))
    for i, row in enumerate(trials):
        if stats.coherent(row.coherence_mean, bar):
            last = row
        elif last is not None:
            said = f"coherence falls under {bar:g} between {_trial(last)} and {_trial(row)}"
            again = next(
                (t for t in trials[i + 1 :] if stats.coherent(t.coherence_mean, bar)), None
            )
            if again is not None:
                said += f", and is over it again at {_trial(again)}: not one edge"
            return said
    if last is None:
        return f"every trial under {bar:g}"
    return f"coherent up to the largest tried, {_trial(last)}"


def _trial(row) -> str:
    """ "0.2345 (coherence 68.42, delta +70.0)"."""
    return (
        f"{cell(row.coefficient)} (coherence {stats.coherence_text(row.coherence_mean, 2)}, "
        f"delta {stats.delta_text(row.trait_delta)})"
    )
