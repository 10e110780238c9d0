"""report.md: the protocol's introduction and the sections rendered from the report's
tables."""

from __future__ import annotations

import pandas as pd

from steerops import stats
from steerops.report import calibrated, predict, tables
from steerops.report.answer import answer_lines
from steerops.report.markdown import VERDICT_LEGEND, markdown_table
from steerops.report.results import judge_words, untested


def halves_text(frame: pd.DataFrame) -> str:
    """ "n = A selection / B held-out questions" (the ranges when cells differ)."""
    if frame.empty:
        return "no grid results"
    parts = []
    for name in ("selection", "heldout"):
        values = sorted({int(v) for v in frame[f"{name}_n"].dropna()})
        span = "-".join(map(str, sorted({values[0], values[-1]}))) if values else "?"
        parts.append(f"{span} {'selection' if name == 'selection' else 'held-out'}")
    return " / ".join(parts) + " questions"


INTRO = (
    "Computed from the results logs. Every grid best is chosen on a seeded selection half "
    "of the steering questions and reported on the disjoint held-out half ({halves}; seed "
    "{seed}, `search.heldout_fraction` {fraction:g}): `delta` is the held-out trait delta in "
    "the steering direction against the unsteered baseline on the same questions, "
    "`delta_lo`/`delta_hi` its 95% interval (paired bootstrap over questions, "
    "{resamples} resamples, percentile expanded for n as Student's t expands a mean's), "
    "`coherence` the held-out mean coherence, `n` the held-out "
    "questions; layer L is the output of decoder block L from 0 (HF's hidden_states[L + 1]; "
    "at the last block, before the final norm HF's last hidden state has applied). "
    "A config is a candidate when it is steered (coefficient != 0) and reaches "
    "coherence >= {t:g} on the selection half; the largest selection-half delta with an "
    "interval above zero wins. " + VERDICT_LEGEND.replace("{", "{{").replace("}", "}}") + " "
    "`alias_of` names a method whose vectors are the same tensors (the alias was evaluated "
    "once) or equal to them within 1e-06 at every layer (float rounding, evaluated on its "
    "own): either is left out of counts, q-values and the coefficient fit. `near_copy_of` "
    "names the uncleaned method of a cleaned variant whose removed dims held under "
    f"{tables.BARELY:.0%} of the uncleaned vector's squared norm and that chose the same "
    "config: its test repeats that method's, so the q-values count the two once (its q is "
    "its p in that method's place); it keeps its verdict and counts. Searches are a separate "
    "table: their trials use the search half only and are never mixed into grid tables."
)


def render_markdown(tables_by_name: dict, threshold: float, halves: str, **protocol_) -> str:
    """report.md: the massive activations (`massive`, with the `dims` lines), then the
    tables, each under its title."""
    titles = {
        "gap_analysis": "Gap analysis: the chosen config per method, held out (`layer` and "
        "`coefficient`: the selection half's choice whatever its `status`; only an ok one is a "
        "coefficient to use, as the best coefficients below list; `under_bar`: "
        "its held-out answers under the coherence bar, of `coherence_scored`; "
        "`coherence_unscored`: those the judge gave no coherence score; `credited_delta`: "
        "the held-out delta with both counted as unmoved (`under_bar_moved` of them "
        "had moved along the steering); `coherence_lo`/`_hi`: the held-out coherence's 95% "
        "interval; `moved_along`/`moved_against`/`unmoved`: its held-out answers by how their "
        "trait moved (`moved_little` of the moves by less than 10 points); `heldout_p`: "
        "one-sided sign-flip p of its held-out deltas; `heldout_q`: that p adjusted over every "
        "cell's but an alias's or a near copy's (whose q is its p in its twin's place), "
        "Benjamini-Hochberg)",
        "preclean_vs_clean_after": "Preclean vs clean-after (per `method`, its `_preclean` "
        "variant against its `_cleaned` one, each at its own chosen config; every dim of the "
        "set `dim_set` names); gap = preclean - clean-after on the held-out questions, "
        "paired interval; `vectors_max_diff` the largest difference between the two unit "
        "vectors over their layers",
        "cleaning_curve": "Cleaning curve: dims cleaned (of the set `dim_set` names) vs "
        "held-out delta; gain = cleaned - uncleaned on the held-out questions, paired interval "
        "(Bonferroni over the `gain_k` cleaned variants of a method: together at 95%)",
        "coefficients": "Best coefficients of the grid (ok cells only; `under_bar`: its "
        "held-out answers under the coherence bar, of `coherence_scored`, and "
        "`credited_delta` the held-out delta with them counted as unmoved, as in the gap "
        "analysis: many under the bar, a coefficient at a coherence cliff; `heldout_q`: the "
        "cell's q over the report's cells but aliases and near copies (as the gap analysis "
        "has it), an ok at 0.05 or more may be chance)",
        "coefficient_prediction": "Coefficient prediction (leave-one-out error on distinct "
        "ok cells: an alias or a near copy is its twin's point; none where every weight is "
        "the same or at its grid's largest coefficient, `not_fitted`)",
        "recommendations": "Recommended starting coefficients (from ok cells only, per "
        "coefficient `unit`; `n` the ok cells behind it: with one, it is that cell's grid "
        "choice, not a fit across cells; `predicted_weight` is an absolute weight; "
        "`n_at_largest_coefficient` of them chose their layer's largest coefficient, where the "
        "optimum may lie beyond the grid; `near_copy_of`: every cell behind it is a near copy "
        "of that method's, so its start repeats that one, not a second support; the effect "
        "and its interval behind each start are in the best coefficients above)",
        "search_heldout": "Coefficient searches: the chosen config on the search half and on "
        "held-out questions (no choice: no effect, no feasible steering found, baseline "
        "incoherent or trait unscored; `heldout_p`: the one-sided "
        "sign-flip p of its held-out deltas; `heldout_q`: that p adjusted over the report's "
        "searches, Benjamini-Hochberg; both blank here where the choice failed held out, "
        "search_heldout.csv keeps them; `heldout_under_bar`: its "
        "held-out answers under the search's coherence bar, of `heldout_coherence_scored`; "
        "`heldout_under_margin`: those under the bar it was chosen at (`min_coherence` + "
        "`coherence_margin`; blank without a margin); "
        "`heldout_credited_delta`: the held-out delta with those answers, and those not "
        "scored for coherence, counted as unmoved; "
        "`heldout_read_before`: other choices of earlier searches of the cell the held-out "
        "half was read for; `range_exhausted`: the study stopped short of `search.trials`, "
        "its sampler proposing only configs already tried; "
        "`vs_grid`: what its choice was compared with (compared, same "
        "config, no grid choice, other settings, or why its scores could not be read); "
        "`grid_layer`/`grid_coefficient`/`grid_status`: the grid's choice of the same method "
        "at the search's bar, from configs scored under the same settings and vectors; "
        "`vs_grid_trait_delta`/`vs_grid_coherence_delta`: the search's choice minus the "
        "grid's on the `vs_grid_n`/`vs_grid_coherence_n` held-out questions both answered, "
        "paired)",
    }
    parts = ["# Steering report", "", _intro(threshold, halves, **protocol_), ""]
    judges = tables_by_name.get("judges") or []
    if judges:  # what "trait" and "coherence" measure, before any number of them
        parts += [f"Judge: {'; '.join(map(judge_words, judges))}.", ""]
    answer = answer_lines(
        tables_by_name["gap_analysis"],
        tables_by_name["search_heldout"],
        tables_by_name["cleaning_curve"],
        threshold,
        tables_by_name.get("grids"),
        tables_by_name.get("trials"),
        tables_by_name.get("resplits"),
        tables_by_name.get("controls"),
        tables_by_name.get("weighs"),
    )
    parts += ["## In short", "", *answer, ""]
    parts += ["## Massive activations (calibration)", "", str(tables_by_name["dims"]), ""]
    if len(tables_by_name["massive"]):  # none: the lines above say so
        parts += [markdown_table(calibrated.massive_display(tables_by_name["massive"])), ""]
    notes = {  # what a table's names do not say
        "coefficient_prediction": "Features per chosen config (`coefficient_features.csv`): "
        "`layer_norm` is the mean L2 norm of the layer's extraction activations, each a "
        "mean-pooled window at the vector's position (not the per-token coefficient unit); "
        "`layer_norm_clean` the same with the cleaned dims zeroed; `abs_mean_proj` is "
        "|mean activation . vector|.",
    }
    for name, title in titles.items():
        note = [notes[name], ""] if name in notes else []
        table = tables_by_name[name]
        if name == "search_heldout":  # as the results page shows it
            table = untested(table)
        body = prediction_body(table) if name == "coefficient_prediction" else markdown_table(table)
        parts += [f"## {title}", "", *note, body, ""]
    parts += [
        "![coefficient curves](coefficient_curves.png)",
        "",
        "![cleaning curve](cleaning_curve.png)",
        "",
    ]
    return "\n".join(parts)


def prediction_body(errors: pd.DataFrame) -> str:
    """The prediction table, or why there is none: a table of blanks reads as a failure."""
    if errors["loo_mae"].notna().any():
        return markdown_table(errors)
    most = int(errors["n"].max()) if len(errors) else 0
    if most < predict.MIN_ROWS:
        return (
            f"Not fitted: leave-one-out needs {predict.MIN_ROWS} distinct ok cells for a "
            f"predictor, and the most any predictor had here is {most} "
            "(`coefficient_prediction.csv` counts them per predictor)."
        )
    reasons = sorted(set(errors["not_fitted"]) - {""})
    return f"Not fitted: {'; '.join(reasons)} (`coefficient_prediction.csv`, `not_fitted`)."


def _intro(threshold: float, halves: str, seed: int = 0, fraction: float = 0.5) -> str:
    return INTRO.format(
        t=threshold,
        halves=halves,
        seed=seed,
        fraction=fraction,
        resamples=stats.RESAMPLES,
        min_heldout=stats.MIN_HELDOUT,
    )
