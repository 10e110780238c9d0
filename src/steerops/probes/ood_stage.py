"""`steerops probe ood`: probe deltas under system-prompt conditions vs behavioural deltas.

Activations for the baseline and every condition come from one model load (finished
conditions are skipped), at the probe's layer only. The baseline's system prompt is taken
from the conditions file, where it must be explicit (`null` keeps each task's own system
prompt), and the policy the extractor recorded is written into ood.json beside the
behavioural baseline id, so a reader can check that the two baselines match.

The statistics use the tasks the probe was neither fitted nor selected on (`probes.ood.tasks:
heldout`, the default; the run's manifest records `fitted_tasks`), or every task (`all`:
optimistic, ood.md says so); ood.json's `tasks` block says how many were used and left out.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from steerops.cli import run_out_flag
from steerops.errors import SteeropsError
from steerops.extract.conditions import read_conditions
from steerops.io import atomic_folder, check_replaceable, write_json, write_text
from steerops.probes.activations import ensure_conditions, load_condition, tasks_name, weights_now
from steerops.probes.data import read_rates
from steerops.probes.ood import analyse
from steerops.probes.ood_report import markdown, scatter
from steerops.probes.store import (
    OOD_FILES,
    load_probe,
    ood_dir,
    probes_root,
    resolve_run,
    runs_dir,
)
from steerops.tracking import track


def _check_probe_matches(params, manifest: dict, run_dir: Path, train_flags: str) -> None:
    config, probes = manifest["config"], params.probes
    wanted = {
        "variant": probes.variant,
        "component": probes.component,
        "position": probes.position.text,
    }
    # a probe of another model reads these activations as garbage (or fails on the hidden
    # size after every condition was extracted)
    spec = params.variant(probes.variant, "probes.variant")
    models = {"model": spec.id, "revision": spec.revision}
    for key, value in (wanted | models).items():
        if config.get(key) != value:
            name = f"models.{probes.variant}.{'id' if key == 'model' else key}"
            raise SteeropsError(
                f"{name if key in models else 'probes.' + key}: {value!r} but probe run "
                f"{run_dir.name} was trained with {config.get(key)!r}"
            )
    if config.get("weights") is not None and config["weights"] != weights_now(params):
        raise SteeropsError(
            f"models.{probes.variant}.id: the weights at {spec.id} are not those probe run "
            f"{run_dir.name} was trained on (they changed since): run `steerops probe train"
            f"{train_flags}` again"
        )


def _trained_under_baseline(
    manifest: dict, baseline, run_dir: Path, conditions_path: Path, train_flags: str = ""
) -> bool | None:
    """Whether the probe was trained under the baseline's system prompt (None: a run from
    before the prompt was recorded, trained under an override). Another prompt is said on
    stderr: the deltas are then measured from readings unlike any the probe was fitted on
    (and a fitted task's baseline reading is no longer in-sample, which `heldout` assumes)."""
    if "system_prompt" in manifest:
        trained = manifest["system_prompt"]
    elif manifest.get("system_prompt_policy") == "task":
        trained = None
    else:
        return None
    if trained == baseline.system_prompt:
        return True
    condition = (manifest.get("config") or {}).get("condition")
    print(
        f"warning: probe run {run_dir.name} was trained on condition {condition!r} "
        f"({_prompt_words(trained)}), but the baseline {baseline.id!r} of {conditions_path} "
        f"has {_prompt_words(baseline.system_prompt)}: every delta is measured from readings "
        f"under another prompt than the probe's, and the A/C inversions leave out the targets "
        f"it was fitted on (to match them, set probes.condition: {baseline.id}, a condition "
        f"of probes.ood.conditions, and run `steerops probe train{train_flags}` again)",
        file=sys.stderr,
    )
    return False


def _prompt_words(prompt: str | None) -> str:
    """A condition's prompt as a warning says it (None: each task keeps its own)."""
    if prompt is None:
        return "each task's own system prompt"
    return f"system prompt {json.dumps(prompt)}"


def _required(params, key: str) -> Path:
    value = getattr(params.probes.ood, key)
    if not value:
        raise SteeropsError(f"probes.ood.{key}: required (set it in params or pass a flag)")
    path = params.path(value)
    if not path.is_file():
        raise SteeropsError(f"probes.ood.{key}: file not found: {path}")
    return path


MIN_TASKS = 3  # fewest tasks a Pearson r over them means anything on


def _check_against_tasks(
    params, rates_path: Path, rates: dict, baseline_id: str, conditions, conditions_path: Path
) -> set[str]:
    """Refuse, before any extraction (a model load, then every task under every condition),
    a condition without one rate for a task of the set that the baseline also rates (a
    typo'd id), and a target that is not a task of the set; returns the set's task ids."""
    from steerops.extract.tasks import load_tasks

    tasks_file = params.path(params.probes.tasks)
    if not tasks_file.is_file():
        raise SteeropsError(f"probes.tasks: file not found: {tasks_file}")
    known = {t.task_id for t in load_tasks(tasks_file)}
    based = known & set(rates[baseline_id])
    for c in conditions:
        if not based & set(rates.get(c.id, {})):
            raise SteeropsError(
                f"{rates_path}: no rates for condition {c.id!r} on tasks of {tasks_file} "
                f"that the baseline {baseline_id!r} also has rates for"
            )
        if c.target is not None and c.target not in known:
            raise SteeropsError(
                f"{conditions_path}: condition {c.id!r}: target {c.target!r} "
                f"is not a task in {tasks_file}"
            )
    _warn_unpaired_roles(params.probes.ood.pair_roles, conditions, conditions_path)
    return known


def _warn_unpaired_roles(pair_roles: list[str], conditions, conditions_path: Path) -> None:
    """A targeted condition whose role is a pair role but for case or spaces ("a" for "A")
    pairs with no other in the A/C inversions, its pairs dropped unseen: said once. A role
    of its own (or none) is a group of its own, as the conditions file may mean it."""

    def near(role) -> bool:
        folded = str(role).strip().casefold()
        return role not in pair_roles and any(folded == r.casefold() for r in pair_roles)

    odd = [c for c in conditions if c.target is not None and c.role is not None and near(c.role)]
    if odd:
        import sys

        roles = sorted({str(c.role) for c in odd})
        print(
            f"warning: {conditions_path}: {len(odd)} targeted condition(s) (e.g. {odd[0].id!r}) "
            f"with role {', '.join(map(repr, roles))}, none of probes.ood.pair_roles "
            f"({', '.join(pair_roles)}): they are in no inversion pair",
            file=sys.stderr,
        )


def _fitted_tasks(
    params, manifest: dict, run_dir: Path, rated: set[str], train_flags: str
) -> set[str] | None:
    """The tasks the probe was fitted or selected on (None: its run predates that record).
    Under `probes.ood.tasks: heldout`, refused before any extraction: a run without the
    record, or fewer than MIN_TASKS tasks of `rated` (the set's tasks the baseline rates)
    outside it, as a probe refitted on every scored task by k-fold CV leaves."""
    recorded = manifest.get("fitted_tasks")
    fitted = None if recorded is None else set(recorded)
    if params.probes.ood.tasks == "all":
        return fitted
    if fitted is None:
        raise SteeropsError(
            f"probes.ood.tasks: heldout, but probe run {run_dir.name} predates the record of "
            "the tasks it was fitted on: set probes.ood.tasks: all (optimistic: the figures "
            f"then include them) or delete {run_dir} and run `steerops probe train"
            f"{train_flags}` again"
        )
    unseen = len(rated - fitted)
    if unseen < MIN_TASKS:
        protocol = manifest["config"].get("protocol", "holdout")
        fix = (
            "train the probe with the hold-out (probes.cv_folds: null), which keeps tasks unseen"
            if protocol == "cv"
            else "rate more of the task set's tasks in probes.ood.rates"
        )
        raise SteeropsError(
            f"probes.ood.tasks: heldout, but only {unseen} rated tasks were not fitted by "
            f"probe run {run_dir.name} ({protocol}: {len(fitted)} fitted tasks; "
            f"{MIN_TASKS} needed): {fix}, or set probes.ood.tasks: all (optimistic)"
        )
    return fitted


def _evaluated(tasks: list[str], fitted: set[str] | None, selection: str) -> np.ndarray:
    """Mask over `tasks` of those the statistics use: all, or the unfitted (heldout)."""
    if selection == "all":
        return np.ones(len(tasks), dtype=bool)
    evaluated = np.array([t not in fitted for t in tasks], dtype=bool)
    if evaluated.sum() < MIN_TASKS:
        raise SteeropsError(
            f"probes.ood.tasks: heldout, but only {int(evaluated.sum())} of the {len(tasks)} "
            "tasks with activations in every condition were not fitted by the probe "
            f"({MIN_TASKS} needed): set probes.ood.tasks: all (optimistic)"
        )
    return evaluated


def _task_counts(
    tasks: list[str], evaluated: np.ndarray, fitted: set[str] | None, selection: str
) -> dict:
    """ood.json's record of the tasks the statistics used and the fitted ones left out."""
    used = [t for t, keep in zip(tasks, evaluated, strict=True) if keep]
    return {
        "selection": selection,
        "n_used": len(used),
        "n_with_activations": len(tasks),
        "n_fitted_left_out": len(tasks) - len(used),
        # fitted tasks among those used: 0 under heldout; None where the run has no record
        "n_fitted_used": None if fitted is None else sum(t in fitted for t in used),
    }


def run_ood(
    params, out_dir: Path | None = None, train_flags: str | None = None
) -> tuple[Path, dict]:
    """`train_flags`: what a `steerops probe train` an error suggests needs (default: the
    params file and run folder, `run_out_flag`)."""
    train_flags = run_out_flag(params) if train_flags is None else train_flags
    ood = params.probes.ood
    conditions_path, rates_path = _required(params, "conditions"), _required(params, "rates")
    baseline, conditions = read_conditions(conditions_path)
    rates = read_rates(rates_path)
    if baseline.id not in rates:
        raise SteeropsError(f"{rates_path}: no rates for the baseline condition {baseline.id!r}")
    known = _check_against_tasks(
        params, rates_path, rates, baseline.id, conditions, conditions_path
    )
    root = probes_root(
        params.out, tasks_name(params), params.probes.variant, params.probes.position.text
    )
    run = ood.probe_run
    if run is not None and not (runs_dir(root) / run).is_dir():
        folder = params.path(run)  # a path: a relative one from the params file's folder
        if not folder.is_dir():
            raise SteeropsError(
                f"probes.ood.probe_run: {run!r} is neither a run id under {runs_dir(root)} "
                "nor a run folder"
            )
        run = str(folder)
    run_dir = resolve_run(root, run, train_flags)
    weight, bias, layer, manifest = load_probe(run_dir, ood.layer)
    _check_probe_matches(params, manifest, run_dir, train_flags)
    same_prompt = _trained_under_baseline(manifest, baseline, run_dir, conditions_path, train_flags)
    fitted = _fitted_tasks(params, manifest, run_dir, known & set(rates[baseline.id]), train_flags)
    given = out_dir is not None
    out_dir = out_dir or ood_dir(
        params.out,
        tasks_name(params),
        params.probes.variant,
        params.probes.position.text,
        conditions_path.stem,
    )
    # before every condition is extracted, not after
    what = "--ood-out" if given else "probe ood's output folder"
    check_replaceable(out_dir, OOD_FILES, what, "probe ood")

    wanted = [(baseline.id, baseline.system_prompt)]
    wanted += [(c.id, c.system_prompt) for c in conditions]
    dirs = ensure_conditions(params, wanted, layers=[layer], extract_root=params.out / "ood")
    preds, policies = {}, {}
    for cid, folder in dirs.items():
        task_ids, acts, metadata = load_condition(folder, [layer])
        preds[cid] = dict(zip(task_ids, acts[layer] @ weight + bias, strict=True))
        policies[cid] = metadata.get("system_prompt_policy")
    tasks = [t for t in preds[baseline.id] if all(t in p for p in preds.values())]
    if len(tasks) < 3:
        raise SteeropsError(f"only {len(tasks)} tasks have activations in every condition")
    known = set(tasks)
    for c in conditions:
        if c.target is not None and c.target not in known:
            raise SteeropsError(
                f"{conditions_path}: condition {c.id!r}: target {c.target!r} "
                "is not a task with activations"
            )
    base_pred = np.array([preds[baseline.id][t] for t in tasks])
    base_rate = rates[baseline.id]
    probe_delta, behaviour_delta = {}, {}
    for c in conditions:
        probe_delta[c.id] = np.array([preds[c.id][t] for t in tasks]) - base_pred
        rate = rates.get(c.id, {})
        behaviour_delta[c.id] = np.array(
            [rate[t] - base_rate[t] if t in rate and t in base_rate else np.nan for t in tasks]
        )
    missing = [c.id for c in conditions if not np.isfinite(behaviour_delta[c.id]).any()]
    if missing:
        raise SteeropsError(f"{rates_path}: no rates for condition {missing[0]!r}")
    evaluated = _evaluated(tasks, fitted, ood.tasks)

    seed = params.seed
    roles = (ood.pair_roles[0], ood.pair_roles[1])
    result = {
        "probe": {
            "run_id": manifest["run_id"],
            "run_dir": str(run_dir),
            "layer": layer,
            "alpha": manifest["layers"][str(layer)]["alpha"],
            "final_r": manifest["layers"][str(layer)]["final_r"],
            "final_r_ci": manifest["layers"][str(layer)].get("final_r_ci", [None, None]),
            "final_n": manifest["layers"][str(layer)].get("final_n"),
            "protocol": manifest["config"].get("protocol", "holdout"),
        },
        "baseline": {
            "id": baseline.id,
            "system_prompt": baseline.system_prompt,
            "system_prompt_policy": policies[baseline.id],
            "behaviour_baseline": baseline.id,
            # whether the probe was trained under this prompt (None: its run does not say)
            "probe_trained_under_it": same_prompt,
        },
        "system_prompt_policies": policies,
        "n_tasks": int(evaluated.sum()),  # the tasks the statistics use
        "tasks": _task_counts(tasks, evaluated, fitted, ood.tasks),
        "permutations": ood.permutations,
        "seed": seed,
        "top_k": ood.top_k,
        "inputs": {"conditions": str(conditions_path), "rates": str(rates_path)},
        **analyse(
            tasks,
            conditions,
            probe_delta,
            behaviour_delta,
            ood.permutations,
            seed,
            ood.top_k,
            roles,
            evaluated,
            fitted,
            exclude_fitted=ood.tasks == "heldout",
            fitted_in_pairs=same_prompt is True,
        ),
    }
    _write_outputs(
        out_dir, result, conditions, tasks, probe_delta, behaviour_delta, what, evaluated
    )
    with track(
        params,
        "probe-ood",
        f"probe-ood-{conditions_path.stem}",
        inputs={"conditions": conditions_path, "rates": rates_path},
        tags={"steerops.probe_run": manifest["run_id"]},
    ) as tracker:
        tracker.log_params(
            {
                "probe_run": manifest["run_id"],
                "layer": layer,
                "permutations": ood.permutations,
                "top_k": ood.top_k,
                "tasks": ood.tasks,
                "baseline": baseline.id,
                "baseline_policy": policies[baseline.id],
            }
        )
        for version, block in result["per_version"].items():
            tracker.log_metrics(
                {
                    f"{version}.{k}": block[k]
                    for k in ("pearson", "pearson_within", "spearman", "p_perm", "sign_agreement")
                }
            )
        tracker.log_metrics({"inversion_rate": result["pairs"]["rate"]})
        for name in OOD_FILES:
            tracker.log_artifact(out_dir / name, "ood")
    return out_dir, result


def _write_outputs(
    out_dir: Path,
    result: dict,
    conditions,
    tasks: list[str],
    probe_delta: dict,
    behaviour_delta: dict,
    what: str = "--ood-out",
    evaluated: np.ndarray | None = None,
) -> None:
    """ood.json, ood.md and the scatter, whose dots are the tasks the statistics use
    (`evaluated`; None: all) and whose crosses are every target (faint: one the statistics
    leave out)."""
    index = {t: i for i, t in enumerate(tasks)}
    evaluated = np.ones(len(tasks), dtype=bool) if evaluated is None else evaluated
    points, targets = {}, {}
    for version in result["per_version"]:
        chosen = [c for c in conditions if c.version == version]
        x = np.concatenate([probe_delta[c.id] for c in chosen])
        y = np.concatenate([behaviour_delta[c.id] for c in chosen])
        keep = np.isfinite(y) & np.tile(evaluated, len(chosen))
        points[version] = (x[keep], y[keep])
        hits = [
            (
                probe_delta[c.id][index[c.target]],
                behaviour_delta[c.id][index[c.target]],
                not evaluated[index[c.target]],  # fitted: left out of the statistics
            )
            for c in chosen
            if c.target in index
        ]
        targets[version] = tuple(np.array([h[k] for h in hits]) for k in range(3))
    # the three are one set: built aside, in place together, or the last run's stay (checked
    # again: the folder may have changed while the conditions were extracted)
    check_replaceable(out_dir, OOD_FILES, what, "probe ood")
    with atomic_folder(out_dir) as staging:
        write_json(staging / "ood.json", result)
        write_text(staging / "ood.md", markdown(result))
        scatter(staging / "ood_scatter.png", points, targets, result["per_version"])
