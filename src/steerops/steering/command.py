"""`steerops steer`: sweep layers x coefficients of vector methods and score them.

The unsteered baseline is generated once per settings; every layer x coefficient config is
then generated in as few batched `generate` calls as memory allows (each row carries its own
steering) and judged. Without --method/--position, every cell of steering.methods x
steering.positions is swept, and the configs of all cells are generated together; configs
whose vectors are identical tensors are generated once. Configs already evaluated under
identical settings are served from `results.jsonl`. Each cell's best config is chosen on a
seeded selection half of the questions and reported on the held-out half, with a 95%
interval (paired bootstrap against the baseline): "ok", "no effect", "incoherent held out"
or "needs finer coefficients". Writes, under
<out>/steering/<trait>/<variant>/<position>/<component>/<method>/: results.jsonl
(append-only log), results.csv (every config under these settings), metrics.json, curve.png
and responses/; and gathers every cell into metrics/steer.json and metrics/steer_curves.csv
(DVC metrics and plots).
"""

from __future__ import annotations

import argparse
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
    print(
        f"{trait} {summary['method']} @ {summary['position']}: " + verdict_line(summary["metrics"])
    )


def verdict_line(m: dict[str, Any]) -> str:
    """One line: the verdict and the held-out numbers of the chosen config."""
    if m.get("alias_of"):
        note = f" (alias of {m['alias_of']}: identical vectors)"
    else:
        note = ""
    if m["layer"] is None:
        reached = m.get("best_coherence_reached")
        best = "none scored" if reached is None else f"best {reached:.1f}"
        return (
            f"{m['status']}{note}: no steered config reached coherence >= "
            f"{m['min_coherence']:g} on the selection half ({best})"
        )
    return (
        f"{m['status']}{note}: layer {m['layer']} coefficient {m['coefficient']:g} (chosen on "
        f"{m['selection_n']} questions); held-out delta {_fmt(m['heldout_trait_delta'])} "
        f"[{_fmt(m['heldout_delta_lo'])}, {_fmt(m['heldout_delta_hi'])}], coherence "
        f"{_fmt(m['heldout_coherence'], '.1f')}, n {m['heldout_n']}"
    )


def _fmt(x, spec: str = "+.1f") -> str:
    return "n/a" if x is None else format(x, spec)


def steer_cells(
    params, cells: list[tuple[MethodName, Position]], trait: str, progress: bool = True
) -> list[dict[str, Any]]:
    """Sweep every grid cell (method x position; layers x coefficients each) for one trait.

    The cells share the steered model, questions and judge, so one evaluator generates the
    configs of all of them together: the batches stay full and the model loads once. Each
    cell still gets its own MLflow parent run and output folder."""
    from steerops.steering.best import protocol
    from steerops.steering.configs import Config, VectorSource
    from steerops.steering.evaluate import SteeringEvaluator
    from steerops.steering.session import SteeringSession

    cfg = params.steering
    if not cells:
        raise SteeropsError("steering.methods/steering.positions: the grid has no cells")
    if not cfg.coefficients:
        raise SteeropsError("steering.coefficients: give at least one coefficient")
    evaluator = SteeringEvaluator(SteeringSession(params, trait, progress=progress))
    protocol(params).split(evaluator.questions)  # too few questions to hold any out: fail now
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
    alias = _aliases(evaluator, cells, layers, cfg.component)
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
            )
        )
    return summaries


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
) -> dict[str, Any]:
    """One cell's MLflow parent run (with a nested run per config) and output files."""
    from steerops.steering.outputs import write_cell
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
        written = write_cell(params, evaluator, out_dir, results, alias_of)
        cell = {"method": method.name, "position": position.text, "component": cfg.component}
        log_cell(tracker, evaluator, cell, layers, written, out_dir)
    return {
        "dir": out_dir,
        "method": method.name,
        "position": position.text,
        "metrics": written["metrics"],
        "results": results,
        "baseline": baseline,
    }
