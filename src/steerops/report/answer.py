"""The results page's answer first: per model and trait, the config to steer with, what the
coefficient search adds to it, and whether removing massive dims changed its effect.

The config is the one `tables.selection_choice` picks on the selection half (as
`best_cell` in metrics.json), reported with its held-out verdict: a choice that fails held
out is said to, and nothing is recommended in its place (picking another cell because it
held out would choose on the held-out half). The sections below the answer hold every cell.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from steerops import stats
from steerops.report import tables
from steerops.report.calibrated import removed_dims, window_words
from steerops.report.control import CONTROL, Control, control_words
from steerops.report.grid_words import CELL, earlier_words, grid_words
from steerops.report.load import SEARCH_KEY
from steerops.report.markdown import cell, coherence_words, interval, where
from steerops.report.resplit import Resplit, resplit_words
from steerops.report.trial_words import trial_lines
from steerops.report.versus_grid import versus_words
from steerops.report.weighed import Weighed, push_note, weighed_words
from steerops.search.store import READ_BEFORE, read_before_of


def answer_lines(
    gap: pd.DataFrame,
    searched: pd.DataFrame,
    curve: pd.DataFrame,
    threshold: float,
    grids: dict[tuple, dict[str, Any]] | None = None,
    trials: dict[tuple, pd.DataFrame] | None = None,
    resplits: dict[tuple, Resplit | None] | None = None,
    controls: dict[tuple, Control] | None = None,
    weighs: dict[tuple, Weighed] | None = None,
) -> list[str]:
    """Markdown bullets: one per (model, trait), each with its steering, search and
    cleaning answers nested under it; `grids` (`grid_words.grids`) says what each cell's
    grid steered, `trials` (`load.load_search_trials`) what each search tried, `resplits`
    (`resplit.resplits`) what the selection half chose on other splits, `controls`
    (`control.controls`) a random direction at the choice's config, `weighs`
    (`weighed.weighed`) a near copy compared where its dims weigh."""
    trials = trials or {}
    pairs = {(str(m), str(t)) for m, t in zip(gap["model"], gap["trait"], strict=True)}
    pairs |= {(str(m), str(t)) for m, t in zip(searched["model"], searched["trait"], strict=True)}
    lines = []
    tested = family(gap)
    for model, trait in sorted(pairs):
        mine = gap[(gap["model"].astype(str) == model) & (gap["trait"].astype(str) == trait)]
        choice = tables.selection_choice(mine) if len(mine) else None
        lines.append(f"- **{trait}** on `{model}`:")
        searches = searched[
            (searched["model"].astype(str) == model) & (searched["trait"].astype(str) == trait)
        ]
        said = _steer_with(mine, choice, threshold, grids or {}, tested, trials, searches)
        if choice is not None:  # what else the choice is checked against
            control = control_words((controls or {}).get((model, trait)), threshold)
            again = resplit_words((resplits or {}).get((model, trait)))
            said += [line for line in (control, again) if line]
        lines += _nested(said)
        for _, search in searches.iterrows():
            # its answers are read at the search's own bar, as best.json has them, and its
            # trials at the bar they were chosen at (the search half's: a margin over it)
            bar = stats.as_number(search.get("min_coherence"))
            bar = threshold if bar is None else bar
            margin = stats.as_number(search.get("coherence_margin")) or 0.0
            said = _search_says(search, bar, threshold)
            if versus := versus_words(search, bar):
                said.append(versus)
            said += trial_lines(trials_of(trials, search), bar + margin, search.get("search_n"))
            lines += _nested(said)
        ours = {v: w for (m, t, v), w in (weighs or {}).items() if (m, t) == (model, trait)}
        if choice is not None:
            for said in _cleaning_says(curve, choice, ours, threshold):
                lines += _nested(said)
    return lines or ["_no grid or search results_"]


def trials_of(trials: dict[tuple, pd.DataFrame] | None, row: Any) -> pd.DataFrame | None:
    """The search trials (`load.load_search_trials`) of a gap or search row's cell."""
    get = row.get if hasattr(row, "get") else lambda k: getattr(row, k, None)
    return (trials or {}).get(tuple(str(get(k)) for k in SEARCH_KEY))


def search_of(searched: pd.DataFrame | None, row: Any) -> pd.Series | None:
    """The search (a `load.load_searches` row) of a gap row's cell, or None."""
    if searched is None or searched.empty:
        return None
    get = row.get if hasattr(row, "get") else lambda k: getattr(row, k, None)
    ours = searched[tables.same_cell(searched, {k: get(k) for k in SEARCH_KEY}, SEARCH_KEY)]
    return None if ours.empty else ours.iloc[0]


def _nested(said: list[str]) -> list[str]:
    """An answer's headline as a bullet under its trait, its details as bullets under it."""
    return [f"  - {said[0]}", *(f"    - {line}" for line in said[1:])]


# a gap row's held-out columns, and a search row's (`load.SEARCH_COLUMNS`)
GRID_HELD = "delta delta_lo delta_hi coherence coherence_scored under_bar n".split()
GRID_HELD += ["baseline_trait", "baseline_coherence", "under_bar_moved"]
GRID_HELD += ["credited_delta", "credited_lo", "credited_hi", "coherence_unscored"]
SEARCH_HELD = [f"heldout_{k}" for k in ("trait_delta", "delta_lo", "delta_hi", "coherence")]
SEARCH_HELD += [f"heldout_{k}" for k in ("coherence_scored", "under_bar", "n")]
SEARCH_HELD += ["heldout_baseline_trait", "heldout_baseline_coherence"]
SEARCH_HELD += ["heldout_under_bar_moved"]
SEARCH_HELD += [f"heldout_credited_{k}" for k in ("delta", "lo", "hi")]
SEARCH_HELD += ["heldout_coherence_unscored"]


def _held(
    row: Any,
    threshold: float,
    names: list[str] = GRID_HELD,
    test: str = "",
    spread: tuple[str, str] = ("coherence_lo", "coherence_hi"),
) -> list[str]:
    """["held-out delta +50.0 [+20.0, +75.0], n 20 (11 answers moved along the steering,
    ...){test}; unsteered on the same questions: ...", "held-out coherence 83.22 [71.80,
    92.93] (5 of 20 answers under 68); with the 5 answers under 68 counted as unmoved
    (...), delta ..."] of a row read by `names` (a gap row's answer counts and coherence
    interval where it has them)."""
    mid, lo, hi, coherence, scored, under, n, trait0, coherence0, moved, *credited, unscored = (
        row.get(k) for k in names
    )
    unmoved = stats.unmoved_phrase(under, threshold, moved, credited, unscored)
    unsteered = (
        f"; unsteered on the same questions: trait {cell(trait0)}, coherence "
        f"{stats.coherence_text(coherence0, 2)}"
        if stats.as_number(trait0) is not None
        else ""
    )
    said = {"coherence": coherence, "coherence_scored": scored, "under_bar": under}
    said["coherence_unscored"] = unscored
    said |= dict(zip(("coherence_lo", "coherence_hi"), (row.get(k) for k in spread), strict=True))
    return [
        f"held-out delta {interval(mid, lo, hi)}, n {cell(n)}{_moves(row)}{test}{unsteered}",
        f"held-out coherence {coherence_words(said, threshold)}"
        + (f"; {unmoved}" if unmoved else ""),
    ]


def _moves(row: Any) -> str:
    """ " (11 answers moved along the steering, 1 against, 8 not at all)" of a gap row."""
    counts = [stats.as_number(row.get(k)) for k in ("moved_along", "moved_against", "unmoved")]
    if any(c is None for c in counts):
        return ""
    along, against, still = (int(c or 0) for c in counts)
    answers = "answer" if along == 1 else "answers"
    little = int(stats.as_number(row.get("moved_little")) or 0)
    small = (
        f"; {little} of these moves by less than {stats.MOVED_LITTLE:g} points" if little else ""
    )
    return (
        f" ({along} {answers} moved along the steering, {against} against, {still} not at "
        f"all{small})"
    )


# more cells than this are counted, not named: the gap analysis lists them
NAMED_CELLS = 4


def family(gap: pd.DataFrame) -> list[str]:
    """The cells the q-values are over (`tables.gap_analysis`'s family: those with a q, a
    near copy's standing in for its twin's), named by method when they share a model, trait,
    position and component, else where they are."""
    if "heldout_q" not in gap:
        return []
    copies = gap["near_copy_of"].fillna("") != "" if "near_copy_of" in gap else False
    rows = gap[gap["heldout_q"].notna() & ~copies]

    def one(keys: list[str]) -> bool:  # a key the table lacks is one value
        present = [k for k in keys if k in rows]
        return not present or len(rows[present].astype(str).drop_duplicates()) <= 1

    if one(tables.KEY):
        return [f"`{r['method']}`" for _, r in rows.iterrows()]
    # the trait and model where they differ between the cells, so no two names repeat
    apart = [k for k in ("trait", "model") if not one([k])]
    return [
        where(r) + (f" ({', '.join(str(r[k]) for k in apart)})" if apart else "")
        for _, r in rows.iterrows()
    ]


def test_words(row, tested: list[str]) -> str:
    """An ok cell's held-out sign-flip test, with its q over the report's `tested` cells
    (`family`). An ok whose test does not confirm its interval (a few questions that moved
    far), or that does not hold once the cells are counted together, says so."""
    p = stats.as_number(getattr(row, "heldout_p", None))
    if p is None:
        return ""
    q = stats.as_number(getattr(row, "heldout_q", None))
    count = len(tested)
    cells = f"the report's {count} cells" if count != 1 else "the report's one cell"
    named = (
        f" ({', '.join(tested)})"
        if 1 < count <= NAMED_CELLS
        else " (the gap analysis lists them)"
        if count > NAMED_CELLS
        else ""
    )
    words = f"sign-flip p {stats.p_text(p)} one-sided"
    if q is not None:  # an alias has none: its twin's test is the one counted
        words += f", q {stats.p_text(q)} over {cells}{named}"
        if twin := getattr(row, "near_copy_of", ""):  # one test: it stands in for its twin
            words += f", in `{twin}`'s place (a near copy of it at the same config)"
    if stats.unconfirmed(p, getattr(row, "delta_lo", None)):
        return (
            f"; **its sign-flip test does not confirm it** ({words}; p is not under "
            f"{stats.TEST_LEVEL:g}: the interval clears zero on a few questions that moved far; "
            "steer more questions)"
        )
    if q is not None and q >= stats.FDR:
        return f"; **not significant once {cells} are counted together** ({words})"
    return f"; {words}"


def _steer_with(
    mine: pd.DataFrame,
    choice: pd.Series | None,
    threshold: float,
    grids: dict[tuple, Any],
    tested: list[str] | None = None,
    trials: dict[tuple, pd.DataFrame] | None = None,
    searched: pd.DataFrame | None = None,
) -> list[str]:
    """The answer's headline (the config, or why none), then its details."""
    if mine.empty:
        return ["no grid results"]
    if choice is None:
        verdicts = mine[mine["alias_of"] == ""]["status"].value_counts()
        said = ", ".join(f"{status} {n}" for status, n in verdicts.items())
        return [
            "**no config to recommend**: no cell's choice has an effect on the selection "
            f"half (verdicts: {said})"
        ]
    config = (
        f"{where(choice)}, layer {cell(choice['layer'])}, coefficient {cell(choice['coefficient'])}"
    )
    weight = _weight_words(choice)
    names = [str(m) for m, alias in zip(mine["method"], mine["alias_of"], strict=True) if not alias]
    methods = len(names)
    # what each is to the choice: a near copy of it, or the random-direction control
    near = tables.near_copies_of(mine, choice["method"])
    roles = {
        n: " (a near copy of it)" if n in near else " (the control)" if n == CONTROL else ""
        for n in names
    }
    coherence = stats.as_number(choice.get("selection_coherence"))
    then = f", coherence {stats.coherence_text(coherence, 2)}" if coherence is not None else ""
    picked = (
        "chosen on the selection half (selection delta "
        f"{stats.delta_text(choice['selection_delta'])}{then}) among {methods} "
        f"method{'s' if methods != 1 else ''}"
        + (f" ({', '.join(f'`{n}`{roles[n]}' for n in names)})" if methods > 1 else "")
    )
    picked += _tie_words(mine, choice)
    grid = grids.get(tuple(choice.get(k) for k in CELL))
    cliff = ""
    if grid:
        best, cliff = grid_words(
            choice, grid, trials_of(trials, choice), search_of(searched, choice)
        )
        picked += f"; {best}"
    edge = [cliff.removeprefix("; ")] if cliff else []
    if earlier := earlier_words(grid):
        edge.append(earlier)
    if choice["status"] == stats.OK:
        held = _held(choice, threshold, test=test_words(choice, tested or []))
        return [f"**steer with {config}**{weight}", *held, picked, *edge]
    details = [*_held(choice, threshold), picked, *edge]
    return [
        f"**no config to recommend**: the selection half's choice, {config}, is "
        f"**{choice['status']}**",
        *details,
    ]


def _tie_words(mine: pd.DataFrame, choice: pd.Series) -> str:
    """The other candidates (`tables.selection_candidates`) whose selection-half delta
    equals the choice's: the choice among them fell to coherence, or past it to the
    table's order, which the reader should know before preferring one method to another."""
    candidates = tables.selection_candidates(mine)
    # the choice's own ranking keys (`choice` is `tables.selection_choice(mine)`)
    keys = tables.selection_keys(candidates)
    mine_keys = keys.loc[choice.name]
    tied = candidates[(candidates.index != choice.name) & (keys["delta"] == mine_keys["delta"])]
    if tied.empty:
        return ""
    named = []
    for row in tied.itertuples(index=False):
        at = "" if row.position == choice["position"] else f" at {row.position}"
        coherence = stats.as_number(getattr(row, "selection_coherence", None))
        said = "" if coherence is None else f", coherence {stats.coherence_text(coherence, 2)}"
        named.append(f"`{row.method}`{at} (layer {cell(row.layer)}{said})")
    # coherence level too (missing on both alike): the table's order chose
    level = (keys.loc[tied.index, "coherence"] == mine_keys["coherence"]).any()
    how = "coherence, then the table's order" if level else "coherence"
    return f", tied on that delta with {', '.join(named)}: chosen on {how}"


def _weight_words(choice: Any) -> str:
    """The weight on the unit vector a `norm` coefficient stands for (the coefficient times
    the layer's mean residual norm), to steer with it elsewhere; nothing for `absolute`
    coefficients, which are their weight."""
    weight = choice.get("weight")
    if str(choice.get("unit")) != "norm" or weight is None or pd.isna(weight):
        return ""
    parts = [stats.as_number(w) for w in str(weight).split("+")]  # "4+8" configs: each
    if any(p is None for p in parts):
        return ""
    said = "+".join(f"{p:.4g}" for p in parts)
    each = "each unit vector" if len(parts) > 1 else "the unit vector"
    return f" (`norm` units: a weight of {said} on {each})"


def _search_says(row: pd.Series, bar: float, report_bar: float | None = None) -> list[str]:
    """The search's headline (its choice and verdict), then its held-out numbers, its
    answers under the bar counted at the search's own `bar`; where the report judges the
    grid at another (`report_bar`), the headline names the search's."""
    search = f"the search of {where(row)}"
    if report_bar is not None and report_bar != bar:  # a verdict the grid's may contradict
        search += (
            f" (judged at its own bar, coherence >= {bar:g}; this report judges the grid "
            f"at {report_bar:g})"
        )
    if pd.isna(row.get("layer")):
        return [f"{search}: **{row['status']}**, nothing chosen"]
    config = f"layer {cell(row['layer'])}, coefficient {cell(row['coefficient'])}"
    spread = ("heldout_coherence_lo", "heldout_coherence_hi")
    held = _held(row, bar, SEARCH_HELD, spread=spread)
    margin = stats.as_number(row.get("coherence_margin")) or 0.0
    if margin:  # chosen at a higher bar than its verdict's
        held[0] = (
            f"chosen at coherence >= {bar + margin:g} on the search half "
            f"(`search.coherence_margin` {margin:g} over the bar {bar:g}, which judges it held "
            f"out); {held[0]}"
        )
        under = stats.as_number(row.get("heldout_under_margin"))
        scored = stats.as_number(row.get("heldout_coherence_scored"))
        if under is not None and scored:
            held[1] += (
                f"; {int(under)} of {int(scored)} answers under {bar + margin:g}, the bar its "
                "search-half mean was chosen at"
            )
    if row.get("range_exhausted") is True:  # (NaN in a frame read back without the column)
        trials = stats.as_number(row.get("n_trials"))
        after = f" after {int(trials)} new trials" if trials is not None else ""
        held.append(
            f"the study stopped{after}, short of `search.trials`: its sampler kept proposing "
            "configs already tried, so the range holds nothing new for it (a wider range or "
            "more layers is a new study)"
        )
    if earlier := read_before_of(row.get("heldout_read_before")):
        held.append(
            f"{READ_BEFORE}: {earlier}; a search setting changed since (a margin, a range) "
            "may have been chosen knowing how they did, so this held-out figure is not a "
            "first look"
        )
    if row["status"] == stats.OK:
        if earlier:  # the headline says it, not only a sub-line
            return [f"{search}: **{config}**, ok held out, but not a first look (below)", *held]
        return [f"{search}: **{config}**, ok held out", *held]
    return [f"{search} chose {config}: **{row['status']}**, not a recommended coefficient", *held]


def _cleaning_says(
    curve: pd.DataFrame,
    choice: pd.Series,
    weighs: dict[str, Weighed] | None = None,
    threshold: float = 0.0,
) -> list[list[str]]:
    """Each cleaned variant of the chosen cell's method, against it: a headline, then what
    was cleaned and why the verdict reads as it does, and (`weighs`, by variant) its
    comparison where the dims weigh (`weighed`)."""
    weighs = weighs or {}
    if curve.empty:
        return []
    rows = tables.curve_rows_of(curve, choice)
    base = next(
        (r for r in rows.itertuples(index=False) if str(r.dims_cleaned) == "0"),
        None,
    )
    out = []
    for row in rows.itertuples(index=False):
        if str(row.dims_cleaned) == "0":
            continue
        details = [_cleaned(row)]
        there = weighs.get(str(row.variant))  # the comparison where its dims weigh
        if row.gain_note == tables.SETTINGS_DIFFER:
            verdict = "not compared (their cells ran under different steering settings)"
        elif pd.isna(row.gain):
            continue
        else:
            compared = there is not None and there.compared
            verdict, *why = (part for part in cleaning_parts(row, base, compared) if part)
            details += why
        there_words = weighed_words(there, threshold)
        out.append(
            [
                f"removing {removed_dims([getattr(row, 'dim_set', '')])} "
                f"(`{row.variant}` against `{row.method}`): **{verdict}**"
            ]
            + details
            + ([there_words] if there_words else [])
            + ([massive_there] if (massive_there := window_words(row)) else [])
        )
    return out


def _cleaned(row: Any) -> str:
    """ "cleaned: all dims of the `massive` set, 1 removed from the vector at layer 12" of a
    curve row."""
    dim_set = getattr(row, "dim_set", None)
    of = f" of the `{dim_set}` set" if isinstance(dim_set, str) and dim_set else ""
    removed = getattr(row, "dims_removed", np.nan)
    ids = getattr(row, "removed_ids", "")
    at = (
        ""
        if pd.isna(removed)
        else f", {int(removed)} removed from the vector at layer {cell(row.layer)}"
        + (f" ({ids})" if isinstance(ids, str) and ids else "")
    )
    return f"cleaned: {row.dims_cleaned} dims{of}{at}"


def cleaning_verdict(row: Any, base: Any, compared: bool = False) -> str:
    """What a cleaned variant's paired held-out gain over its uncleaned method (a
    `cleaning_curve` row, and the uncleaned method's row or None) says about the dims;
    `compared`: a near copy compared again where its dims weigh (`weighed`)."""
    verdict, why, configs = cleaning_parts(row, base, compared)
    return verdict + (f": {why}" if why else "") + (f"; {configs}" if configs else "")


def _where_they_weigh(row: Any, compared: bool = False) -> str:
    """For a near copy: the layer where the same dims hold the most of the uncleaned
    vector, when they hold a share there that a comparison could test (`compared`: one
    did, said next)."""
    layer = stats.as_number(getattr(row, "peak_share_layer", None))
    share = stats.as_number(getattr(row, "peak_share", None))
    if layer is None or share is None or share < tables.BARELY:
        return ""
    return (
        f"; they hold the most of it at layer {int(layer)} ({share:.1%} of its squared norm), "
        + ("compared there next" if compared else "where a comparison would test them")
    )


def cleaning_parts(row: Any, base: Any, compared: bool = False) -> tuple[str, str, str]:
    """`cleaning_verdict` in its parts: the verdict, why it reads so ("" unless the cleaned
    vector is a near copy), and a note when the two sides chose different configs ("")."""
    base_status = base.status if base is not None else "?"
    k = 0 if pd.isna(row.gain_k) else int(row.gain_k)
    needed = stats.min_questions(k)
    # a trait gain bought by a pick that loses coherence held out is no gain of the dims
    incoherent = None
    if row.gain_lo > 0 and row.status == stats.INCOHERENT:
        incoherent = ("gain", row.variant)
    elif row.gain_hi < 0 and base_status == stats.INCOHERENT:
        incoherent = ("loss", row.method)
    if (row.gain_lo > 0 or row.gain_hi < 0) and row.gain_n < needed:
        claims = "one claim needs" if k <= 1 else f"{k} claims together need"
        says = f"too few held-out questions to tell ({int(row.gain_n)}; {claims} {needed})"
    elif incoherent is not None:
        what, bought = incoherent
        says = (
            f"not a {what} from the dims: `{bought}`'s chosen config is incoherent held "
            "out, so its higher trait is bought with coherence"
        )
    elif row.gain_lo > 0:
        says = "cleaning helps"
    elif row.gain_hi < 0:
        says = "cleaning hurts"
    elif row.gain_lo == row.gain_hi:
        says = (
            "no trait difference: each held-out question's trait score was the same in both "
            "(a gain interval of no width, not precision; their coherences may differ)"
        )
    else:
        says = "no detectable difference"
    why = configs = ""
    share = getattr(row, "removed_share", np.nan)
    if not pd.isna(share) and share < tables.BARELY:
        # a near-copy of the uncleaned vector: no difference is what any dims would give,
        # and a difference is the decoding's sensitivity to a tiny turn of the vector; said
        # first, so the comparison's own words are not read as the answer
        says, why = (
            "cannot tell whether the dims matter",
            f"the cleaned vector is nearly the uncleaned one (cosine "
            f"{tables.cosine_left(share):.3f}), so its comparison ({says}) says nothing of them"
            + _where_they_weigh(row, compared),
        )
    if base is not None and not (
        tables.same_value(row.layer, base.layer)
        and tables.same_value(row.coefficient, base.coefficient)
    ):
        moved = [
            name
            for name, differ in (
                ("layer", not tables.same_value(row.layer, base.layer)),
                ("coefficient", not tables.same_value(row.coefficient, base.coefficient)),
            )
            if differ
        ]
        changes = "'s and the ".join(moved)
        configs = (
            f"each at its own chosen config (layer {cell(row.layer)}, coefficient "
            f"{cell(row.coefficient)} against layer {cell(base.layer)}, coefficient "
            f"{cell(base.coefficient)}): the gain holds the {changes}'s change too"
        )
    if not pd.isna(share) and share >= tables.BARELY:
        configs = "; ".join(x for x in (configs, push_note(share)) if x)
    return says, why, configs
