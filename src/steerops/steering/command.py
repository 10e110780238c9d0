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

from steerops.cli import add_common, add_override, csv_list, load_params_for, stage_parser
from steerops.errors import SteeropsError

SAVE_POLICIES = ("best", "all", "none")


def register(subparsers) -> None:
    parser = stage_parser(
        subparsers, "steer",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(parser)
    add_override(parser, "--trait", "traits.names", type=csv_list(), metavar="CAT/NAME[,..]",
                 help="trait(s) to steer (default: traits.names)")
    add_override(parser, "--method", "steering.method", metavar="M",
                 help="vector method, e.g. mean_diff, probe, mean_diff_top1")
    add_override(parser, "--position", "steering.position", metavar="SPEC",
                 help="position the vectors were extracted at, e.g. prompt[-1]")
    add_override(parser, "--component", "steering.component",
                 choices=["residual", "attn_out", "mlp_out"],
                 help="component the vectors were extracted from (added to the residual)")
    add_override(parser, "--layers", "steering.layers", metavar="SPEC",
                 help="layers to steer: all, 15, 5,10,15, 5-20, 0-30:5, 30%%-60%%")
    add_override(parser, "--coefficients", "steering.coefficients", type=csv_list(float),
                 metavar="C1,C2,..", help="steering coefficients (see --coefficient-unit)")
    add_override(parser, "--coefficient-unit", "steering.coefficient_unit",
                 choices=["norm", "absolute"],
                 help="norm: x the layer's mean activation norm; absolute: raw weight")
    add_override(parser, "--variant", "steering.variant", metavar="NAME",
                 help="model variant to steer (from `models`)")
    add_override(parser, "--vector-variant", "steering.vector_variant", metavar="NAME",
                 help="model variant the vectors were extracted on")
    add_override(parser, "--direction", "steering.direction", choices=["positive", "negative"],
                 help="negative subtracts the vector (to suppress the trait)")
    add_override(parser, "--subset", "steering.subset", type=int, metavar="N",
                 help="first N steering questions only")
    add_override(parser, "--max-new-tokens", "steering.max_new_tokens", type=int, metavar="N")
    add_override(parser, "--save-responses", "steering.save_responses", choices=SAVE_POLICIES,
                 help="response files: per layer the best config, all, or none")
    add_override(parser, "--min-coherence", "steering.min_coherence", type=float, metavar="X",
                 help="coherence a config needs to count as best (0-100)")
    add_override(parser, "--scope", "steering.scope", choices=["all", "response"],
                 help="steer prompt and response tokens, or generated tokens only")
    add_override(parser, "--max-batch-rows", "steering.max_batch_rows", type=int, metavar="N",
                 help="rows per generate call (halved on out-of-memory)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from steerops.grid import grid_cells

    grid = load_params_for(args)
    cells = list(grid_cells(grid, args, grid.steering.methods, grid.steering.positions))
    from steerops.summary import write_steer_summary

    for trait in grid.traits.names:
        for summary in steer_cells(cells, trait):
            _report(trait, summary)
    write_steer_summary(grid)


def _report(trait: str, summary: dict[str, Any]) -> None:
    best = summary["metrics"]
    where = summary["dir"]
    if best["best_layer"] is None:
        print(f"{trait}: no config reached coherence >= {best['min_coherence']:g}; "
              f"results in {where}")
    else:
        print(f"{trait}: best layer {best['best_layer']} coefficient "
              f"{best['best_coefficient']:g}: trait {best['best_trait_mean']:.1f} "
              f"(delta {best['best_trait_delta']:+.1f}), coherence "
              f"{best['best_coherence']:.1f}; results in {where}")


def steer_cells(cells: list, trait: str, progress: bool = True) -> list[dict[str, Any]]:
    """Sweep every grid cell (a params copy per method x position) for one trait.

    The cells share the steered model, questions and judge, so one evaluator generates the
    configs of all of them together: the batches stay full and the model loads once. Each
    cell still gets its own MLflow parent run and output folder."""
    from steerops.specs import parse_layers, parse_position
    from steerops.steering.evaluate import ConfigSpec, SteeringEvaluator, VectorRef
    from steerops.vectors.names import parse_method

    if not cells:
        raise SteeropsError("steering.methods/steering.positions: the grid has no cells")
    first = cells[0].steering
    for params in cells:
        parse_method(params.steering.method)
        parse_position(params.steering.position)
        if (params.steering.layers, params.steering.coefficients) != (first.layers,
                                                                      first.coefficients):
            raise SteeropsError("steering: grid cells must share layers and coefficients")
    if not first.coefficients:
        raise SteeropsError("steering.coefficients: give at least one coefficient")
    evaluator = SteeringEvaluator(cells[0], trait, progress=progress)
    layers = parse_layers(first.layers, evaluator.loaded.layout.num_layers)
    per_cell: list[list] = []
    for params in cells:
        cfg = params.steering
        position = parse_position(cfg.position).text
        per_cell.append([
            ConfigSpec((VectorRef(layer, cfg.component, position, cfg.method,
                                  evaluator.weight_for(cfg.method, position, cfg.component,
                                                       layer, c)),), c)
            for layer in layers for c in cfg.coefficients])
    baseline = evaluator.baseline()
    results = evaluator.evaluate([config for configs in per_cell for config in configs])
    summaries, start = [], 0
    for params, configs in zip(cells, per_cell, strict=True):
        cell_results = results[start:start + len(configs)]
        start += len(configs)
        summaries.append(_finish_cell(params, trait, evaluator, layers, baseline, cell_results))
    return summaries


def _finish_cell(params, trait: str, evaluator, layers: list[int], baseline,
                 results: list) -> dict[str, Any]:
    """One cell's MLflow parent run (with a nested run per config) and output files."""
    from steerops.paths import steering_dir, vectors_dir
    from steerops.specs import parse_position
    from steerops.tracking import track
    from steerops.traits import trait_dir

    cfg = params.steering
    position = parse_position(cfg.position).text
    out_dir = steering_dir(params.out, trait, cfg.variant, position, cfg.component, cfg.method)
    inputs = {"vectors": vectors_dir(params.out, trait, cfg.vector_variant, position,
                                     cfg.component, cfg.method),
              "trait": trait_dir(params.path(params.traits.root), trait)}
    tags = {"steerops.trait": trait, "steerops.variant": cfg.variant,
            "steerops.method": cfg.method}
    with track(params, "steer", f"steer {trait} {cfg.method} {position}", inputs=inputs,
               tags=tags) as tracker:
        evaluator.log_runs(tracker, results)
        summary = write_outputs(params, evaluator, out_dir, baseline, results)
        _log_parent(tracker, params, evaluator, layers, summary, out_dir)
    return {"dir": out_dir, "metrics": summary["metrics"], "results": results,
            "baseline": baseline}


def write_outputs(params, evaluator, out_dir: Path, baseline, results) -> dict[str, Any]:
    from steerops.io import write_json
    from steerops.steering import plots
    from steerops.steering.results import (
        CSV_FILE,
        best_per_layer,
        config_dict,
        metrics_summary,
        tidy_row,
        write_csv,
    )

    cfg = params.steering
    labels = {"trait": evaluator.trait, "variant": evaluator.variant,
              "vector_variant": evaluator.vector_variant}
    rows = [tidy_row({"config": config_dict(r.config), "result": _result_dict(r)}, labels)
            for r in results]
    base = {"trait_mean": baseline.trait_mean, "coherence_mean": baseline.coherence_mean}
    metrics = metrics_summary(rows, base, cfg.min_coherence, cfg.direction)
    metrics.update(settings_hash=evaluator.settings_hash, n_questions=len(evaluator.questions))
    write_csv(out_dir / CSV_FILE, rows)
    write_json(out_dir / "metrics.json", metrics)
    title = f"{evaluator.trait} {cfg.method} {rows[0]['position']} ({evaluator.variant})"
    plots.coefficient_curve(rows, base, cfg.min_coherence, out_dir / "curve.png", title)
    best = best_per_layer(rows, cfg.min_coherence, cfg.direction)
    saved = save_responses(out_dir / "responses", cfg.save_responses, evaluator.settings_hash,
                           baseline, results, rows, best)
    return {"rows": rows, "metrics": metrics, "best": best, "responses": saved}


def save_responses(folder: Path, policy: str, settings_hash: str, baseline, results, rows,
                   best: dict) -> list[Path]:
    """Write response files for `policy`; with `best`, drop config files of other configs.

    A cached config's responses are not kept in the results log, so a best config served
    from cache keeps the file an earlier run wrote for it (when one exists)."""
    from steerops.io import read_json, write_json
    from steerops.steering.results import config_dict

    if policy == "none":
        return []
    keep: list[tuple[Any, dict]] = list(zip(results, rows, strict=True))
    if policy == "best":
        chosen = {id(row) for row in best.values()}
        keep = [(r, row) for r, row in keep if id(row) in chosen]
    saved = []
    if baseline.responses:
        write_json(folder / "baseline.json", {"settings_hash": settings_hash,
                                              "result": _result_dict(baseline),
                                              "responses": baseline.responses})
    if (folder / "baseline.json").exists():
        saved.append(folder / "baseline.json")
    for result, row in keep:
        path = folder / f"L{row['layer']}_c{row['coefficient']:g}.json"
        if result.responses:
            write_json(path, {"settings_hash": settings_hash, "config": config_dict(result.config),
                              "result": _result_dict(result), "responses": result.responses})
        elif not (path.exists() and read_json(path).get("settings_hash") == settings_hash):
            print(f"note: no responses for {path.stem}: an earlier run evaluated it "
                  "without keeping them")
            continue
        saved.append(path)
    if policy == "best" and folder.is_dir():
        for stale in set(folder.glob("L*_c*.json")) - set(saved):
            stale.unlink()
    return saved


def _result_dict(result) -> dict[str, Any]:
    return {"trait_mean": result.trait_mean, "coherence_mean": result.coherence_mean,
            "trait_delta": result.trait_delta, "n": result.n, "n_unscored": result.n_unscored}


def _log_parent(tracker, params, evaluator, layers: list[int], summary: dict,
                out_dir: Path) -> None:
    cfg = params.steering
    tracker.log_params({
        "model": evaluator.settings["model"]["id"], "variant": evaluator.variant,
        "vector_variant": evaluator.vector_variant, "trait": evaluator.trait,
        "method": cfg.method, "position": summary["rows"][0]["position"],
        "component": cfg.component, "layers": ",".join(map(str, layers)),
        "coefficients": ",".join(f"{c:g}" for c in cfg.coefficients),
        "coefficient_unit": cfg.coefficient_unit, "direction": cfg.direction,
        "judge": evaluator.judge.id, "scope": cfg.scope, "max_new_tokens": cfg.max_new_tokens,
        "n_questions": len(evaluator.questions), "min_coherence": cfg.min_coherence,
        "settings_hash": evaluator.settings_hash,
    })
    metrics = summary["metrics"]
    tracker.log_metrics({k: v for k, v in metrics.items()
                         if isinstance(v, int | float) and not isinstance(v, bool)})
    for name in ("results.csv", "metrics.json", "curve.png", "results.jsonl"):
        tracker.log_artifact(out_dir / name)
    for path in summary["responses"]:
        tracker.log_artifact(path, "responses")
