"""`steerops steer`: sweep layers x coefficients of vector methods and score them.

The unsteered baseline is generated once per settings; every layer x coefficient config is
then generated in as few batched `generate` calls as memory allows (each row carries its own
steering) and judged. Without --method/--position, every cell of steering.methods x
steering.positions is swept, and the configs of all cells are generated together. Configs
already evaluated under identical settings are served from `results.jsonl`. Writes, under
<out>/steering/<trait>/<variant>/<position>/<component>/<method>/: results.jsonl
(append-only log), results.csv (this sweep, tidy), metrics.json (the best config at
coherence >= min-coherence), curve.png and responses/; and gathers every cell into
metrics/steer.json and metrics/steer_curves.csv (DVC metrics and plots).
"""

from __future__ import annotations

import argparse
from pathlib import Path
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
    "steering.max_batch_rows"
)


def register(subparsers) -> None:
    parser = stage_parser(subparsers, "steer", __doc__)
    flags(parser, FLAGS)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from steerops.steering.best import write_steer_summary
    from steerops.steering.configs import grid_cells

    params = load_params_for(args)
    cells = grid_cells(params.steering.methods, params.steering.positions)
    for trait in params.traits.names:
        for summary in steer_cells(params, cells, trait):
            _report(trait, summary)
    write_steer_summary(params)


def _report(trait: str, summary: dict[str, Any]) -> None:
    best = summary["metrics"]
    where = summary["dir"]
    if best["best_layer"] is None:
        print(
            f"{trait}: no config reached coherence >= {best['min_coherence']:g}; results in {where}"
        )
    else:
        print(
            f"{trait}: best layer {best['best_layer']} coefficient "
            f"{best['best_coefficient']:g}: trait {best['best_trait_mean']:.1f} "
            f"(delta {best['best_trait_delta']:+.1f}), coherence "
            f"{best['best_coherence']:.1f}; results in {where}"
        )


def steer_cells(
    params, cells: list[tuple[MethodName, Position]], trait: str, progress: bool = True
) -> list[dict[str, Any]]:
    """Sweep every grid cell (method x position; layers x coefficients each) for one trait.

    The cells share the steered model, questions and judge, so one evaluator generates the
    configs of all of them together: the batches stay full and the model loads once. Each
    cell still gets its own MLflow parent run and output folder."""
    from steerops.steering.configs import Config, VectorSource
    from steerops.steering.evaluate import SteeringEvaluator
    from steerops.steering.session import SteeringSession

    cfg = params.steering
    if not cells:
        raise SteeropsError("steering.methods/steering.positions: the grid has no cells")
    if not cfg.coefficients:
        raise SteeropsError("steering.coefficients: give at least one coefficient")
    evaluator = SteeringEvaluator(SteeringSession(params, trait, progress=progress))
    layers = evaluator.session.layers(cfg.layers)
    per_cell = [
        [
            Config.single(VectorSource.of(method, position, cfg.component), layer, c)
            for layer in layers
            for c in cfg.coefficients
        ]
        for method, position in cells
    ]
    everything = [config for configs in per_cell for config in configs]
    evaluator.check(everything)  # a missing vector fails before the baseline is generated
    baseline = evaluator.baseline()
    results = evaluator.evaluate(everything)
    summaries, start = [], 0
    for (method, position), configs in zip(cells, per_cell, strict=True):
        cell_results = results[start : start + len(configs)]
        start += len(configs)
        summaries.append(
            _finish_cell(params, evaluator, method, position, layers, baseline, cell_results)
        )
    return summaries


def _finish_cell(
    params,
    evaluator,
    method: MethodName,
    position: Position,
    layers: list[int],
    baseline,
    results: list,
) -> dict[str, Any]:
    """One cell's MLflow parent run (with a nested run per config) and output files."""
    from steerops.steering.runs import log_cell, log_configs
    from steerops.steering.store import steering_dir
    from steerops.tracking import track
    from steerops.traits import trait_dir
    from steerops.vectors.store import vectors_dir

    cfg, session = params.steering, evaluator.session
    trait = session.trait
    out_dir = steering_dir(params.out, trait, cfg.variant, position, cfg.component, method)
    inputs = {
        "vectors": vectors_dir(
            params.out, trait, cfg.vector_variant, position, cfg.component, method
        ),
        "trait": trait_dir(params.path(params.traits.root), trait),
    }
    tags = {
        "steerops.trait": trait,
        "steerops.variant": cfg.variant,
        "steerops.method": method.name,
    }
    with track(
        params, "steer", f"steer {trait} {method} {position}", inputs=inputs, tags=tags
    ) as tracker:
        log_configs(tracker, evaluator, results)
        written = write_outputs(params, evaluator, out_dir, baseline, results)
        cell = {"method": method.name, "position": position.text, "component": cfg.component}
        log_cell(tracker, evaluator, cell, layers, written, out_dir)
    return {"dir": out_dir, "metrics": written["metrics"], "results": results, "baseline": baseline}


def write_outputs(params, evaluator, out_dir: Path, baseline, results) -> dict[str, Any]:
    from steerops.io import write_json
    from steerops.steering import plots
    from steerops.steering.best import best_per_layer, metrics_summary
    from steerops.steering.store import (
        CSV_FILE,
        CURVE_FILE,
        METRICS_FILE,
        RESPONSES_DIR,
        save_responses,
        tidy_row,
        write_csv,
    )

    cfg, session = params.steering, evaluator.session
    labels = {
        "trait": session.trait,
        "variant": session.variant,
        "vector_variant": session.vector_variant,
    }
    rows = [tidy_row(r, labels) for r in results]
    base = {"trait_mean": baseline.trait_mean, "coherence_mean": baseline.coherence_mean}
    metrics = metrics_summary(rows, base, cfg.min_coherence, cfg.direction)
    metrics.update(settings_hash=evaluator.settings_hash, n_questions=len(evaluator.questions))
    write_csv(out_dir / CSV_FILE, rows)
    write_json(out_dir / METRICS_FILE, metrics)
    title = f"{session.trait} {rows[0]['method']} {rows[0]['position']} ({session.variant})"
    plots.coefficient_curve(rows, base, cfg.min_coherence, out_dir / CURVE_FILE, title)
    best = best_per_layer(rows, cfg.min_coherence, cfg.direction)
    saved = save_responses(
        out_dir / RESPONSES_DIR,
        cfg.save_responses,
        evaluator.settings_hash,
        baseline,
        results,
        rows,
        best,
    )
    return {"rows": rows, "metrics": metrics, "best": best, "responses": saved}
