"""`steerops probe`: preference probes on task activations.

    steerops probe thurstonian [--comparisons comparisons.jsonl] [--out-csv scores.csv]
    steerops probe train [--scores scores.csv] [--layers 5-20] [--cv-folds 5]
    steerops probe ood [--conditions conditions.json] [--rates rates.csv] [--ood-tasks all]
    steerops probe toy-data [--toy data/toy]
    steerops probe inputs

`inputs` writes <out>/probe_inputs.json, the md5 of the confounds file when params name
one: DVC cannot list an optional file among a stage's dependencies, so `probe_train`
depends on this record instead, which DVC writes again on every repro (like `models`).

`train` and `ood` extract missing task activations themselves (one model load); every
`train` invocation writes a new run under <out>/probes/<tasks>/<variant>/<position>/ (or
reuses a finished run with identical config and inputs) and never touches earlier runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from steerops.cli import (
    abs_path,
    add_common,
    flags,
    given_flags_text,
    load_params_for,
    no_flag,
    overrides_from,
    params_flag,
    run_file,
    run_or_path,
    run_out_flag,
    stage_parser,
)
from steerops.errors import SteeropsError
from steerops.io import check_folder_target, check_replaceable

# the params keys that select a probe run's folder, which `train` and `ood` share
SELECTION_KEYS = (
    "probes.tasks",
    "probes.tasks_name",
    "probes.variant",
    "probes.position",
    "probes.component",
)


def _selection_flags(parser: argparse.ArgumentParser) -> None:
    add_common(parser)
    flags(parser, "--tasks=probes.tasks", type=abs_path)
    flags(parser, "probes.tasks_name probes.variant probes.position probes.component")


def register(subparsers) -> None:
    parser = stage_parser(subparsers, "probe", __doc__, common=False)
    sub = parser.add_subparsers(dest="probe_command", metavar="ACTION", required=True)

    train = sub.add_parser(
        "train",
        help="ridge probes per layer (alpha sweep; held-out or out-of-fold r)",
        description="Ridge probes of the task utilities on task activations, per layer: "
        "alpha and layer chosen by Pearson r on a sweep split of the tasks, scored once on "
        "a final split neither saw (--cv-folds: out-of-fold r over k folds instead, no "
        "held-out r). Writes a new run under "
        "<out>/probes/<tasks>/<variant>/<position slug>/runs/<id>/ (manifest.json, "
        "probes.safetensors), its metrics.json beside runs/, and metrics/probe_train.json, "
        "or reuses a finished run of identical config and inputs.",
    )
    _selection_flags(train)
    flags(train, "probes.scores probes.comparisons probes.confounds", type=abs_path)
    flags(
        train,
        "probes.layers probes.condition probes.alphas probes.heldout_fraction "
        "probes.cv_folds probes.group_by probes.split_seed",
    )
    no_flag(train, "--no-standardize", "probes.standardize", "ridge on raw activations")
    train.set_defaults(func=run_train)

    thurstonian = sub.add_parser(
        "thurstonian",
        help="fit utilities from pairwise choices",
        description="Fit a Thurstonian utility (mu, sigma) per task from pairwise choices; "
        "writes the scores CSV (--out-csv) and a .fit.json summary beside it.",
    )
    # a fit of the comparisons alone: no model, no judge
    add_common(
        thurstonian,
        out_help="outputs root for this run instead of paths.out, with its metrics/ and, "
        "unless tracking.uri or MLFLOW_TRACKING_URI says otherwise, its MLflow store",
        device=False,
    )
    flags(
        thurstonian,
        "probes.comparisons",
        type=abs_path,
        metavar="JSONL",
        help="rows {task_a, task_b, winner} to fit (params: probes.comparisons)",
    )
    flags(
        thurstonian,
        "--out-csv=probes.scores",
        type=abs_path,
        metavar="CSV",
        help="where to write task_id,mu,sigma (+ a .fit.json summary) (params: probes.scores)",
    )
    flags(thurstonian, "probes.prior_mu probes.prior_log_sigma")
    thurstonian.set_defaults(func=run_thurstonian)

    ood = sub.add_parser(
        "ood",
        help="probe deltas vs behavioural deltas under conditions",
        description="A trained probe's score shift under each condition (a system prompt) "
        "against the behavioural shift in the rates file, with permutation tests; writes "
        "ood.json, ood.md and ood_scatter.png (--ood-out) and metrics/probe_ood.json.",
    )
    _selection_flags(ood)
    flags(ood, "probes.ood.conditions probes.ood.rates", type=abs_path)
    flags(ood, "probes.ood.probe_run", type=run_or_path, metavar="RUN")
    flags(ood, "probes.ood.layer probes.ood.permutations probes.ood.top_k")
    flags(ood, "--ood-tasks=probes.ood.tasks")
    ood.add_argument(
        "--ood-out",
        type=abs_path,
        metavar="DIR",
        default=None,
        help="output folder (default: <out>/ood/<tasks>/<variant>/<position>/"
        "<conditions file stem>)",
    )
    ood.set_defaults(func=run_ood)

    toy = sub.add_parser(
        "toy-data",
        help="write the toy world's probe tasks, scores, comparisons, conditions and rates",
        description="Write the toy world's probe inputs (tasks, scores, comparisons, "
        "conditions and rates) into its folder (--toy).",
    )
    params_flag(toy)
    flags(toy, "--toy=paths.toy", type=abs_path, metavar="DIR")
    flags(toy, "seed")
    toy.set_defaults(func=run_toy_data)

    # imported here, not at the top: a module imported at the top counts, in the pipeline's
    # dependency check, as read by every action, and only `inputs` reads probes.confounds
    from steerops.probes import inputs as probe_inputs

    inputs = sub.add_parser(
        "inputs",
        help="write <out>/probe_inputs.json: the confounds file's md5 (for DVC)",
        description="Write <out>/probe_inputs.json, the md5 of the confounds file params "
        "name (DVC cannot list an optional file among a stage's dependencies).",
    )
    params_flag(inputs)
    inputs.set_defaults(func=probe_inputs.run)


def _scores_in_run(params, args: argparse.Namespace, fitting: bool):
    """With --out DIR the run's scores live in DIR: `thurstonian` fits them there rather than
    over the params' file, and `train` reads the ones fitted there (a --scores flag wins)."""
    scores = run_file(params, args, "probes.scores", "probe_scores/scores.csv", writes=fitting)
    if scores is not None and (fitting or scores.is_file()):
        params.probes.scores = str(scores)
    elif scores is not None:  # which scores a run of its own trains on is no guess
        print(
            f"probe train: no scores fitted in this run ({scores}): training on probes.scores, "
            f"{params.path(params.probes.scores)}",
            file=sys.stderr,
        )
    return params


def run_train(args: argparse.Namespace) -> None:
    from steerops.probes.data import fit_ceiling
    from steerops.probes.train import check_heldout_flag, train

    given = overrides_from(args)
    if "probes.cv_folds" in given and "probes.heldout_fraction" in given:
        raise SteeropsError("--heldout-fraction: not used with --cv-folds (k-fold CV replaces it)")
    from steerops.probes.summary import write_train_summary

    params = _scores_in_run(load_params_for(args), args, fitting=False)
    if "probes.heldout_fraction" in given:
        check_heldout_flag(params)
    run_dir, manifest, reused = train(params)
    write_train_summary(params)
    best = manifest["best_layer"]
    layer = manifest["layers"][str(best)]
    print(f"probe run {'reused' if reused else 'written'}: {run_dir}")
    low, high = layer.get("final_r_ci") or (None, None)
    interval = "" if low is None else f" [{low:.3f}, {high:.3f}]"
    held_out = manifest["config"]["protocol"] == "holdout"
    if low is None and held_out and manifest.get("groups") and manifest["best_final_r"] is not None:
        interval = " (no interval: fewer than 4 groups in the final part)"
    n = f" (n {layer['final_n']})" if layer.get("final_n") else ""
    # under CV the same out-of-fold predictions chose alpha and layer: not a held-out r
    cv = manifest["config"]["protocol"] == "cv"
    final = "out-of-fold r (optimistic: it chose alpha and layer)" if cv else "final r"
    final_r = manifest["best_final_r"]
    # None: the layer's predictions on the tasks it is scored on do not vary (r undefined)
    scored = "undefined (constant predictions)" if final_r is None else f"{final_r:.3f}"
    r2 = layer.get("final_r2")  # None in runs written before it was recorded
    r2 = "" if r2 is None else f", R2 {r2:.3f}"
    print(
        f"  best layer {best} (alpha {layer['alpha']:g}): sweep r "
        f"{manifest['best_sweep_r']:.3f}, {final} {scored}{interval}{n}{r2}"
    )
    ceiling = manifest.get("score_ceiling") or fit_ceiling(params.path(params.probes.scores))
    if said := ceiling_line(
        ceiling, final.split(" (")[0], final_r, bool(manifest.get("confounds"))
    ):
        print(f"  {said}")
    groups = manifest.get("groups")
    if groups:  # what the held-out figures generalise over
        where = (
            f"{groups['final']} groups in the final part, none in train or sweep"
            if "final" in groups
            else f"folds of {', '.join(map(str, groups['folds']))} groups"
        )
        print(f"  split by probes.group_by {groups['field']!r}: {groups['total']} groups, {where}")
    confounds = manifest.get("confounds")
    if confounds:  # the r is of what the confounds leave, not of the scores
        print(
            f"  targets: the scores less what probes.confounds ({', '.join(confounds['columns'])}) "
            f"explain (R2 {confounds['r2']:.2f}, fitted over all {confounds['n_used']} "
            "tasks; each probe's own fit uses its training tasks only); the r above is "
            "against those, the pairwise accuracy below against the raw choices"
        )
    if layer.get("pairwise_accuracy") is not None:
        low, high = layer.get("pairwise_ci") or (None, None)
        interval = "" if low is None or cv else f" [{low:.3f}, {high:.3f}]"
        which = (
            "out-of-fold pairwise accuracy (optimistic, as its r)" if cv else "pairwise accuracy"
        )
        print(
            f"  {which} {layer['pairwise_accuracy']:.3f}{interval} "
            f"(n {layer['n_pairs']} comparisons of evaluated tasks; chance 0.5)"
        )
    edge = layer.get("alpha_at_edge")
    if edge:
        way = "below" if edge == "lowest" else "above"
        print(
            f"  best alpha {layer['alpha']:g} is the {edge} in probes.alphas: the optimum may "
            f"lie {way} the grid (extend probes.alphas {way} it)"
        )
    for name, row in manifest["layers"].items():
        if row.get("skipped"):
            print(
                f"  layer {name} skipped (r undefined, not a best-layer candidate): "
                + row["skipped"]
            )


def ceiling_line(ceiling: dict | None, name: str, r: float | None, confounded: bool) -> str:
    """The scores' noise ceiling beside a probe's r (`name`: "final r", "out-of-fold r"),
    with the share of it the r reaches; "" without one. Under confounds the r is of what
    they leave, whose ceiling is lower and unmeasured: no share is given."""
    if not ceiling or ceiling.get("ceiling") is None:
        return ""
    low, high = ceiling["ceiling_ci"]
    said = (
        f"the scores' noise ceiling {ceiling['ceiling']:.3f} [{low:.3f}, {high:.3f}]: about "
        f"the largest r a probe of them can expect (`probe thurstonian`'s split-half, over "
        f"{_tasks_of(ceiling)})"
    )
    if confounded:
        return said + (
            f"; of the raw scores: the {name} is against what probes.confounds leave of them, "
            "whose ceiling is lower (not measured), so it is no share of this one"
        )
    if r is None or not ceiling["ceiling"] > 0:
        return said
    return said + f"; the {name} is {r / ceiling['ceiling']:.0%} of it"


def _tasks_of(halves: dict) -> str:
    """ "280 of 300 tasks": the tasks both halves' fits hold, of all the comparisons name (an
    older record: "280 tasks")."""
    total = halves.get("tasks_total")
    return f"{halves['n_tasks']} {'' if total is None else f'of {total} '}tasks"


def ceiling_words(halves: dict) -> str:
    """The scores' noise ceiling (`thurstonian.split_half`) in one line."""
    if halves.get("ceiling") is None:
        return f"noise ceiling - ({halves.get('why')})"
    low, high = halves["ceiling_ci"]
    r_low, r_high = halves["r_ci"]
    return (
        f"noise ceiling {halves['ceiling']:.3f} [{low:.3f}, {high:.3f}]: about the largest r "
        f"a probe of these scores can expect (two halves of the comparisons, each fitted "
        f"alone, agree at r {halves['r']:.3f} [{r_low:.3f}, {r_high:.3f}] over "
        f"{_tasks_of(halves)}; Spearman-Brown reliability {halves['reliability']:.3f})"
    )


def _check_compared_tasks(comparisons, source: Path, tasks_file: Path, given: bool) -> None:
    """A comparison naming a task the tasks file lacks (a typo'd id) would become a silent
    extra utility that `probe train` can never match to activations: refuse it here. When
    none of them is there, the comparisons are of another task set: refused against a tasks
    file the params name (`given`), not against the default one (the toy's)."""
    from steerops.io import iter_jsonl
    from steerops.probes.data import unknown_tasks

    # the ids only (a light read: the tasks' prompts are `probe train`'s to check, and the
    # extractor's reader would make this stage depend on all extraction code)
    known = {str(row.get("task_id")) for _, row in iter_jsonl(tasks_file) if isinstance(row, dict)}
    unknown = unknown_tasks(comparisons, known)
    if not unknown:
        return
    compared = {t for a, b, _ in comparisons for t in (a, b)}
    if len(unknown) == len(compared):
        if given:
            raise SteeropsError(
                f"{source}: none of its {len(compared)} compared tasks is in probes.tasks "
                f"({tasks_file}); are the comparisons of another task set?"
            )
        return
    first, count = next(iter(unknown.items()))
    more = f" and {len(unknown) - 1} more are" if len(unknown) > 1 else " is"
    raise SteeropsError(
        f"{source}: task {first!r} ({count} comparison{'s' if count > 1 else ''}){more} "
        f"not in probes.tasks ({tasks_file})"
    )


def run_thurstonian(args: argparse.Namespace) -> None:
    import sys

    from steerops.io import check_file_target, file_md5, text_md5, write_json, write_text
    from steerops.probes.data import (
        fit_summary_path,
        param_file,
        read_comparisons,
        scores_out_of_step,
        scores_text,
    )
    from steerops.probes.thurstonian import fit_thurstonian, heldout_accuracy, split_half
    from steerops.tracking import track

    params = _scores_in_run(load_params_for(args), args, fitting=True)
    if not params.probes.comparisons:
        raise SteeropsError("probes.comparisons: not set (give --comparisons FILE or set it)")
    source = param_file(params, params.probes.comparisons, "probes.comparisons")
    out = params.path(params.probes.scores)
    check_file_target(out, "--out-csv (probes.scores)")  # before the fit and its summary
    tasks = [params.path(params.probes.tasks)] if params.probes.tasks else []
    _check_scores_target(out, [source, *tasks])
    comparisons = read_comparisons(source)
    # named in the params file or by a flag, whatever its spelling (the main job names the
    # default's path); only the unnamed default is the toy's, not the comparisons' own set
    given = params.named("probes.tasks")
    if tasks and tasks[0].is_file():
        _check_compared_tasks(comparisons, source, tasks[0], given)
    elif tasks and given:
        # the fit needs no tasks file (the default names the toy's), so not an error; but a
        # typo in one given is seen
        print(
            f"warning: probes.tasks: file not found: {tasks[0]}; the compared task ids are "
            "not checked against the task set",
            file=sys.stderr,
        )
    priors = (params.probes.prior_mu, params.probes.prior_log_sigma)
    max_iter = params.probes.thurstonian_max_iter
    try:
        fit = fit_thurstonian(comparisons, *priors, max_iter=max_iter)
    except SteeropsError as exc:
        raise SteeropsError(f"{source}: {exc}") from None
    if not fit.converged:  # scores of an unfinished optimisation: keep the earlier ones
        raise SteeropsError(
            f"{source}: the Thurstonian fit did not converge ({fit.message}); {out} left as "
            "it was; raise probes.thurstonian_max_iter or change the priors probes.prior_mu / "
            "probes.prior_log_sigma (smaller is tighter)"
        )
    # in-sample accuracy flatters sparse comparisons; the held-out one is the fit's quality
    held = heldout_accuracy(comparisons, *priors, seed=params.seed, max_iter=max_iter)
    # how far the scores are from noise: the largest r a probe of them can expect
    halves = split_half(comparisons, *priors, seed=params.seed, max_iter=max_iter)
    problem = scores_out_of_step(out)
    if problem is not None:
        print(f"{problem}: writing both again", file=sys.stderr)
    text = scores_text(fit.scores())
    summary = {
        "comparisons": str(source),
        # `probe train` warns when probes.comparisons no longer holds what these came from
        "comparisons_md5": file_md5(source),
        "n_tasks": len(fit.tasks),
        "n_comparisons": fit.n_comparisons,
        "nll_per_comparison": fit.nll,
        "in_sample_accuracy": fit.accuracy,
        "heldout_accuracy": held["accuracy"],
        "heldout_accuracy_ci": held["ci"],
        "heldout_n": held["n"],
        "heldout_fraction": held["fraction"],
        # None: no held-out fit ran (too few comparisons to hold any out)
        "heldout_converged": None if held["n"] == 0 else not held.get("unconverged"),
        "chance_accuracy": 0.5,
        "split_half": halves,
        "converged": fit.converged,
        "prior_mu": params.probes.prior_mu,
        "prior_log_sigma": params.probes.prior_log_sigma,
        "max_iter": max_iter,
        "seed": params.seed,
        "scores_md5": text_md5(text),  # `probe train` refuses a CSV that differs
    }
    with track(
        params,
        "probe-thurstonian",
        f"thurstonian-{out.stem}",
        inputs={"comparisons": source},
    ) as tracker:
        # the summary first: interrupted between the two writes, the scores' MD5 in it no
        # longer matches the CSV, which `probe train` refuses and a rerun writes again
        write_json(fit_summary_path(out), summary)
        write_text(out, text)
        tracker.log_params(
            {"prior_mu": params.probes.prior_mu, "prior_log_sigma": params.probes.prior_log_sigma}
        )
        if halves["ceiling"] is not None:
            tracker.log_metrics({"split_half_r": halves["r"], "noise_ceiling": halves["ceiling"]})
        tracker.log_metrics(
            {
                k: summary[k]
                for k in (
                    "nll_per_comparison",
                    "in_sample_accuracy",
                    "heldout_accuracy",
                    "n_tasks",
                    "n_comparisons",
                )
            }
        )
        tracker.log_artifact(out, "thurstonian")
    if held.get("unconverged"):
        quality = (
            f"held-out accuracy - (the fit without the held-out comparisons did not converge: "
            f"{held['unconverged']}; raise probes.thurstonian_max_iter)"
        )
    elif held["accuracy"] is None:
        quality = "held-out accuracy - (too few comparisons to hold any out)"
    else:
        low, high = held["ci"]
        quality = (
            f"held-out accuracy {held['accuracy']:.3f} [{low:.3f}, {high:.3f}] "
            f"(n {held['n']} comparisons, chance 0.5)"
        )
    print(
        f"wrote {out}: {fit.n_comparisons} comparisons of {len(fit.tasks)} tasks; {quality}; "
        f"in-sample accuracy {fit.accuracy:.3f}"
    )
    print(f"  {ceiling_words(halves)}")


def _check_scores_target(out: Path, inputs: list[Path]) -> None:
    """The fit writes `out` and its .fit.json: never over an input, nor over a file that is
    not scores an earlier fit wrote (its .fit.json beside it)."""
    from steerops.probes.data import fit_summary_path

    if any(out.resolve() == p.resolve() for p in inputs):
        raise SteeropsError(f"--out-csv (probes.scores): {out} is an input of the fit")
    if out.exists() and not fit_summary_path(out).is_file():
        raise SteeropsError(
            f"--out-csv (probes.scores): {out} exists and is not scores `probe thurstonian` "
            f"wrote (no {fit_summary_path(out).name} beside it): give a new path or remove it"
        )


def run_ood(args: argparse.Namespace) -> None:
    from steerops.probes.ood import fitted_compared
    from steerops.probes.ood_report import tasks_line
    from steerops.probes.ood_stage import run_ood as run
    from steerops.probes.store import OOD_FILES
    from steerops.probes.summary import write_ood_summary

    params = load_params_for(args)
    if args.ood_out:  # checked before every condition is extracted, not after
        check_folder_target(Path(args.ood_out), "--ood-out")
        check_replaceable(Path(args.ood_out), OOD_FILES, "--ood-out", "probe ood")
    # a `probe train` an error suggests must train the run this command selects
    train_flags = run_out_flag(params) + given_flags_text(args, SELECTION_KEYS)
    out_dir, result = run(params, Path(args.ood_out) if args.ood_out else None, train_flags)
    write_ood_summary(params)
    print(f"OOD analysis written to {out_dir}")
    print(f"  {tasks_line(result)}")

    def fmt(value) -> str:
        return "-" if value is None else f"{value:.3g}"

    for version, block in result["per_version"].items():
        # the pooled r also counts the conditions' mean shifts (2-3 points with 2-3
        # conditions); the within-condition r is what the permutation p tests
        def ci(key: str, block=block) -> str:
            low, high = block[f"{key}_ci"]
            return fmt(block[key]) + ("" if low is None else f" [{low:.3g}, {high:.3g}]")

        print(
            f"  {version}: within-condition r {ci('pearson_within')}, "
            f"p {fmt(block['p_perm'])} ({block['n_tasks']} tasks x {block['n_conditions']} "
            f"conditions); pooled pearson {ci('pearson')}, spearman {ci('spearman')}, "
            f"sign agreement {ci('sign_agreement')} ({block['n_pairs']} pairs)"
        )
    pairs = result["pairs"]
    low, high = pairs["rate_ci"]
    rate = "" if low is None else f", rate {pairs['rate']:.3g} [{low:.3g}, {high:.3g}] (95% Wilson)"
    roles = "/".join(pairs.get("roles") or ("A", "C"))
    left_out = pairs.get("fitted_left_out") or 0
    if pairs["n"] == 0:  # "0 of 0" reads as "no inversions"
        why = (
            f" left: {left_out} target{'s' if left_out > 1 else ''} the probe was fitted on "
            "left out (trained under another prompt than the baseline's)"
            if left_out
            else ": no target has both roles scored with a probe and a behaviour change"
        )
        print(f"  {roles} inversions: no comparable pair{why}")
    else:
        # A minus C reads no baseline, so targets the probe was fitted on count (flagged)
        fitted = fitted_compared(pairs)
        among = f"; {fitted} fitted target{'s' if fitted > 1 else ''} among them" if fitted else ""
        print(f"  {roles} inversions: {pairs['inversions']} of {pairs['n']}{rate}{among}")


def run_toy_data(args: argparse.Namespace) -> None:
    from steerops.probes.toy_data import write_toy_probe_data

    params = load_params_for(args)
    folder = write_toy_probe_data(params.path(params.paths.toy), seed=params.seed)
    print(f"toy probe data written to {os.path.normpath(folder)}")  # no "a/../b"
