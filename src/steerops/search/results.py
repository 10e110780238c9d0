"""Choosing the searched config and summarising the search (best.json).

The choice is the grid's (`steerops.stats.select`) on the search half: among completed
trials with coefficient != 0 and coherence >= the threshold whose trait delta is above zero
beyond its interval, the largest delta (ties: more coherent, smaller coefficient). When no
trial qualifies the outcome is "no feasible steering found" ("baseline incoherent" when the
unsteered model misses the bar too), "no effect", or "trait unscored" (coherent trials the
judge gave no trait score: its failure, not a finding, as in the grid): nothing is chosen,
and nothing is reported as a pick. The chosen config is then evaluated once on the
held-out half, which decides `feasible` (coherence there) and the verdict ("ok", "no
effect", "incoherent held out").
"""

from __future__ import annotations

from typing import Any

from steerops import stats
from steerops.search.storage import storage_label
from steerops.search.trials import TrialRecord
from steerops.steering.configs import Config, VectorSource

NO_FEASIBLE = "no feasible steering found"


def selection_rows(
    records: list[TrialRecord], evaluator, source: VectorSource, direction: str, seed: int
) -> list[dict[str, Any]]:
    """The coherent completed trials with their search-half numbers and interval. Their
    per-question scores come from the results logs (every trial was logged when evaluated,
    imported ones by the grid), so nothing is generated here."""
    done = [
        r
        for r in records
        if r.state == "complete" and r.trait_delta is not None and r.feasible and r.coefficient
    ]
    if not done:
        return []
    base = evaluator.baseline()
    results = evaluator.evaluate([Config.single(source, r.layer, r.coefficient) for r in done])
    sign = stats.direction_sign(direction)
    rows = []
    for record, result in zip(done, results, strict=True):
        half = stats.half_stats(result.scores, base.scores, seed, sign)
        rows.append(
            {
                "trial": record,
                "layer": record.layer,
                "coefficient": record.coefficient,
                **half.prefixed("selection"),
            }
        )
    return rows


def choose_best(rows: list[dict[str, Any]], min_coherence: float) -> TrialRecord | None:
    """The chosen trial, or None: nothing chosen (`unchosen_status` says why)."""
    pick, verdict = stats.select(rows, min_coherence)
    return None if pick is None or verdict is not None else pick["trial"]


def unchosen_status(
    rows: list[dict[str, Any]],
    min_coherence: float,
    baseline_coherence: float | None = None,
    coherent_unscored: int = 0,
    baseline_bar: float | None = None,
) -> str:
    """Why no trial was chosen: coherent steered trials, none with an interval above zero
    (`stats.NO_EFFECT`) or none with a trait score (`stats.UNSCORED`: also when the only
    coherent ones are the `coherent_unscored` trials, failed for want of a trait score),
    or none coherent at all (`NO_FEASIBLE`), and the unsteered model under the bar too on
    the search half (`stats.BASELINE_INCOHERENT`), each as the grid says. The unsteered
    model is held to `baseline_bar` (default `min_coherence`): the verdict's bar, not a
    margin over it that only the steered trials must clear."""
    _, verdict = stats.select(rows, min_coherence)
    if verdict in (stats.NO_EFFECT, stats.UNSCORED):
        return verdict
    if coherent_unscored:
        return stats.UNSCORED
    bar = min_coherence if baseline_bar is None else baseline_bar
    if baseline_coherence is not None and not stats.coherent(baseline_coherence, bar):
        return stats.BASELINE_INCOHERENT
    return NO_FEASIBLE


def coherent_unscored(records: list[TrialRecord], min_coherence: float) -> int:
    """Steered trials coherent on the search half whose trait the judge did not score: they
    fail as "no scores" (no value to optimise) and are no choice, but not incoherent."""
    return sum(
        r.state == "fail"
        and bool(r.coefficient)
        and r.trait_mean is None
        and stats.coherent(r.coherence_mean, min_coherence)
        for r in records
    )


def generated_rows(records: list[TrialRecord]) -> int:
    """Rows the search generated for its trials (imported results cost nothing here)."""
    return sum(r.rows for r in records if r.source != "known")


def at_range_top(
    chosen: TrialRecord, records: list[TrialRecord], coef_min: float, coef_max: float
) -> bool:
    """The choice is its layer's largest completed coefficient and in the top tenth of the
    range: the optimum may lie past search.coef_max (as the grid's at_largest_coefficient)."""
    above = [
        r
        for r in records
        if r.layer == chosen.layer and r.state == "complete" and r.coefficient > chosen.coefficient
    ]
    return not above and chosen.coefficient >= coef_max - 0.1 * (coef_max - coef_min)


def best_summary(
    params,
    plan,
    records: list[TrialRecord],
    chosen: dict[str, Any] | None,
    stats_,
    held: dict | None,
    unchosen: str = NO_FEASIBLE,
) -> dict:
    """best.json: the outcome, and the chosen config with its search-half and held-out
    numbers (each with its interval), or no choice at all (`unchosen`: why)."""
    st, cfg = params.steering, params.search
    n_search = len(plan.search_questions)
    n_heldout = len(plan.heldout_questions)
    trial_rows = generated_rows(records)
    n_feasible = sum(bool(r.feasible) for r in records if r.state == "complete")
    if chosen is None or held is None:  # nothing judged held out: not infeasible either
        status, feasible = unchosen, None
    else:
        row = {
            "heldout_delta_lo": held["delta_lo"],
            "heldout_delta_hi": held.get("delta_hi"),
            "heldout_coherence_mean": held["coherence_mean"],
            "heldout_n": held["n"],
            "heldout_p": held.get("p"),
        }
        status = stats.heldout_verdict(row, plan.min_coherence)
        feasible = stats.coherent(held["coherence_mean"], plan.min_coherence)
    record: TrialRecord | None = None if chosen is None else chosen["trial"]
    return {
        "trait": plan.trait,
        "variant": st.variant,
        "vector_variant": st.vector_variant,
        "method": plan.source.method,
        "position": plan.source.position,
        "component": plan.source.component,
        "direction": st.direction,
        "min_coherence": plan.min_coherence,
        # the search half's bar was min_coherence + this (only when set)
        **({"coherence_margin": plan.margin} if plan.margin else {}),
        "study": plan.study,
        "storage": storage_label(plan.storage, params.root),  # portable: relative in the project
        "sampler": cfg.sampler,
        "seed": plan.seed,
        "layers": plan.layers,
        "coef_range": [cfg.coef_min, cfg.coef_max],
        "coefficient_unit": st.coefficient_unit,
        "status": status,
        "feasible": feasible,  # decided on the held-out half; None: nothing chosen
        "chosen": None
        if record is None
        else {
            "trial": record.number,
            "layer": record.layer,
            "coefficient": record.coefficient,
            "weight": record.weight,
            "source": record.source,
            # an ok choice short of the judge's scale end only, as the grid's
            # at_largest_coefficient
            "at_range_top": status == stats.OK
            and not stats.saturated(chosen or {})
            and at_range_top(record, records, cfg.coef_min, cfg.coef_max),
        },
        "search": {
            "trait_delta": None if chosen is None else chosen["selection_trait_delta"],
            "delta_lo": None if chosen is None else chosen["selection_delta_lo"],
            "delta_hi": None if chosen is None else chosen["selection_delta_hi"],
            "p": None if chosen is None else chosen.get("selection_p"),
            "trait_mean": None if record is None else record.trait_mean,
            "coherence_mean": None if record is None else record.coherence_mean,
            "feasible": n_feasible > 0,  # a coherent trial (a choice needs an effect too)
            "baseline_trait": stats_.baseline_trait,
            "baseline_coherence": stats_.baseline_coherence,
            "n": None if chosen is None else chosen["selection_n"],
            "n_questions": n_search,
            "settings_hash": plan.settings["settings_hash"],
        },
        "heldout": None
        if held is None
        else {k: v for k, v in held.items() if k not in ("responses", "rows_generated")},
        # completed search trials (the --trials target); imported results come on top
        "n_trials": sum(r.state == "complete" and r.source != "known" for r in records),
        "n_known": sum(r.source == "known" for r in records),
        # stopped short of the target: the sampler proposed only configs already evaluated
        "range_exhausted": stats_.exhausted,
        "n_feasible": n_feasible,
        # coherent trials the judge gave no trait score (failed, so not among n_feasible)
        "n_coherent_unscored": coherent_unscored(records, plan.search_bar),
        # rows the protocol generates (its asked trials x questions, whatever log served
        # them; known results and coefficient 0 cost none), and the rows this invocation
        # actually generated (said and logged, not written to best.json)
        "n_generations": {
            "trials": trial_rows,
            "baseline": n_search,
            "heldout": 0 if held is None else 2 * n_heldout,
            "total": trial_rows + n_search + (0 if held is None else 2 * n_heldout),
            "this_run": stats_.rows + (0 if held is None else held["rows_generated"]),
        },
    }
