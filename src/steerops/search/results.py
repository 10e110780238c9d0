"""Choosing the searched config and summarising the search (best.json).

The choice never takes an infeasible trial while a feasible one exists: best = the largest
trait delta among completed trials with coherence >= the threshold (ties: the smaller
coefficient, then the more coherent). With no feasible trial the most coherent one is
reported instead, marked `feasible: false`.
"""

from __future__ import annotations

from steerops.search.storage import storage_label
from steerops.search.study import TrialRecord


def choose_best(records: list[TrialRecord]) -> tuple[TrialRecord | None, bool]:
    """(chosen trial, whether it is feasible); (None, False) when nothing completed."""
    done = [r for r in records if r.state == "complete" and r.trait_delta is not None]
    feasible = [r for r in done if r.feasible]
    if feasible:
        return max(
            feasible, key=lambda r: (r.trait_delta, -abs(r.coefficient), r.coherence_mean)
        ), True
    if done:
        return max(done, key=lambda r: (r.coherence_mean, r.trait_delta)), False
    return None, False


def generated_rows(records: list[TrialRecord]) -> int:
    """Rows the search generated for its trials (imported results cost nothing here)."""
    return sum(r.rows for r in records if r.source != "known")


def best_summary(
    params, plan, records: list[TrialRecord], chosen: TrialRecord, feasible: bool, stats, held: dict
) -> dict:
    """best.json: the chosen config with its search-half and held-out numbers."""
    st, cfg = params.steering, params.search
    n_search, n_heldout = len(plan.search_questions), held["n_questions"]
    trial_rows = generated_rows(records)
    return {
        "trait": plan.trait,
        "variant": st.variant,
        "vector_variant": st.vector_variant,
        "method": plan.source.method,
        "position": plan.source.position,
        "component": plan.source.component,
        "direction": st.direction,
        "min_coherence": plan.min_coherence,
        "study": plan.study,
        "storage": storage_label(plan.storage),
        "sampler": cfg.sampler,
        "seed": plan.seed,
        "layers": plan.layers,
        "coef_range": [cfg.coef_min, cfg.coef_max],
        "coefficient_unit": st.coefficient_unit,
        "feasible": feasible,
        "chosen": {
            "trial": chosen.number,
            "layer": chosen.layer,
            "coefficient": chosen.coefficient,
            "weight": chosen.weight,
            "source": chosen.source,
        },
        "search": {
            "trait_delta": chosen.trait_delta,
            "trait_mean": chosen.trait_mean,
            "coherence_mean": chosen.coherence_mean,
            "baseline_trait": stats.baseline_trait,
            "n_questions": n_search,
            "settings_hash": plan.settings["settings_hash"],
        },
        "heldout": {k: v for k, v in held.items() if k not in ("responses", "rows_generated")},
        # completed search trials (the --trials target); imported results come on top
        "n_trials": sum(r.state == "complete" and r.source != "known" for r in records),
        "n_known": sum(r.source == "known" for r in records),
        "n_feasible": sum(bool(r.feasible) for r in records if r.state == "complete"),
        # rows the protocol generates (configs x questions; a trial served from the results
        # log costs none), and the rows this invocation actually generated
        "n_generations": {
            "trials": trial_rows,
            "baseline": n_search,
            "heldout": 2 * n_heldout,
            "total": trial_rows + n_search + 2 * n_heldout,
            "this_run": stats.rows + held["rows_generated"],
        },
    }
