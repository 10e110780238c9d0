"""Choosing the searched config, and the search's outputs (trials table, best config, plot).

The choice never takes an infeasible trial while a feasible one exists: best = the largest
trait delta among completed trials with coherence >= the threshold (ties: the smaller
coefficient, then the more coherent). With no feasible trial the most coherent one is
reported instead, marked `feasible: false`.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict
from pathlib import Path

from steerops.io import atomic_path, write_json, write_text
from steerops.search.storage import storage_label
from steerops.search.study import TrialRecord

TRIAL_COLUMNS = ["number", "layer", "coefficient", "weight", "trait_mean", "coherence_mean",
                 "trait_delta", "feasible", "state", "source", "rows"]


def choose_best(records: list[TrialRecord]) -> tuple[TrialRecord | None, bool]:
    """(chosen trial, whether it is feasible); (None, False) when nothing completed."""
    done = [r for r in records if r.state == "complete" and r.trait_delta is not None]
    feasible = [r for r in done if r.feasible]
    if feasible:
        return max(feasible, key=lambda r: (r.trait_delta, -abs(r.coefficient),
                                            r.coherence_mean)), True
    if done:
        return max(done, key=lambda r: (r.coherence_mean, r.trait_delta)), False
    return None, False


def generated_rows(records: list[TrialRecord]) -> int:
    """Rows the search generated for its trials (imported results cost nothing here)."""
    return sum(r.rows for r in records if r.source != "known")


def write_trials_csv(path: Path, records: list[TrialRecord]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=TRIAL_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in sorted(records, key=lambda r: r.number):
        writer.writerow({k: "" if v is None else v for k, v in asdict(r).items()})
    write_text(path, buf.getvalue())


def best_summary(params, plan, records: list[TrialRecord], chosen: TrialRecord,
                 feasible: bool, stats, held: dict) -> dict:
    """best.json: the chosen config with its search-half and held-out numbers."""
    st, cfg = params.steering, params.search
    n_search, n_heldout = len(plan.search_questions), held["n_questions"]
    trial_rows = generated_rows(records)
    return {
        "trait": plan.trait, "variant": st.variant, "vector_variant": st.vector_variant,
        "method": plan.source.method, "position": plan.source.position,
        "component": plan.source.component, "direction": st.direction,
        "min_coherence": plan.min_coherence, "study": plan.study,
        "storage": storage_label(plan.storage), "sampler": cfg.sampler, "seed": plan.seed,
        "layers": plan.layers, "coef_range": [cfg.coef_min, cfg.coef_max],
        "coefficient_unit": st.coefficient_unit, "feasible": feasible,
        "chosen": {"trial": chosen.number, "layer": chosen.layer,
                   "coefficient": chosen.coefficient, "weight": chosen.weight,
                   "source": chosen.source},
        "search": {"trait_delta": chosen.trait_delta, "trait_mean": chosen.trait_mean,
                   "coherence_mean": chosen.coherence_mean,
                   "baseline_trait": stats.baseline_trait, "n_questions": n_search,
                   "settings_hash": plan.settings["settings_hash"]},
        "heldout": {k: v for k, v in held.items() if k not in ("responses", "rows_generated")},
        # completed search trials (the --trials target); imported results come on top
        "n_trials": sum(r.state == "complete" and r.source != "known" for r in records),
        "n_known": sum(r.source == "known" for r in records),
        "n_feasible": sum(bool(r.feasible) for r in records if r.state == "complete"),
        # rows the protocol generates (configs x questions; a trial served from the results
        # log costs none), and the rows this invocation actually generated
        "n_generations": {"trials": trial_rows, "baseline": n_search, "heldout": 2 * n_heldout,
                          "total": trial_rows + n_search + 2 * n_heldout,
                          "this_run": stats.rows + held["rows_generated"]},
    }


def best_row(best: dict) -> dict:
    """The one-row, flat view of best.json (best.csv; DVC metrics)."""
    chosen = best.get("chosen") or {}
    search, heldout = best.get("search") or {}, best.get("heldout") or {}
    return {
        "trait": best["trait"], "variant": best["variant"], "method": best["method"],
        "position": best["position"], "component": best["component"],
        "feasible": best["feasible"],
        "layer": chosen.get("layer"), "coefficient": chosen.get("coefficient"),
        "weight": chosen.get("weight"),
        "search_trait_delta": search.get("trait_delta"),
        "search_coherence": search.get("coherence_mean"),
        "heldout_trait_delta": heldout.get("trait_delta"),
        "heldout_coherence": heldout.get("coherence_mean"),
        "n_trials": best["n_trials"], "n_generations": best["n_generations"]["total"],
    }


def write_best(folder: Path, best: dict) -> None:
    write_json(folder / "best.json", best)
    row = best_row(best)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(row), lineterminator="\n")
    writer.writeheader()
    writer.writerow({k: "" if v is None else v for k, v in row.items()})
    write_text(folder / "best.csv", buf.getvalue())


def plot_search(path: Path, records: list[TrialRecord], chosen: TrialRecord | None,
                min_coherence: float, title: str) -> None:
    """Coefficient vs trait delta and vs coherence, feasible trials in green."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in records if r.state == "complete" and r.trait_delta is not None]
    fig, (ax_delta, ax_coh) = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    for ok, colour, label in ((True, "tab:green", f"coherence >= {min_coherence:g}"),
                              (False, "tab:red", "infeasible")):
        pts = [r for r in done if bool(r.feasible) == ok]
        xs = [r.coefficient for r in pts]
        ax_delta.scatter(xs, [r.trait_delta for r in pts], c=colour, label=label, s=24)
        ax_coh.scatter(xs, [r.coherence_mean for r in pts], c=colour, s=24)
    if chosen is not None and chosen.trait_delta is not None:
        ax_delta.scatter([chosen.coefficient], [chosen.trait_delta], marker="*", s=240,
                         facecolors="none", edgecolors="black",
                         label=f"chosen (layer {chosen.layer})")
        ax_coh.scatter([chosen.coefficient], [chosen.coherence_mean], marker="*", s=240,
                       facecolors="none", edgecolors="black")
    ax_coh.axhline(min_coherence, color="grey", linestyle="--", linewidth=1)
    ax_delta.set(xlabel="coefficient", ylabel="trait delta vs baseline", title=title)
    ax_coh.set(xlabel="coefficient", ylabel="coherence", ylim=(-2, 102),
               title=f"constraint: coherence >= {min_coherence:g}")
    ax_delta.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
