"""The report's tables as pure functions of the tidy grid frame (`report.load`).

One row per evaluated config: model, trait, position, component, method, layer, coefficient,
weight, its numbers on the selection half (`selection_*`) and on the held-out half
(`heldout_*`: n, trait delta in the steering direction with its 95% interval, coherence),
and `alias_of`. Every "best" is `stats.choose`'s: chosen on the selection half, reported on
the held-out half, with the verdict "ok", "no effect", "incoherent held out", "too few held
out", "trait unscored", "baseline incoherent" or "needs finer coefficients". Only "ok" rows
give optimal coefficients. Every function is deterministic (sorted keys, stable
tie-breaks), so the same inputs give byte-identical reports.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from steerops import stats

# a cell: its model, trait, vector position and the component its vectors steer
KEY = ["model", "trait", "position", "component"]
GROUP = KEY + ["method"]
CURVE_STEPS: list[tuple[str, str]] = [
    ("0", ""),
    ("1", "_top1"),
    ("2", "_top2"),
    ("3", "_top3"),
    ("5", "_top5"),
    ("all", "_cleaned"),
]
BASES = ("mean_diff", "probe")
# the status of a preclean or clean-after variant the steering grid did not include
NOT_STEERED = "not steered"
# a chosen config's held-out numbers, as every table prints them
HELD = {
    "heldout_n": "n",
    "heldout_trait_delta": "delta",
    "heldout_delta_lo": "delta_lo",
    "heldout_delta_hi": "delta_hi",
    "heldout_coherence_mean": "coherence",
}


def pick(rows: pd.DataFrame, min_coherence: float) -> tuple[dict[str, Any] | None, str]:
    """The group's chosen config (a record) and verdict."""
    chosen, status = stats.choose(rows.to_dict("records"), min_coherence)
    return (None if chosen is None else dict(chosen)), status


def picks(frame: pd.DataFrame, min_coherence: float) -> dict[tuple, tuple[dict | None, str]]:
    return {key: pick(rows, min_coherence) for key, rows in frame.groupby(GROUP, sort=True)}


def _held(chosen: dict | None, prefix: str = "") -> dict[str, Any]:
    return {prefix + short: _get(chosen, full) for full, short in HELD.items()}


def _under_bar(chosen: dict | None, min_coherence: float) -> dict[str, Any]:
    coherences = (chosen or {}).get("heldout_coherences")
    values = list(coherences.values()) if isinstance(coherences, dict) else []
    scored, under = stats.under_bar(values, min_coherence)
    unscored = stats.unscored_heldout(chosen or {})  # None without a choice
    return {"coherence_scored": scored, "under_bar": under, "coherence_unscored": unscored}


def held_coherence(record: dict | None, min_coherence: float, seed: int) -> dict[str, Any]:
    """A config record's held-out coherence as the gap analysis has it: the mean, its
    interval (the mean's bootstrap over the answers scored, drawn with the split's seed: the
    bar decides a verdict, so its margin needs one) and the answers under the bar
    (`markdown.coherence_words` says them)."""
    spread = stats.coherence_interval(_values(record, "heldout_coherences"), seed)
    return {
        "coherence": _get(record, "heldout_coherence_mean"),
        "coherence_lo": _nan(spread.lo),
        "coherence_hi": _nan(spread.hi),
        **_under_bar(record, min_coherence),
    }


def _answers(chosen: dict | None, seed: int) -> dict[str, Any]:
    """How the chosen config's held-out answers moved (by the sign of each answer's trait
    delta: along the steering, against it, not at all), and how many of those moves are
    smaller than `stats.MOVED_LITTLE` points (a graded judge's wobble)."""
    values = (stats.as_number(x) for x in _values(chosen, "heldout_deltas"))
    deltas = [d for d in values if d is not None]
    return {
        "moved_along": sum(d > 0 for d in deltas) if deltas else np.nan,
        "moved_against": sum(d < 0 for d in deltas) if deltas else np.nan,
        "unmoved": sum(d == 0 for d in deltas) if deltas else np.nan,
        "moved_little": sum(0 < abs(d) < stats.MOVED_LITTLE for d in deltas) if deltas else np.nan,
    }


def _values(chosen: dict | None, key: str) -> list[Any]:
    """The per-question values of a config row's `key` ({question: value}), or none."""
    found = (chosen or {}).get(key)
    return list(found.values()) if isinstance(found, dict) else []


def _credited(chosen: dict | None, min_coherence: float, seed: int) -> dict[str, Any]:
    """The chosen config's held-out delta with the answers under the bar counted as unmoved,
    and how many of those had moved along the steering."""
    credited = stats.credited_heldout(chosen or {}, min_coherence, seed)
    return {
        "under_bar_moved": stats.moved_under_heldout(chosen or {}, min_coherence),
        "credited_delta": credited.mean,
        "credited_lo": credited.lo,
        "credited_hi": credited.hi,
    }


def _is_alias(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def gap_analysis(
    frame: pd.DataFrame,
    min_coherence: float,
    seed: int = 0,
    near_copies: Mapping[tuple, str] | None = None,
) -> pd.DataFrame:
    """Per (model, trait, position, component, method): the verdict, the chosen config, its
    selection-half delta and its held-out numbers (with how many held-out answers score
    under the coherence bar, the delta with those counted as unmoved, and the
    one-sided sign-flip p of its held-out deltas with its Benjamini-Hochberg q over every
    cell's p but an alias's or a near copy's); with no coherent steered config, the best
    coherence a steered config reached. `seed` is the split's, which the held-out intervals
    are drawn with. `near_copies` (`calibrated.near_copies`) names the cleaned variants
    whose test repeats their uncleaned method's (`near_copy_of`)."""
    near_copies = near_copies or {}
    out = []
    for key, rows in frame.groupby(GROUP, sort=True):
        chosen, status = pick(rows, min_coherence)
        out.append(
            {
                **dict(zip(GROUP, key, strict=True)),
                "status": status,
                "alias_of": rows["alias_of"].iloc[0],
                # an alias is one test already, whatever its share
                "near_copy_of": ""
                if _is_alias(rows["alias_of"].iloc[0])
                else near_copies.get(key, ""),
                "layer": _get(chosen, "layer"),
                "coefficient": _get(chosen, "coefficient"),
                # what the coefficient multiplies: to steer with the choice elsewhere
                "unit": rows["unit"].iloc[0] if "unit" in rows else "",
                "weight": _get(chosen, "weight"),
                "selection_n": _get(chosen, "selection_n"),
                "selection_delta": _get(chosen, "selection_trait_delta"),
                "selection_delta_lo": _get(chosen, "selection_delta_lo"),
                "selection_delta_hi": _get(chosen, "selection_delta_hi"),
                # what broke a tie on the selection delta (`stats.choose`'s next key)
                "selection_coherence": _get(chosen, "selection_coherence_mean"),
                **_held(chosen),
                **held_coherence(chosen, min_coherence, seed),
                **_credited(chosen, min_coherence, seed),
                **_answers(chosen, seed),
                "heldout_p": _get(chosen, "heldout_p"),
                # the unsteered model on the same held-out questions
                "baseline_trait": _get(chosen, "heldout_baseline_trait"),
                "baseline_coherence": _get(chosen, "heldout_baseline_coherence"),
                "best_coherence_reached": (
                    stats.best_steered_coherence(rows.to_dict("records"))
                    if chosen is None
                    else np.nan
                ),
                "n_configs": int(len(rows)),
                "at_largest_coefficient": status == stats.OK
                and stats.at_largest_coefficient(rows.to_dict("records"), chosen),
            }
        )
    columns = GROUP + ["status", "alias_of", "near_copy_of", "layer", "coefficient", "unit"]
    columns += [
        "weight",
        "selection_n",
        "selection_delta",
        "selection_delta_lo",
        "selection_delta_hi",
        "selection_coherence",
        *HELD.values(),
        "coherence_scored",
        "under_bar",
        "coherence_unscored",
        "under_bar_moved",
        "credited_delta",
        "credited_lo",
        "credited_hi",
        "coherence_lo",
        "coherence_hi",
        "moved_along",
        "moved_against",
        "unmoved",
        "moved_little",
        "heldout_p",
        "heldout_q",
        "baseline_trait",
        "baseline_coherence",
        "best_coherence_reached",
        "n_configs",
    ]
    columns += ["at_largest_coefficient"]
    # an alias or a near copy repeats its twin's test: one test, counted once
    family = [
        None if _is_alias(r["alias_of"]) or r["near_copy_of"] else stats.as_number(r["heldout_p"])
        for r in out
    ]
    for row, q in zip(out, stats.false_discovery_q(family), strict=True):
        row["heldout_q"] = q
    _stand_in_q(out, family)
    return pd.DataFrame(out, columns=columns)


def _stand_in_q(rows: list[dict[str, Any]], family: list[float | None]) -> None:
    """A near copy's q (in place): its p standing in for its uncleaned method's in the
    family, since the two are one test. The family keeps its size, so the copy adds no
    discovery of its own; a copy whose method is not in the family keeps no q."""
    where = {tuple(r[k] for k in GROUP): i for i, r in enumerate(rows)}
    for row in rows:
        p = stats.as_number(row["heldout_p"])
        if not row["near_copy_of"] or p is None:  # an alias is never a near copy
            continue
        twin = where.get((*(row[k] for k in KEY), row["near_copy_of"]))
        if twin is None or family[twin] is None:
            continue
        swapped = [p if i == twin else x for i, x in enumerate(family)]
        row["heldout_q"] = stats.false_discovery_q(swapped)[twin]


def preclean_vs_clean_after(
    frame: pd.DataFrame,
    min_coherence: float,
    seed: int = 0,
    flag_points: float = 20.0,
) -> pd.DataFrame:
    """Held-out delta of `<m>_preclean` vs `<m>_cleaned` (all global dims removed before vs
    after extraction), each chosen on the selection half, and their gap with a paired
    bootstrap interval over the held-out questions both were scored on. mean_diff is linear
    in the activations, so the two must agree: a gap above `flag_points` whose interval
    excludes zero, on enough questions to tell (`stats.min_questions`), is flagged as a
    likely implementation problem. A side the grid did not
    steer reads `NOT_STEERED`, with no numbers and no gap."""
    chosen = picks(frame, min_coherence)
    out = []
    for key in sorted(_pairs(frame)):
        for base in BASES:
            pre, pre_status = chosen.get((*key, f"{base}_preclean"), (None, ""))
            post, post_status = chosen.get((*key, f"{base}_cleaned"), (None, ""))
            if not pre_status and not post_status:
                continue
            pre_status, post_status = pre_status or NOT_STEERED, post_status or NOT_STEERED
            gap = paired_gap(pre, post, seed)
            flag = (
                base == "mean_diff"
                and gap.mean is not None
                and abs(gap.mean) > flag_points
                and (gap.lo or 0) * (gap.hi or 0) > 0
                and gap.n >= stats.min_questions()  # fewer cannot tell a gap from chance
            )
            out.append(
                {
                    **dict(zip(KEY, key, strict=True)),
                    "method": base,
                    "preclean_status": pre_status,
                    **_side("preclean", pre),
                    "clean_after_status": post_status,
                    **_side("clean_after", post),
                    # one side not steered: nothing was compared, so no n either
                    "n": gap.n if pre is not None and post is not None else np.nan,
                    "gap": _nan(gap.mean),
                    "gap_lo": _nan(gap.lo),
                    "gap_hi": _nan(gap.hi),
                    "flag": (
                        LIKELY_BUG
                        if flag
                        else SETTINGS_DIFFER
                        if settings_differ(pre, post)
                        else ""
                    ),
                }
            )
    columns = KEY + ["method", "preclean_status", *_side("preclean", None)]
    columns += ["clean_after_status", *_side("clean_after", None), "n"]
    return pd.DataFrame(out, columns=columns + ["gap", "gap_lo", "gap_hi", "flag"])


def _side(name: str, hit: dict | None) -> dict[str, Any]:
    """One side's held-out delta with its interval, and its coherence, as `<name>_...`."""
    held = ("trait_delta", "delta_lo", "delta_hi", "coherence_mean")
    said = ("delta", "delta_lo", "delta_hi", "coherence")
    return {f"{name}_{s}": _get(hit, f"heldout_{h}") for h, s in zip(held, said, strict=True)}


SETTINGS_DIFFER = "settings differ"
# below this share of the uncleaned vector's squared norm (cosine above 0.975) a cleaned
# variant is too close to its base for "no difference" to say anything about the dims
BARELY = 0.05
LIKELY_BUG = "likely implementation problem"


def same_cell(frame: pd.DataFrame, row: Any, keys: list[str] = KEY) -> pd.Series:
    """Which of `frame`'s rows have `row`'s `keys` (as text)."""
    same = pd.Series(True, index=frame.index)
    for k in keys:
        same &= frame[k].astype(str) == str(row[k])
    return same


def at_config(frame: pd.DataFrame, layer: Any, coefficient: Any) -> pd.Series:
    """Which of `frame`'s rows are at `layer` and `coefficient` (`same_value`)."""
    return frame["layer"].map(lambda x: same_value(x, layer)) & frame["coefficient"].map(
        lambda x: same_value(x, coefficient)
    )


def first_record(rows: pd.DataFrame) -> dict | None:
    """The first row as a record; None without rows."""
    return rows.iloc[0].to_dict() if len(rows) else None


def near_copies_of(gap: pd.DataFrame, method: Any) -> frozenset[str]:
    """The methods `gap_analysis` names near copies of `method` (`near_copy_of`)."""
    if "near_copy_of" not in gap:
        return frozenset()
    twins = zip(gap["method"].astype(str), gap["near_copy_of"].astype(str), strict=True)
    return frozenset(m for m, twin in twins if twin == str(method))


def curve_rows_of(curve: pd.DataFrame, choice: Any) -> pd.DataFrame:
    """The `cleaning_curve` rows of a choice's method: keyed by the uncleaned method, so a
    cleaned variant chosen itself finds its own comparison there too."""
    if curve.empty:
        return curve
    return curve[
        same_cell(curve, choice) & (curve["method"].astype(str) == _base(choice["method"]))
    ]


def choices(gap: pd.DataFrame):
    """((model, trait) as text, its `gap_analysis` rows, its `selection_choice`) of each
    (model, trait) with a choice."""
    for (model, trait), mine in gap.groupby(["model", "trait"], sort=True):
        choice = selection_choice(mine)
        if choice is not None:
            yield (str(model), str(trait)), mine, choice


def same_value(a: Any, b: Any) -> bool:
    """A layer or coefficient as two sources spell it: numbers alike to float rounding (12
    and 12.0, "0.2" and 0.2), else the same text ("4+8")."""
    x, y = stats.as_number(a), stats.as_number(b)
    if x is not None and y is not None:
        return math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12)
    return str(a) == str(b)


def cosine_left(share: float) -> float:
    """The cosine between a unit vector and itself with dims holding `share` of its squared
    norm zeroed (a cleaned variant against its uncleaned method)."""
    return float(np.sqrt(max(0.0, 1 - share)))


def settings_differ(pre: dict | None, post: dict | None) -> bool:
    """Both configs exist but their cells ran under different steering settings (a scratch
    `--pipeline` run with another scope, unit, judge...): no paired comparison."""
    return pre is not None and post is not None and pre.get("settings") != post.get("settings")


def paired_gap(
    pre: dict | None, post: dict | None, seed: int, confidence: float = stats.CONFIDENCE
) -> stats.Interval:
    """pre - post in the steering direction (the cells' `sign`: equal settings, so one
    direction) over the held-out questions both were scored on: the paired bootstrap of
    the two configs' per-question trait scores (the baseline cancels); none when either is
    missing or their settings differ."""
    pairs = _paired_traits(pre, post)
    if pre is None or pairs is None:
        return stats.Interval(0, None, None, None)
    return stats.paired_delta(*pairs, seed, float(pre.get("sign", 1.0)), confidence=confidence)


def _paired_traits(pre: dict | None, post: dict | None) -> tuple[list, list] | None:
    """The two configs' held-out trait scores on the questions both were asked, in one
    order; None when either is missing or their settings differ."""
    if pre is None or post is None or settings_differ(pre, post):
        return None
    a, b = pre.get("heldout_traits") or {}, post.get("heldout_traits") or {}
    common = [q for q in a if q in b]
    return [a[q] for q in common], [b[q] for q in common]


def differing_questions(pre: dict | None, post: dict | None) -> int | None:
    """On how many of the questions both were scored on the two configs' held-out trait
    scores differ (what a paired gain rests on); None when there is no pair."""
    pairs = _paired_traits(pre, post)
    if pairs is None:
        return None
    return sum(
        x is not None and y is not None and not math.isclose(x, y)
        for x, y in zip(*pairs, strict=True)
    )


def _compared(pre: dict | None, post: dict | None) -> bool:
    """Whether a gain of `pre` over `post` has a question both scored (`paired_gap`'s n)."""
    pairs = _paired_traits(pre, post)
    return pairs is not None and any(
        x is not None and y is not None for x, y in zip(*pairs, strict=True)
    )


def cleaning_curve(frame: pd.DataFrame, min_coherence: float, seed: int = 0) -> pd.DataFrame:
    """The chosen config's held-out delta against the number of massive dims cleaned
    (0, 1, 2, 3, 5, all), per base method with a cleaned variant, and whether cleaning
    helps: `gain` is each step's held-out trait minus the uncleaned method's (each at its
    own chosen config), paired over the held-out questions both were scored on, with its
    interval (two separate intervals cannot show a difference). The `gain_k` cleaned variants of one
    method (distinct tensors: aliases are one) are compared with it at once: each interval
    is at 1 - 0.05/k (Bonferroni), so together they hold at 95% and a "helps" among five is
    not a 1-in-4 chance under no effect."""
    chosen = picks(frame, min_coherence)
    aliases = frame.groupby(GROUP, sort=True)["alias_of"].first().to_dict()
    out = []
    for key in sorted(_pairs(frame)):
        for base in sorted({_base(m) for m in frame["method"].unique()}):
            uncleaned = chosen.get((*key, base), (None, ""))[0]
            steps = [(d, s) for d, s in CURVE_STEPS if (*key, base + s) in chosen]
            if not any(s for _, s in steps):  # nothing cleaned (random_baseline): no curve
                continue
            compared = [
                s for _, s in steps if s and _compared(chosen[(*key, base + s)][0], uncleaned)
            ]
            # variants that are one tensor (an alias) are one test, not several
            k = len({aliases[(*key, base + s)] or base + s for s in compared})
            confidence = stats.family_confidence(k)
            for dims, suffix in steps:
                method = base + suffix
                hit, status = chosen[(*key, method)]
                gain = paired_gap(hit, uncleaned, seed, confidence) if suffix else None
                out.append(
                    {
                        **dict(zip(KEY, key, strict=True)),
                        "method": base,
                        "dims_cleaned": dims,
                        "variant": method,
                        "status": status,
                        "alias_of": aliases[(*key, method)],
                        "layer": _get(hit, "layer"),
                        "coefficient": _get(hit, "coefficient"),
                        **_held(hit),
                        "gain_n": gain.n if gain and gain.mean is not None else np.nan,
                        "gain": _nan(gain.mean) if gain else np.nan,
                        "gain_lo": _nan(gain.lo) if gain else np.nan,
                        "gain_hi": _nan(gain.hi) if gain else np.nan,
                        "gain_k": k if suffix in compared else np.nan,
                        "gain_note": (
                            SETTINGS_DIFFER if suffix and settings_differ(hit, uncleaned) else ""
                        ),
                    }
                )
    columns = KEY + ["method", "dims_cleaned", "variant", "status", "alias_of", "layer"]
    columns += ["coefficient", *HELD.values(), "gain_n", "gain", "gain_lo", "gain_hi"]
    columns += ["gain_k", "gain_note"]
    return pd.DataFrame(out, columns=columns)


def coefficient_table(
    frame: pd.DataFrame, min_coherence: float, tested: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The optimal coefficient of every "ok" (model, trait, position, component, method), with its
    held-out numbers, the mean_diff/probe ratio and the shift cleaning causes relative to the
    uncleaned base method (both only between "ok" rows). Cells without an effect held out
    have no optimal coefficient. `heldout_q` is the cell's q over the report's cells
    (`tested`, `gap_analysis` of the same frame and bar): an ok whose q is 0.05 or more may
    be the one chance finding among them."""
    ok = {k: c for k, (c, status) in picks(frame, min_coherence).items() if status == stats.OK}
    cells = dict(iter(frame.groupby(GROUP, sort=True)))
    if tested is None:  # the report passes the gap analysis it already has
        tested = gap_analysis(frame, min_coherence)
    q_of = dict(zip(map(tuple, tested[GROUP].to_numpy()), tested["heldout_q"], strict=True))
    near = dict(zip(map(tuple, tested[GROUP].to_numpy()), tested["near_copy_of"], strict=True))
    # how much of the held-out effect coherent answers carry (a cliff: many under the bar)
    risk = tested.set_index(GROUP)[list(UNDER_BAR)].to_dict("index") if len(tested) else {}
    aliases = frame.groupby(GROUP, sort=True)["alias_of"].first().to_dict()
    out = []
    for (*key, method), hit in sorted(ok.items()):
        base = ok.get((*key, _base(method)))
        md, pr = ok.get((*key, "mean_diff")), ok.get((*key, "probe"))
        # a config of several vectors has one weight each ("10.5+12.25"): no one number
        weight = stats.as_number(hit["weight"])
        out.append(
            {
                **dict(zip(KEY, key, strict=True)),
                "method": method,
                "alias_of": aliases[(*key, method)],
                # its test repeats its uncleaned method's: one point to the coefficient fit
                "near_copy_of": near.get((*key, method)) or "",
                "layer": hit["layer"],
                "coefficient": float(hit["coefficient"]),
                "unit": hit.get("unit", ""),
                "weight": np.nan if weight is None else weight,
                **_held(hit),
                **risk.get((*key, method), dict.fromkeys(UNDER_BAR, np.nan)),
                "heldout_p": _get(hit, "heldout_p"),
                "heldout_q": q_of.get((*key, method), np.nan),
                "mean_diff_probe_ratio": (
                    float(md["coefficient"]) / float(pr["coefficient"])
                    if md is not None and pr is not None and not settings_differ(md, pr)
                    else np.nan
                ),
                "cleaning_shift": (
                    float(hit["coefficient"]) - float(base["coefficient"])
                    if base is not None
                    and method != _base(method)
                    and not settings_differ(hit, base)
                    else np.nan
                ),
                "at_largest_coefficient": stats.at_largest_coefficient(
                    cells[(*key, method)].to_dict("records"), hit
                ),
            }
        )
    columns = KEY + ["method", "alias_of", "near_copy_of", "layer", "coefficient", "unit"]
    columns += ["weight", *HELD.values(), *UNDER_BAR, "heldout_p", "heldout_q"]
    columns += ["mean_diff_probe_ratio", "cleaning_shift", "at_largest_coefficient"]
    return pd.DataFrame(out, columns=columns)


# the gap analysis's columns of the held-out answers under the coherence bar, which the
# best coefficients repeat
UNDER_BAR = ("coherence_scored", "under_bar", "credited_delta", "credited_lo", "credited_hi")


def _base(method: str) -> str:
    """The registered method a (possibly cleaned) method name builds on."""
    from steerops.errors import SteeropsError
    from steerops.specs import parse_method

    try:
        return parse_method(method).base
    except SteeropsError:  # a method this install does not know: report it on its own
        return method


def _pairs(frame: pd.DataFrame) -> set[tuple]:
    return set(map(tuple, frame[KEY].drop_duplicates().to_numpy().tolist()))


def _get(row: dict | None, key: str) -> Any:
    if row is None or row.get(key) is None:
        return np.nan
    return row[key]


def _nan(value: float | None) -> float:
    return np.nan if value is None else float(value)


def selection_candidates(gap: pd.DataFrame) -> pd.DataFrame:
    """The cells `selection_choice` chooses among: no alias, an effect on the selection half
    (its interval above zero), a verdict drawn on a config."""
    return gap[
        (gap["alias_of"] == "")
        & gap["selection_delta"].notna()
        & (gap["selection_delta_lo"].astype(float) > 0)
        & ~gap["status"].isin([stats.NEEDS_FINER, stats.BASELINE_INCOHERENT, stats.UNSCORED])
    ]


def selection_choice(gap: pd.DataFrame) -> pd.Series | None:
    """The cell chosen on the selection half alone (`gap_analysis` rows): among cells whose
    choice has an effect there (its selection interval above zero), the one with the
    largest selection-half delta (ties: the more coherent there, as within a cell, then the
    first in the table's order); None when no cell qualifies. Its held-out verdict says
    whether it holds: choosing among the cells that held out instead would pick on
    held-out data, and its held-out delta would be the best of several tries, not a
    held-out figure."""
    candidates = selection_candidates(gap)
    if candidates.empty:
        return None
    ranked = selection_keys(candidates).sort_values(
        ["delta", "coherence"], ascending=False, kind="mergesort"
    )
    return candidates.loc[ranked.index[0]]


def selection_keys(candidates: pd.DataFrame) -> pd.DataFrame:
    """What `selection_choice` ranks the candidates by (`delta`, then `coherence`; a missing
    coherence last), to the decimals the choice within a cell reads them
    (`stats.choice_rank`): float noise is no lead, and a tie falls to the table's order."""
    coherence = candidates.get("selection_coherence", pd.Series(np.nan, index=candidates.index))
    return pd.DataFrame(
        {
            "delta": candidates["selection_delta"].astype(float).round(stats.COHERENCE_DECIMALS),
            "coherence": pd.to_numeric(coherence, errors="coerce")
            .round(stats.COHERENCE_DECIMALS)
            .fillna(-np.inf),
        },
        index=candidates.index,
    )
