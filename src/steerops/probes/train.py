"""`steerops probe train`: one ridge probe per layer from task activations to scores.

Splits, alpha selection and scoring are in `ridge.py`; this module gathers the inputs,
aligns tasks by id, writes an immutable run (`store.py`) and logs it to MLflow.
"""

from __future__ import annotations

import math
import shlex
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import r2_score
from tqdm import tqdm

from steerops.cli import display_path, run_out_flag
from steerops.errors import SteeropsError
from steerops.extract.store import METADATA_FILE, TENSORS_FILE, read_metadata
from steerops.io import file_md5, read_json
from steerops.probes import ridge
from steerops.probes.activations import (
    ensure_conditions,
    read_layer,
    read_task_ids,
    select_layers,
    tasks_name,
)
from steerops.probes.confounds import one_hot_design, residualize
from steerops.probes.data import (
    fit_ceiling,
    param_file,
    read_comparisons,
    read_confounds,
    read_groups,
    read_scores,
    scores_of_other_comparisons,
    scores_out_of_step,
    unknown_tasks,
)
from steerops.probes.store import (
    MANIFEST,
    PREDICTIONS,
    drop_run_id,
    find_run,
    metric_name,
    new_run_id,
    predictions_csv,
    probes_root,
    record_invocation,
    run_key,
    write_run,
)
from steerops.specs import position_slug
from steerops.stats import Interval
from steerops.stats.correlation import pearson_interval
from steerops.tracking import track


def _finite(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _inputs(params, act_dir: Path) -> dict[str, dict]:
    """Input files with their hashes. Activations are identified by their metadata (model,
    tasks, condition) plus the tensor file's size: hashing many GB per run would be slow."""
    probes = params.probes
    inputs = {
        "activations": {
            "path": str(act_dir),
            "md5": file_md5(act_dir / METADATA_FILE),
            "bytes": (act_dir / TENSORS_FILE).stat().st_size,
        }
    }
    # the groups of a grouped split are read from the task set
    names = ("scores", "comparisons", "confounds") + (("tasks",) if probes.group_by else ())
    for name in names:
        value = getattr(probes, name)
        if value:
            path = params.path(value)
            inputs[name] = {"path": str(path), "md5": file_md5(path)}
    return inputs


def _config(params, layers: list[int]) -> dict:
    probes = params.probes
    spec = params.variant(probes.variant, "probes.variant")
    return (
        {
            "tasks_name": tasks_name(params),
            "variant": probes.variant,
            "model": spec.id,
            "revision": spec.revision,
            "position": probes.position.text,
            "component": probes.component,
            "condition": probes.condition,
            "layers": layers,
            "alphas": list(probes.alphas),
            "standardize": probes.standardize,
            "protocol": "cv" if probes.cv_folds else "holdout",
            "heldout_fraction": None if probes.cv_folds else probes.heldout_fraction,
            "cv_folds": probes.cv_folds,
            "split_seed": params.seed if probes.split_seed is None else probes.split_seed,
        }
        | ({"group_by": probes.group_by} if probes.group_by else {})
        | (
            # runs before this key regressed the confounds out on every task: not reused
            {"confounds_fit": "training tasks"} if probes.confounds else {}
        )
    )


def _targets(
    params, scores: dict[str, float]
) -> tuple[dict[str, float], dict | None, dict[str, tuple[str, ...]] | None]:
    """The scores with the confounds regressed out on every task (for the report and the
    check that they vary; each probe regresses on its own training tasks), the report,
    and each task's confound levels (None: no confounds)."""
    path = param_file(params, params.probes.confounds, "probes.confounds")
    if path is None:
        return scores, None, None
    confounds, columns = read_confounds(path)
    targets, report = residualize(scores, confounds, columns)
    if report["n_dropped"]:  # the probe trains on the rest: a partial file must not pass unseen
        print(
            f"warning: probes.confounds: {report['n_dropped']} of the {len(scores)} scored "
            f"tasks have no row in {path} and are left out"
            f"{_examples(report['dropped'], 'without a row')}",
            file=sys.stderr,
        )
    return targets, report, confounds


def condition_prompt(params) -> str | None:
    """The system prompt of the condition the probe trains on, from the OOD conditions file
    (so `train` and `ood` extract a condition's folder alike); `baseline` not named there
    keeps each task's own. Another id has no prompt to extract with: an error."""
    from steerops.extract.conditions import read_conditions
    from steerops.extract.tasks import BASELINE

    wanted, path = params.probes.condition, params.probes.ood.conditions
    known: dict[str, str | None] = {}
    if path and not params.path(path).is_file():
        # `probe ood` reads the baseline's prompt from this file: a typo must not train the
        # probe under another prompt than the one its OOD deltas are measured from
        raise SteeropsError(
            f"probes.ood.conditions: file not found: {params.path(path)} (it names the "
            "conditions' system prompts; null keeps each task's own)"
        )
    if path:
        baseline, others = read_conditions(params.path(path))
        known = {c.id: c.system_prompt for c in (baseline, *others)}
    if wanted in known:
        return known[wanted]
    if wanted == BASELINE.id:
        return None
    where = f"{params.path(path)}" if known else "no conditions file (probes.ood.conditions)"
    ids = list(known)
    more = f", ... {len(ids)} in all" if len(ids) > 6 else ""
    listed = f" (it has {', '.join(ids[:6])}{more})" if known else ""
    raise SteeropsError(f"probes.condition {wanted!r}: not a condition in {where}{listed}")


def _examples(ids, which: str = "scored only") -> str:
    """ "; e.g. 'a', 'b', 'c' scored only" naming the first few of `ids` (a typo shows
    here), or ""."""
    shown = sorted(ids)[:3]
    return f"; e.g. {', '.join(repr(t) for t in shown)} {which}" if shown else ""


def _why_unextracted(params, missing: list[str], known: set[str], metadata: dict) -> str:
    """Why scored tasks have no activations: ids the task set (`known`) lacks (a typo,
    another set), or prompts too short for the position's window, which extraction drops."""
    if not missing:
        return ""
    short = [t for t in missing if t in known]
    unknown = [t for t in missing if t not in known]
    reasons = []
    if short:
        position = params.probes.position.text
        empty = (metadata.get("counts") or {}).get("dropped_empty")
        reasons.append(
            f"{len(short)} have no token at {position} (prompts too short for the window"
            + (f"; extraction dropped {empty} tasks" if empty else "")
            + "): the probe sees only the tasks long enough"
        )
    if unknown:
        reasons.append(
            f"{len(unknown)} are not in probes.tasks (task ids must match{_examples(unknown)})"
        )
    return ": " + "; ".join(reasons)


def check_varies(values, scores_path: Path, confounded: bool) -> None:
    """Refuse scores that are all equal: every probe's r would be undefined, on every layer."""
    v = np.asarray(values, dtype=np.float64)
    # residualised scores that the confounds explain fully differ only by rounding
    if np.ptp(v) <= 1e-9 * max(1.0, float(np.abs(v).max())):
        after = " after regressing out probes.confounds" if confounded else ""
        raise SteeropsError(
            f"{scores_path}: the {len(v)} scores of the tasks used are all {v[0]:.6g}{after}; "
            "a probe needs scores that vary"
        )


def _check_scored_tasks(
    params, targets: dict[str, float], scores_path: Path, confounded: bool
) -> tuple[set[str], dict[str, str] | None]:
    """Refuse, before any extraction (a model load, then every task through it), scores
    that name none of the task set's ids, or too few of them for the split or the folds;
    the task set's ids, and the scored tasks' `probes.group_by` labels (None: split by
    task)."""
    from steerops.extract.tasks import load_tasks

    probes = params.probes
    tasks_file = params.path(probes.tasks)
    if not tasks_file.is_file():
        raise SteeropsError(f"probes.tasks: file not found: {tasks_file}")
    known = {t.task_id for t in load_tasks(tasks_file)}
    scored = sorted(t for t in targets if t in known)
    n = len(scored)
    if n == 0:
        raise SteeropsError(
            f"{scores_path}: none of its {len(targets)} task ids is a task in {tasks_file} "
            f"(e.g. {next(iter(targets))!r}); are the scores of another task set?"
        )
    check_varies([v for t, v in targets.items() if t in known], scores_path, confounded)
    field = probes.group_by
    group_of = None if field is None else read_groups(tasks_file, field, set(scored))
    groups = _labels(group_of, scored)
    seed = params.seed if probes.split_seed is None else probes.split_seed
    if probes.cv_folds:
        ridge.check_folds(n, probes.cv_folds, groups, seed)
    else:
        ridge.split_tasks(n, probes.heldout_fraction, seed, groups)
    return known, group_of


def _labels(group_of: dict[str, str] | None, tasks: list[str]) -> np.ndarray | None:
    """The group label of each of `tasks`, in order (None: split by task)."""
    return None if group_of is None else np.array([group_of[t] for t in tasks])


def _warn_unknown_compared(comparisons, known: set[str], path) -> None:
    """Comparisons naming tasks the task set lacks can never be scored: a typo'd or foreign
    comparisons file would shrink the pairwise accuracy's n without a word."""
    unknown = unknown_tasks(comparisons, known)
    if unknown:
        n = sum(a in unknown or b in unknown for a, b, _ in comparisons)
        print(
            f"warning: probes.comparisons: {n} of the {len(comparisons)} comparisons in {path} "
            f"name {len(unknown)} tasks not in probes.tasks and are not scored"
            f"{_examples(unknown, 'unknown')}",
            file=sys.stderr,
        )


def _fit_layer(
    x: np.ndarray,
    y: np.ndarray,
    config: dict,
    design: np.ndarray | None,
    groups: np.ndarray | None,
) -> ridge.ProbeFit:
    """`y`: the raw scores when `design` (the confounds) is given, regressed out per fit;
    `groups`: each task's `probes.group_by` label (None: split by task)."""
    standardize, seed = config["standardize"], config["split_seed"]
    if config["protocol"] == "cv":
        folds = config["cv_folds"]
        return ridge.fit_cv(x, y, config["alphas"], folds, seed, standardize, design, groups)
    split = ridge.split_tasks(len(y), config["heldout_fraction"], seed, groups)
    return ridge.fit_holdout(x, y, config["alphas"], split, standardize, design)


def prediction_rows(
    layer: int, fit: ridge.ProbeFit, used: list[str], scores: np.ndarray, protocol: str
) -> list[dict]:
    """predictions.csv's rows of one layer: each task its r is scored on (the final part, or
    every task out of fold under CV) with its score from the scores file, the target the
    probe is scored against (that score, with the confounds regressed out on the training
    tasks when given) and the probe's prediction, for residuals and outliers."""
    part = "final" if protocol == "holdout" else "out_of_fold"
    return [
        {
            "layer": layer,
            "task_id": used[i],
            "part": part,
            "score": float(scores[i]),
            "target": float(target),
            "prediction": float(prediction),
        }
        for i, prediction, target in zip(fit.eval_index, fit.eval_pred, fit.eval_true, strict=True)
    ]


def fitted_tasks(used: list[str], config: dict, groups: np.ndarray | None) -> list[str]:
    """The sorted ids of the tasks that shaped the saved probe, which `probe ood` leaves out
    of its statistics: under the hold-out, train (fitted the weights) and sweep (chose alpha
    and layer), the split `_fit_layer` makes; under CV every task (the probe is refitted on
    all). Not part of the run key: it follows from the config and the inputs."""
    if config["protocol"] == "cv":
        return sorted(used)
    split = ridge.split_tasks(len(used), config["heldout_fraction"], config["split_seed"], groups)
    return sorted(used[i] for i in np.concatenate([split.train, split.sweep]))


def _final_interval(fit: ridge.ProbeFit, groups: np.ndarray | None, seed: int) -> tuple:
    """The final r's 95% interval: Fisher z over tasks, or under probes.group_by a
    bootstrap over the final part's groups (their tasks are not independent)."""
    if groups is None:
        return pearson_interval(fit.eval_pred, fit.eval_true)
    return ridge.clustered_r_interval(fit.eval_pred, fit.eval_true, groups[fit.eval_index], seed)


def group_counts(config: dict, groups: np.ndarray | None) -> dict | None:
    """How many `probes.group_by` groups each part of the split holds (None: split by
    task): {"field", "total", and train/sweep/final or folds}."""
    if groups is None:
        return None
    seed = config["split_seed"]
    if config["protocol"] == "cv":
        parts = ridge.fold_parts(len(groups), config["cv_folds"], seed, groups)
        each = {"folds": [len(set(groups[part])) for part in parts]}
    else:
        split = ridge.split_tasks(len(groups), config["heldout_fraction"], seed, groups)
        each = {name: len(set(groups[rows])) for name, rows in vars(split).items()}
    return {"field": config["group_by"], "total": len(set(groups))} | each


def skipped_layer(reason: str) -> dict:
    """A layer's manifest entry when it gives no probe: r undefined, no weights saved."""
    return {
        "skipped": reason,
        "alpha": None,
        "sweep_r": None,
        "final_r": None,
        "final_n": 0,
        "final_r_ci": [None, None],
        "final_r2": None,
        "alphas": [],
        "alpha_at_edge": None,
        "pairwise_accuracy": None,
        "pairwise_ci": [None, None],
        "n_pairs": 0,
        "counts": {},
        "weight_norm": None,
    }


def best_layer(per_layer: dict[str, dict]) -> int | None:
    """The layer with the highest sweep r (the first on ties); an r of 0.0 counts, an
    undefined one (None) does not."""
    rs = {int(k): v["sweep_r"] for k, v in per_layer.items() if v["sweep_r"] is not None}
    return max(rs, key=lambda layer: rs[layer]) if rs else None


def check_heldout_flag(params) -> None:
    """--heldout-fraction given where the params file sets k-fold CV: one line, not a run
    that ignores the flag."""
    if params.probes.cv_folds is not None:
        raise SteeropsError(
            f"--heldout-fraction: not used with probes.cv_folds: {params.probes.cv_folds} from "
            "the params file (k-fold CV replaces it); set probes.cv_folds: null there"
        )


def train(params) -> tuple[Path, dict, bool]:
    """Train (or reuse) the probe run for params; returns (run dir, manifest, reused)."""
    probes = params.probes
    position = probes.position.text
    root = probes_root(params.out, tasks_name(params), probes.variant, position)
    scores_path = param_file(params, params.probes.scores, "probes.scores")
    if scores_path is None:
        raise SteeropsError("probes.scores: not set (give --scores FILE or set it)")
    problem = scores_out_of_step(scores_path)
    if problem is not None:
        # the fit that writes this file again, wherever --scores put it
        csv = shlex.quote(display_path(scores_path))
        again = f"run `steerops probe thurstonian{run_out_flag(params)} --out-csv {csv}` again"
        raise SteeropsError(f"{problem}; {again} with the comparisons it was fitted from")
    raw_scores = {t: mu for t, (mu, _) in read_scores(scores_path).items()}
    comparisons_path = param_file(params, params.probes.comparisons, "probes.comparisons")
    comparisons = read_comparisons(comparisons_path) if comparisons_path else None
    stale = comparisons_path and scores_of_other_comparisons(scores_path, comparisons_path)
    if stale:
        # outside DVC nothing fits them again: the targets would not be these comparisons'
        fit = f"--comparisons {shlex.quote(display_path(comparisons_path))}"
        fit += f" --out-csv {shlex.quote(display_path(scores_path))}"
        print(
            f"warning: {stale} (edited, or another file): run `steerops probe thurstonian"
            f"{run_out_flag(params)} {fit}` again to train on scores of them",
            file=sys.stderr,
        )
    # inputs validated before a model load
    targets, confound_report, confounds = _targets(params, raw_scores)
    known, group_of = _check_scored_tasks(params, targets, scores_path, confound_report is not None)
    if comparisons:
        _warn_unknown_compared(comparisons, known, comparisons_path)
    prompt = condition_prompt(params)

    act_dir = ensure_conditions(params, [(probes.condition, prompt)])[probes.condition]
    layers = select_layers(params, act_dir)
    config = _config(params, layers)
    # the weights the activations were extracted with: `probe ood` refuses other weights
    # under the same id (a fine-tune written over the folder)
    weights_fingerprint = (read_metadata(act_dir).get("model") or {}).get("weights")
    if weights_fingerprint is not None:
        config["weights"] = weights_fingerprint
    inputs = _inputs(params, act_dir)
    key = run_key(
        config, {k: {kk: vv for kk, vv in v.items() if kk != "path"} for k, v in inputs.items()}
    )
    existing = find_run(root, key)
    if existing is not None:
        manifest = read_json(existing / MANIFEST)
        record_invocation(root, manifest, reused=True)
        print(f"probe train: identical config and inputs already trained: reusing {existing}")
        return existing, manifest, True

    task_ids, metadata = read_task_ids(act_dir, layers)
    row_of = {t: i for i, t in enumerate(task_ids)}
    used = sorted(t for t in targets if t in row_of)
    if len(used) < 2 * ridge.MIN_PART:
        raise SteeropsError(
            f"probes.scores: only {len(used)} scored tasks have activations "
            f"in {act_dir} (task ids must match)"
        )
    rows = np.array([row_of[t] for t in used])
    y = np.array([targets[t] for t in used], dtype=np.float64)
    raw = np.array([raw_scores[t] for t in used], dtype=np.float64)
    design = one_hot_design([confounds[t] for t in used]) if confounds is not None else None
    groups = _labels(group_of, used)  # the tasks used are scored tasks of the set
    counts = {
        "scored": len(raw_scores),
        "with_activations": len(task_ids),
        "used": len(used),
        "scored_without_activations": sum(t not in row_of for t in raw_scores),
        "activations_without_score": sum(t not in raw_scores for t in task_ids),
        "dropped_by_confounds": confound_report["n_dropped"] if confound_report else 0,
    }
    if counts["scored_without_activations"] or counts["activations_without_score"]:
        # a scores file of another task set, or a window short prompts do not reach, trains
        # on the overlap: say how small it is, and why
        print(
            f"warning: probes.scores: {len(used)} tasks both scored and extracted; "
            f"{counts['activations_without_score']} of the {len(task_ids)} extracted tasks "
            f"have no score and {counts['scored_without_activations']} of the "
            f"{len(raw_scores)} scored tasks no activations"
            + _why_unextracted(params, [t for t in raw_scores if t not in row_of], known, metadata),
            file=sys.stderr,
        )
    check_varies(y, scores_path, confound_report is not None)  # the tasks with activations

    per_layer, weights, predictions = {}, {}, []
    spread = ridge.rounding_spread(
        params.variant(params.probes.variant).dtype, params.extraction.dtype
    )
    for layer in tqdm(layers, desc="probe layers", disable=None):
        x = read_layer(act_dir, layer, len(task_ids))[rows]
        # one degenerate layer (e.g. constant activations at prompt[0]) is reported, and the
        # other layers still train
        try:
            if ridge.constant_features(x, spread):
                raise ridge.DegenerateFit(f"activations are constant across the {len(y)} tasks")
            fit = _fit_layer(x, raw if design is not None else y, config, design, groups)
        except ridge.DegenerateFit as exc:
            per_layer[str(layer)] = skipped_layer(str(exc))
            continue
        pairwise = Interval(0, None, None, None)
        if comparisons:
            pairwise = ridge.pairwise_accuracy(
                {used[i]: float(p) for i, p in zip(fit.eval_index, fit.eval_pred, strict=True)},
                comparisons,
                config["split_seed"],
                None if groups is None else dict(zip(used, groups, strict=True)),
            )
        per_layer[str(layer)] = {
            "alpha": fit.alpha,
            "sweep_r": _finite(fit.sweep_r),
            "final_r": _finite(fit.final_r),
            # n and a 95% interval of final_r where the tasks it is scored on chose nothing
            # (holdout); under cv the same out-of-fold predictions chose alpha and layer
            "final_n": len(fit.eval_index),
            "final_r_ci": list(_final_interval(fit, groups, config["split_seed"]))
            if config["protocol"] == "holdout"
            else [None, None],
            # r ignores the probe's scale and offset, which `probe ood` reads its deltas in
            "final_r2": _finite(r2_score(fit.eval_true, fit.eval_pred)),
            "alphas": [
                {"alpha": a, "r": _finite(r)}
                for a, r in zip(config["alphas"], fit.alpha_r, strict=True)
            ],
            "alpha_at_edge": ridge.alpha_edge(fit.alpha, config["alphas"]),
            "pairwise_accuracy": pairwise.mean,
            "pairwise_ci": [pairwise.lo, pairwise.hi],  # bootstrap over the tasks compared
            "n_pairs": pairwise.n,
            "counts": fit.counts,
            "weight_norm": float(np.linalg.norm(fit.weight)),
        }
        weights[layer] = (fit.weight, fit.bias)
        predictions += prediction_rows(layer, fit, used, raw, config["protocol"])
    best = best_layer(per_layer)
    if best is None:
        reasons = "; ".join(f"layer {k}: {v['skipped']}" for k, v in per_layer.items())
        everywhere = all("constant" in v["skipped"] for v in per_layer.values())
        # activations constant at every layer: the position reads one token every task
        # shares (prompt[0], the template's first), not a choice of layers
        key = "probes.position" if everywhere else "probes.layers"
        raise SteeropsError(f"{key}: no layer gives a probe with a defined r ({reasons})")
    manifest = {
        "run_id": None,  # taken once the run is ready to write (`new_run_id`)
        "key": key,
        "config": config,
        "inputs": inputs,
        "counts": counts,
        "fitted_tasks": fitted_tasks(used, config, groups),
        "groups": group_counts(config, groups),
        "confounds": confound_report,
        "layers": per_layer,
        "best_layer": best,
        "best_sweep_r": per_layer[str(best)]["sweep_r"],
        "best_final_r": per_layer[str(best)]["final_r"],
        # the scores' split-half noise ceiling, from `probe thurstonian` (None: not fitted)
        "score_ceiling": fit_ceiling(scores_path),
        "system_prompt_policy": metadata.get("system_prompt_policy"),
        # the training condition's prompt (None: each task's own): `probe ood` compares it
        # with its baseline's
        "system_prompt": (metadata.get("condition") or {}).get("system_prompt"),
        "weights": "probes.safetensors",
        "note": "best_layer is chosen by sweep_r; final_r is scored on tasks that chose nothing"
        if config["protocol"] == "holdout"
        else "best_layer is chosen by sweep_r (mean fold r); final_r is the out-of-fold r of "
        "the same folds that chose alpha and layer: optimistic, not a held-out r",
    }
    tracked = {"activations_metadata": act_dir / METADATA_FILE, "scores": scores_path}
    tracked.update(
        {k: Path(v["path"]) for k, v in inputs.items() if k in ("comparisons", "confounds")}
    )
    run_id = manifest["run_id"] = new_run_id(root, key)  # its folder taken now
    try:
        run_dir = _tracked_run(
            params, root, layers, position, tracked, weights, manifest, predictions_csv(predictions)
        )
    except BaseException:
        drop_run_id(root, run_id)  # an empty folder, never a run
        raise
    return run_dir, manifest, False


def _tracked_run(
    params, root, layers, position, tracked, weights, manifest, predictions: str
) -> Path:
    """Write the probe run the manifest names (its folder taken) and log it in its MLflow
    run."""
    config, run_id, per_layer = manifest["config"], manifest["run_id"], manifest["layers"]
    best = manifest["best_layer"]
    with track(
        params,
        "probe",
        f"probe-train-{config['tasks_name']}-{position_slug(position)}",
        inputs=tracked,
        tags={"steerops.probe_run": run_id},
    ) as tracker:
        manifest["mlflow_run_id"] = tracker.run_id
        run_dir = write_run(root, run_id, weights, manifest, predictions)
        record_invocation(root, manifest, reused=False)
        tracker.log_params(
            {k: v for k, v in config.items() if k != "layers"}
            | {"layers": ",".join(map(str, layers))}
        )
        protocol = config["protocol"]  # out-of-fold figures are not logged as held-out ones
        for layer in layers:
            row = per_layer[str(layer)]
            tracker.log_metrics(
                {
                    metric_name(k, protocol): row[k]
                    for k in ("sweep_r", "final_r", "pairwise_accuracy")
                },
                step=layer,
            )
        tracker.log_metrics(
            {
                "best_layer": best,
                metric_name("best_final_r", protocol): manifest["best_final_r"],
                "best_sweep_r": manifest["best_sweep_r"],
            }
        )
        tracker.log_artifact(run_dir / MANIFEST, "probe")
        tracker.log_artifact(run_dir / PREDICTIONS, "probe")
        tracker.log_artifact(root / "metrics.json", "probe")
    return run_dir
