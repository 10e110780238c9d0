"""`steerops steer`: sweep layers x coefficients of vector methods and score them.

The unsteered baseline is generated once per settings; every layer x coefficient config is
then generated in batches of up to steering.max_batch_rows rows, each row carrying its own
steering: by the engine's static-cache decode loop (steering.loop: static, the default;
finished rows' slots are refilled) or by HF `generate` (loop: hf, the reference), and
judged. Without --method/--position, every cell of steering.methods x steering.positions is
swept, and the configs of all cells are generated together; configs
whose vectors are identical tensors are generated once. Configs already evaluated under
identical settings are served from `results.jsonl`. Each cell's best config is chosen on a
seeded selection half of the questions and reported on the held-out half, with a 95%
interval (paired bootstrap against the baseline): "ok", "no effect", "incoherent held out",
"too few held out", "opposite effect", "needs finer coefficients", "baseline incoherent",
"trait unscored" or "held out unscored".
Writes, under
<out>/steering/<trait>/<variant>/<position slug>/<component>/<method>/: results.jsonl
(append-only log), sweep.json (the latest sweep's configs), results.csv, metrics.json and
curve.png (of those configs) and responses/, with the unsteered answers in baselines.jsonl
one folder up; and gathers every cell into metrics/steer.json and metrics/steer_curves.csv
(DVC metrics and plots).

Run by DVC (or with --pipeline) it writes the pipeline's outputs; run by hand it is a scratch
run: it reads the pipeline's vectors and writes everything under runs/steer-<time>/ (or
--out DIR), then prints a layer x coefficient table per cell and the MLflow run's link. A
rerun that evaluates nothing new and leaves every cell's files as they were opens no MLflow
run: the runs that evaluated those configs already hold them.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from steerops.cli import flags, load_params_for, stage_parser
from steerops.errors import SteeropsError
from steerops.specs import MethodName, Position

# The params keys the flags override (see `steerops.cli.flags`).
FLAGS = (
    "--trait=traits.names --method=steering.methods --position=steering.positions "
    "steering.component steering.layers steering.coefficients steering.coefficient_unit "
    "steering.variant steering.vector_variant steering.direction steering.subset "
    "steering.max_new_tokens steering.save_responses steering.min_coherence steering.scope "
    "steering.max_batch_rows steering.loop"
)


def register(subparsers) -> None:
    parser = stage_parser(subparsers, "steer", __doc__, scratch=True)
    flags(parser, FLAGS)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from steerops.cli import display_path
    from steerops.steering.best import note_report_behind, write_steer_summary
    from steerops.steering.configs import grid_cells
    from steerops.steering.preflight import check_grid
    from steerops.steering.runs import invocation_name
    from steerops.steering.terminal import cell_table
    from steerops.tracking import track
    from steerops.traits import trait_dir

    params = load_params_for(args)
    cfg, traits = params.steering, params.traits.names
    cells = grid_cells(cfg.methods, cfg.positions)
    # every input, layer and vector checked before the model loads and the run opens
    check_grid(params, traits, cells, cfg.layers, "steering.layers", cfg.coefficients, "steer")
    root = params.path(params.traits.root)
    questions = {
        f"{t} questions": (trait_dir(root, t) / "steering.json", "questions") for t in traits
    }
    tags = {"steerops.trait": traits[0] if len(traits) == 1 else None}
    name = invocation_name("steer", traits, cells)
    # held: logged once something is new (see steer_cells)
    with track(params, "steer", name, tags=tags, datasets=questions, held=True) as tracker:
        tracker.log_params(
            {
                "traits": traits,
                "methods": [m.name for m in cfg.methods],
                "positions": [p.text for p in cfg.positions],
                "layers": str(cfg.layers),
                "coefficients": cfg.coefficients,
                "min_coherence": cfg.min_coherence,
            }
        )
        served: dict[str, str] = {}
        for trait in traits:
            for summary in steer_cells(params, cells, trait, tracker=tracker):
                if summary["judge_served"]:
                    served[trait] = summary["judge_served"]
                print(
                    cell_table(
                        summary["title"],
                        summary["baseline"],
                        summary["results"],
                        summary["metrics"],
                        display_path(summary["dir"]),
                    )
                )
        if served:
            tracker.set_tags({"steerops.judge_served": _served_tag(served)})
        write_steer_summary(params)
    if tracker.active and not tracker.kept:
        print(
            "steerops steer: every config was served from the results logs and no output "
            "changed: no new MLflow run (the runs that evaluated them hold these results)"
        )
    elif tracker.kept or not tracker.active:
        note_report_behind(params, "steer")
    link = tracker.link()
    if link:
        print(f"MLflow run: {link}")


def steer_cells(
    params,
    cells: list[tuple[MethodName, Position]],
    trait: str,
    progress: bool = True,
    tracker=None,
) -> list[dict[str, Any]]:
    """Sweep every grid cell (method x position; layers x coefficients each) for one trait.

    The cells share the steered model, questions and judge, so one evaluator generates the
    configs of all of them together: the batches stay full and the model loads once. Each
    cell still gets its own MLflow run (nested under `tracker`'s) and output folder; a held
    `tracker` is kept only when something is generated or a cell's files change."""
    import time

    from steerops.judges.cached import CachedJudge
    from steerops.steering.best import protocol
    from steerops.steering.configs import Config, VectorSource
    from steerops.steering.evaluate import SteeringEvaluator
    from steerops.steering.runs import CELL_FILES, cell_files, folder_digests
    from steerops.steering.session import SteeringSession
    from steerops.steering.store import steering_dir
    from steerops.tracking import Tracker, input_hash_tags, model_input

    cfg = params.steering
    tracker = tracker or Tracker()
    if not cells:
        raise SteeropsError("steering.methods/steering.positions: the grid has no cells")
    if not cfg.coefficients:
        raise SteeropsError("steering.coefficients: give at least one coefficient")
    # the rows stay on disk until the cells' response files are written (`release_rows`)
    evaluator = SteeringEvaluator(SteeringSession(params, trait, progress=progress), hold_rows=True)
    protocol(params).split(evaluator.questions)  # too few questions to hold any out: fail now
    layers = evaluator.session.layers(cfg.layers, "steering.layers")
    per_cell = [
        [
            Config.single(VectorSource.of(method, position, cfg.component), layer, c)
            for layer in layers
            for c in cfg.coefficients
        ]
        for method, position in cells
    ]
    everything = [config for configs in per_cell for config in configs]
    evaluator.check(everything)  # a missing vector fails before anything is generated
    folders = [steering_dir(params.out, trait, cfg.variant, p, cfg.component, m) for m, p in cells]
    before = folder_digests(folders)
    if not evaluator.all_logged(everything):
        tracker.keep()  # new results: the run covers their generation
    if progress and any(served := evaluator.served(everything)):
        zero = any(map(evaluator.unsteered, everything))
        print(
            f"steer: {sum(served)} of {len(everything)} configs served from results logs"
            f"{' or the baseline (coefficient 0)' if zero else ''}"
            f" (scores as logged); {len(everything) - sum(served)} to generate"
        )
    started = time.time()
    results = evaluator.evaluate(everything)  # the baseline too, with the first chunk
    baseline = evaluator.baseline()
    _check_scored([baseline, *results], len(evaluator.questions))
    judge = evaluator.session.judge
    # which model an endpoint named for the answers this run scored with (`run` tags it)
    models = judge.served_summary() if isinstance(judge, CachedJudge) else None
    evaluator.session.say_judge_cost(tracker, progress)
    span = (started, time.time())  # every config was generated in this one evaluation
    alias = _aliases(evaluator, cells, layers, cfg.component)
    model_tags = input_hash_tags(params, model_input(evaluator.session.loaded.source))
    summaries, start = [], 0
    for (method, position), configs in zip(cells, per_cell, strict=True):
        cell_results = results[start : start + len(configs)]
        start += len(configs)
        summaries.append(
            _finish_cell(
                params,
                evaluator,
                method,
                position,
                layers,
                baseline,
                cell_results,
                alias.get((position.text, method.name)),
                tracker,
                span,
                model_tags,
            )
        )
    evaluator.release_rows()  # every cell's files are written
    for summary in summaries:
        summary["judge_served"] = models
    after = [summary["digest"] for summary in summaries]  # each hashed once it was written
    if after != before:
        tracker.keep()  # all served, but a cell's files changed (e.g. another min_coherence)
    elif tracker.active and not tracker.kept:
        # all served and no file changed: the runs that wrote these files hold them, unless
        # their process was killed before it had logged them (no FINISHED cell run has them)
        logged = [
            tracker.finished_run_tagged(CELL_FILES, cell_files(folder, digest))
            for folder, digest in zip(folders, after, strict=True)
            if digest
        ]
        if False in logged:
            tracker.keep()
    return summaries


def _served_tag(served: dict[str, str]) -> str:
    """The models an endpoint named, per trait: the trait goes in the value, not the tag's
    key, since MLflow refuses keys with characters a trait name may hold."""
    if len(served) == 1:
        return next(iter(served.values()))
    return "; ".join(f"{trait}: {models}" for trait, models in served.items())


def _check_scored(results: list, n_questions: int) -> None:
    """A judge that gave no usable score to any answer fails the run before a cell's files
    are rewritten: every verdict would read as if nothing steered, when nothing was
    measured. Some answers unscored get one warning line: every mean is of the rest."""
    if all(r.trait_mean is None and r.coherence_mean is None for r in results):
        raise SteeropsError(
            f"the judge scored none of the {len(results) * n_questions} answers (no number "
            "it could read): check judge.model, its prompts and judge.min_prob_mass; the "
            "cells' files are left as they were"
        )
    unscored = sum(r.n_unscored for r in results)
    if unscored:
        refused = sum(r.n_refused for r in results)
        why = f", {refused} of them not answered by the endpoint (refused, or no logprobs)"
        why = why if refused else ""
        print(
            f"warning: the judge left {unscored} of {sum(r.n for r in results)} answers "
            f"unscored{why}: every mean and delta is over the rest (n_unscored in each cell's "
            "results.csv), so a judge declining answers of one kind can hide an effect",
            file=sys.stderr,
        )


def _aliases(evaluator, cells, layers: list[int], component: str) -> dict[tuple, str]:
    """{(position, method): the method it is an alias of} among this sweep's cells."""
    from steerops.steering.best import aliases
    from steerops.steering.configs import VectorSource

    out = {}
    for position in dict.fromkeys(p for _, p in cells):
        maps = {
            method.name: {
                layer: evaluator.vector_hash(VectorSource.of(method, position, component).at(layer))
                for layer in layers
            }
            for method, p in cells
            if p == position
        }
        out.update({(position.text, m): a for m, a in aliases(maps).items()})
    return out


def _finish_cell(
    params,
    evaluator,
    method: MethodName,
    position: Position,
    layers: list[int],
    baseline,
    results: list,
    alias_of: str | None,
    tracker,
    span: tuple[float, float],
    model_tags: dict[str, str],
) -> dict[str, Any]:
    """One cell's MLflow run (with a nested run per config) and output files;
    `model_tags`: the steered weights' hash tag (hashed once for every cell)."""
    from steerops.steering.outputs import write_cell
    from steerops.steering.runs import (
        CELL_FILES,
        cell_files,
        cell_name,
        folder_digests,
        log_cell,
        log_configs,
    )
    from steerops.steering.store import steering_dir
    from steerops.tracking import input_hash_tags
    from steerops.traits import trait_dir
    from steerops.vectors.store import vectors_dir

    cfg, session = params.steering, evaluator.session
    trait = session.trait
    out_dir = steering_dir(params.out, trait, cfg.variant, position, cfg.component, method)
    inputs = {
        "vectors": vectors_dir(
            params.inputs, trait, cfg.vector_variant, position, cfg.component, method
        ),
        "trait": trait_dir(params.path(params.traits.root), trait),
    }
    tags = {
        "steerops.trait": trait,
        "steerops.variant": cfg.variant,
        "steerops.method": method.name,
        "steerops.position": position.text,
        "steerops.component": cfg.component,
    }
    name = cell_name(method, position, trait)
    with tracker.child(name, tags=tags, start=span[0]) as cell_run:
        cell_run.set_tags({**input_hash_tags(params, inputs), **model_tags})
        written = write_cell(params, evaluator, out_dir, results, alias_of)
        log_configs(cell_run, evaluator, results, span, written["rows"])
        cell = {"method": method.name, "position": position.text, "component": cfg.component}
        log_cell(cell_run, evaluator, cell, layers, written, out_dir)
        digest = folder_digests([out_dir])[0]
        cell_run.set_tags({CELL_FILES: cell_files(out_dir, digest or "")})
    return {
        "title": f"{trait} {method} {position}",
        "dir": out_dir,
        "method": method.name,
        "position": position.text,
        "metrics": written["metrics"],
        "results": results,
        "baseline": baseline,
        "digest": digest,  # the folder's content hash, its files written
    }
