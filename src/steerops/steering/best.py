"""A steering cell's configs on both halves of the questions, the config it reports, and the
stage's DVC summary.

Every config of a cell's latest sweep (`steering.sweep`; from the results log) gets
its numbers on all questions, on the selection half and on the held-out half
(`config_rows`; the halves and intervals are `steerops.stats`'). The cell's `metrics.json`
names the config chosen on the selection half (`stats.choose`) with its held-out numbers and
verdict ("ok", "no effect", "incoherent held out", "too few held out", "baseline
incoherent", "needs finer
coefficients", "trait unscored"), and which
cell's vectors it shares when they are the same tensors (`alias_of`). `metrics/steer.json`
holds a few headline numbers per cell (DVC metrics) and `metrics/steer_curves.csv` every
config (DVC plots); see `steerops.summary`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from steerops import stats
from steerops.errors import SteeropsError
from steerops.io import read_json, write_json, write_text
from steerops.steering.configs import summarize
from steerops.steering.store import (
    METRICS_FILE,
    RESULTS_FILE,
    ResultsLog,
    entry_key,
    joined,
    locked,
    scores_of,
)
from steerops.steering.sweep import SWEEP_FILE, sweep_digest, sweep_keys
from steerops.summary import collect, summary_dir

CURVE_COLUMNS = (
    "cell trait variant method position layer coefficient series trait_mean coherence_mean "
    "trait_delta n n_unscored"
).split()
HALF_FIELDS = "n trait_mean coherence_mean trait_delta delta_lo delta_hi p".split()
ROW_COLUMNS = (
    "trait variant vector_variant method position component layer coefficient weight "
    "trait_mean coherence_mean trait_delta n n_unscored".split()
    + [f"selection_{k}" for k in HALF_FIELDS]
    + [f"heldout_{k}" for k in HALF_FIELDS]
    + ["vector_hash"]
)
# the headline numbers per cell in metrics/steer.json (held-out, with the interval): the
# config they are of is `tried_layer`/`tried_coefficient`; `layer`/`coefficient` repeat it
# only for an ok cell (as in the cell's metrics.json), so no column of `dvc metrics show`
# offers a config with no effect (or an incoherent one) as the one to use
COMPACT = {
    "status": "status",
    "layer": "layer",
    "coefficient": "coefficient",
    "tried_layer": "tried_layer",
    "tried_coefficient": "tried_coefficient",
    "delta": "heldout_trait_delta",
    "delta_lo": "heldout_delta_lo",
    "delta_hi": "heldout_delta_hi",
    "coherence": "heldout_coherence",
    "under_bar": "heldout_under_bar",  # held-out answers under the bar: a mean can hide them
    # the held-out delta with those counted as unmoved: what coherent answers carry
    "credited_delta": "heldout_credited_delta",
    "credited_lo": "heldout_credited_lo",
    "credited_hi": "heldout_credited_hi",
    "n": "heldout_n",
    "p": "heldout_p",
    "unscored": "n_unscored",  # of the cell's steered answers, left out of every mean
}


@dataclass(frozen=True)
class Protocol:
    """How questions are split and deltas signed: the same for grid, search and report."""

    heldout_fraction: float
    seed: int
    sign: float  # -1 when steering suppresses the trait

    def split(self, questions: list[str]) -> tuple[list[str], list[str]]:
        return stats.split_questions(questions, self.heldout_fraction, self.seed)

    @property
    def direction(self) -> str:
        return "negative" if self.sign < 0 else "positive"


def protocol(params) -> Protocol:
    return Protocol(
        params.search.heldout_fraction,
        params.seed,
        stats.direction_sign(params.steering.direction),
    )


def config_rows(
    log: ResultsLog,
    settings_hash: str,
    proto: Protocol,
    labels: dict[str, Any],
    keep_heldout: bool = False,
    vector_files: dict[str, str] | None = None,
    units: dict[str, float] | None = None,
    sweep: set[str] | None = None,
) -> list[dict[str, Any]]:
    """One row per config logged under `settings_hash` with per-question scores (of the
    configs whose `entry_key` is in `sweep`, the cell's latest sweep; None: every one): its numbers
    on all questions (`trait_delta`: trait - baseline in the steering direction), and on
    each half (deltas likewise, with their interval); with `keep_heldout`, `heldout_traits`
    maps each held-out question to the config's trait score (for paired comparisons), as
    `heldout_coherences` (always) does to its coherence and `heldout_deltas` (always) to its
    paired delta (None where the trait was not scored in both), and `scores` and
    `baseline_scores` every question's (trait, coherence) of the config and of the
    unsteered model;
    `vector_files` the md5 of the vector files on disk now and `units` each vector's weight
    per unit coefficient now (`ResultsLog.configs`)."""
    questions = log.questions(settings_hash)
    base = scores_of(log.baseline(settings_hash) or {})
    if questions is None or base is None:
        return []
    first = {q: i for i, q in reversed(list(enumerate(questions)))}
    halves = proto.split(questions)
    selection, heldout = ([first[q] for q in half] for half in halves)
    # what the unsteered model reaches where the choice is made: a bar it misses too is no
    # coefficient's to reach (`stats.BASELINE_INCOHERENT`)
    base_coherence = stats.mean_of([base[i][1] for i in selection])
    # the unsteered model on the held-out half: the level a held-out delta moves from
    base_heldout = {
        "heldout_baseline_trait": stats.mean_of([base[i][0] for i in heldout]),
        "heldout_baseline_coherence": stats.mean_of([base[i][1] for i in heldout]),
    }
    rows = []
    for entry in log.configs(settings_hash, vector_files, units):
        if sweep is not None and entry_key(entry["config"]) not in sweep:
            continue  # an earlier sweep's config: kept in the log, not in the cell's numbers
        scores = scores_of(entry)
        if scores is None or len(scores) != len(questions):
            continue  # logged before scores were kept: evaluated again on the next sweep
        vectors = entry["config"]["vectors"]
        every = summarize(scores)
        row = dict(labels)
        row.update(
            method=joined([v["method"] for v in vectors]),
            position=joined([v["position"] for v in vectors]),
            component=joined([v["component"] for v in vectors]),
            layer=joined([v["layer"] for v in vectors]),
            coefficient=entry["config"]["coefficient"],
            weight=joined([v["weight"] for v in vectors]),
            trait_mean=every["trait_mean"],
            coherence_mean=every["coherence_mean"],
            # paired over the questions both scored, as each half's delta and its interval
            trait_delta=stats.paired_mean(scores, base, proto.sign),
            n=every["n"],
            n_unscored=every["n_unscored"],
            vector_hash="+".join(entry.get("vector_hashes") or []),
            config_key=entry_key(entry["config"]),  # which evaluated config (not in the CSV)
        )
        row["selection_baseline_coherence"] = base_coherence
        row.update(base_heldout)
        for name, at in (("selection", selection), ("heldout", heldout)):
            half = stats.half_stats(
                [scores[i] for i in at], [base[i] for i in at], proto.seed, proto.sign
            )
            row.update(half.prefixed(name))
        # the coherence of each held-out answer: how many fall under the bar, and the
        # delta with those counted as unmoved (`stats.credited_heldout`)
        row["heldout_coherences"] = {q: scores[first[q]][1] for q in halves[1]}
        row["heldout_deltas"] = {
            q: stats.paired_mean([scores[first[q]]], [base[first[q]]], proto.sign)
            for q in halves[1]
        }
        if keep_heldout:
            row["heldout_traits"] = {q: scores[first[q]][0] for q in halves[1]}
            # every question's scores, in the log's order: for the choice on other splits
            row["scores"] = {q: scores[first[q]] for q in dict.fromkeys(questions)}
            row["baseline_scores"] = {q: base[first[q]] for q in dict.fromkeys(questions)}
        rows.append(row)
    return rows


def baseline_means(log: ResultsLog, settings_hash: str) -> dict[str, Any]:
    entry = log.baseline(settings_hash) or {}
    result = entry.get("result") or {}
    return {"trait_mean": result.get("trait_mean"), "coherence_mean": result.get("coherence_mean")}


def cell_metrics(
    rows: list[dict[str, Any]],
    min_coherence: float,
    proto: Protocol,
    alias_of: str | None = None,
) -> dict[str, Any]:
    """The cell's metrics.json: the config chosen on the selection half, its numbers on both
    halves, and the verdict from the held-out half."""
    pick, status = stats.choose(rows, min_coherence)
    steered = [r for r in rows if stats.steered(r)]
    metrics: dict[str, Any] = {
        "status": status,
        # answers of the steered configs, and those the judge left unscored: every mean
        # and delta is over the rest
        "n_answers": sum(int(r.get("n") or 0) for r in steered),
        "n_unscored": sum(int(r.get("n_unscored") or 0) for r in steered),
        "alias_of": alias_of,
        "min_coherence": min_coherence,
        "n_configs": len(rows),
        "n_coherent": len(stats.steered_coherent(rows, min_coherence)),
        "best_coherence_reached": stats.best_steered_coherence(rows),
        "selection_baseline_coherence": next(
            (r["selection_baseline_coherence"] for r in rows), None
        ),
        "heldout_fraction": proto.heldout_fraction,
        "seed": proto.seed,
        "interval": f"{stats.CONFIDENCE:.0%} paired bootstrap over questions "
        f"({stats.RESAMPLES} resamples, expanded percentile)",
        # the config the numbers below are of; `layer`/`coefficient`/`weight` repeat it only
        # when its verdict is ok (`headlines`): a tried config is not one to use
        "tried_layer": None,
        "tried_coefficient": None,
        "tried_weight": None,
        "layer": None,
        "coefficient": None,
        "weight": None,
        "at_largest_coefficient": False,
    }
    for name in ("selection", "heldout"):
        for k in HALF_FIELDS:
            metrics[f"{name}_{k}"] = None
        metrics[f"{name}_coherence"] = None
    metrics["heldout_feasible"] = None
    # of the chosen config's held-out answers scored for coherence, how many are under the bar
    metrics["heldout_coherence_scored"] = metrics["heldout_under_bar"] = None
    metrics["heldout_coherence_unscored"] = None  # answers the judge gave no coherence score
    # the held-out delta with the answers under the bar counted as unmoved (`stats.credited_delta`)
    metrics["heldout_credited_delta"] = metrics["heldout_under_bar_moved"] = None
    metrics["heldout_credited_lo"] = metrics["heldout_credited_hi"] = None
    if pick is not None:
        metrics.update(
            tried_layer=pick["layer"],
            tried_coefficient=pick["coefficient"],
            tried_weight=pick["weight"],
        )
        if status == stats.OK:
            metrics.update(
                layer=pick["layer"], coefficient=pick["coefficient"], weight=pick["weight"]
            )
        for name in ("selection", "heldout"):
            for k in HALF_FIELDS:
                metrics[f"{name}_{k}"] = pick[f"{name}_{k}"]
            metrics[f"{name}_coherence"] = pick[f"{name}_coherence_mean"]
        metrics["heldout_feasible"] = stats.coherent(pick["heldout_coherence_mean"], min_coherence)
        metrics["heldout_coherence_scored"], metrics["heldout_under_bar"] = stats.under_bar(
            (pick.get("heldout_coherences") or {}).values(), min_coherence
        )
        metrics["heldout_coherence_unscored"] = stats.unscored_heldout(pick)
        credited = stats.credited_heldout(pick, min_coherence, proto.seed)
        metrics["heldout_under_bar_moved"] = stats.moved_under_heldout(pick, min_coherence)
        metrics["heldout_credited_delta"] = credited.mean
        metrics["heldout_credited_lo"], metrics["heldout_credited_hi"] = credited.lo, credited.hi
        metrics["at_largest_coefficient"] = status == stats.OK and stats.at_largest_coefficient(
            rows, pick
        )
    return metrics


def compact(metrics: dict[str, Any]) -> dict[str, Any]:
    """The cell's headline numbers for `dvc metrics show` (held-out, with the interval)."""
    return headlines({short: metrics.get(full) for short, full in COMPACT.items()})


def headlines(row: dict[str, Any]) -> dict[str, Any]:
    """`COMPACT`'s numbers with `layer` and `coefficient` left empty unless the verdict is
    ok: only then is the tried config one to use."""
    if row["status"] != stats.OK:
        row["layer"] = row["coefficient"] = None
    return row


def best_per_layer(rows: list[dict[str, Any]], min_coherence: float) -> dict[Any, Mapping]:
    """Per layer, the config `stats.choose` picks among that layer's configs (selection half)."""
    best: dict[Any, Mapping] = {}
    for layer in dict.fromkeys(r["layer"] for r in rows):
        pick, _ = stats.choose([r for r in rows if r["layer"] == layer], min_coherence)
        if pick is not None:
            best[layer] = pick
    return best


def aliases(vectors: dict[str, dict[Any, str]]) -> dict[str, str]:
    """{name: the name it is an alias of} for vector sets whose every layer holds the same
    tensor as an earlier set in sorted-name order (the first of a group is its name)."""
    out: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for name in sorted(vectors):
        key = tuple(sorted(vectors[name].items(), key=lambda kv: str(kv[0])))
        if not key:
            continue
        if key in seen:
            out[name] = seen[key]
        else:
            seen[key] = name
    return out


def grid_order(row: dict[str, Any]) -> tuple:
    """Sort key of a cell's rows as a grid reads: by layer (multi-vector configs' joined
    "a+b" layers by their numbers), then coefficient; the log keeps the order they ran in."""
    layers = tuple(int(x) for x in str(row["layer"]).split("+"))
    return (len(layers), layers, float(row["coefficient"]))


def vector_map(rows: Iterable[dict[str, Any]]) -> dict[Any, str]:
    """{layer: vector hash} of a cell's single-vector configs."""
    return {r["layer"]: r["vector_hash"] for r in rows if r.get("vector_hash")}


def _cell_metrics(path) -> dict[str, Any]:
    rebuild = (
        "steer that cell again to rebuild it from its results log (nothing is generated "
        "again), or remove its folder"
    )
    try:
        # under the cell's lock: another `steer` process may be rewriting the pair
        with locked(path.parent / RESULTS_FILE):
            metrics = read_json(path)
            keys = sweep_keys(path.parent)
    except SteeropsError as exc:  # another cell's file: this run's own work is saved
        raise SteeropsError(f"{exc}; {rebuild}") from None
    # a run stopped between writing sweep.json and metrics.json leaves them disagreeing
    recorded = metrics.get("sweep")  # none in an older steerops's metrics.json
    if keys is not None and recorded is not None and recorded != sweep_digest(keys):
        raise SteeropsError(
            f"{path}: written for another sweep than {path.parent / SWEEP_FILE} records (a "
            f"run stopped between the two); {rebuild}"
        )
    return metrics


def write_steer_summary(params) -> None:
    """metrics/steer.json ({cell: its headline numbers}) and metrics/steer_curves.csv (every
    config of every cell: trait and coherence vs coefficient on all questions)."""
    root = params.out / "steering"
    write_json(
        summary_dir(params) / "steer.json",
        {cell: compact(_cell_metrics(p)) for cell, p in collect(root, METRICS_FILE).items()},
    )
    from steerops.steering.store import CSV_FILE

    rows: list[dict[str, Any]] = []
    for cell, path in collect(root, CSV_FILE).items():
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                series = f"{row['method']} @ {row['position']} L{row['layer']}"
                rows.append({**row, "cell": cell, "series": series})
    buf = io.StringIO()
    writer = csv.DictWriter(
        buf, fieldnames=CURVE_COLUMNS, extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(rows)
    write_text(summary_dir(params) / "steer_curves.csv", buf.getvalue())


def note_report_behind(params, stage: str) -> None:
    """After new results: a report written from the earlier ones where this run's report
    goes (its own folder under --out, the pipeline's by hand) is behind them now; say so,
    with the command that brings it up to date (a `dvc repro` runs the report next)."""
    import os
    import sys

    from steerops.cli import display_path, read_flag

    if params.run_named:
        reports = params.run_folder / "reports"
    elif params.run_folder is None and not os.environ.get("DVC_STAGE"):
        reports = params.path(params.report.out)
    else:
        return
    if (reports / "report.md").is_file():
        print(
            f"steerops {stage}: note: {display_path(reports / 'report.md')} was written from "
            f"the earlier results; `steerops report{read_flag(params)}` updates it",
            file=sys.stderr,
        )
