"""`steerops search`: an Optuna search of the steering coefficient (and layer) under a
coherence constraint, evaluated in batches, reported on held-out questions.

One study per (trait, vector variant, method, position, component, steered variant,
direction). The steering questions are split (seeded) into a search part and a held-out
part; the search only ever sees the first. Coefficients are in steering.coefficient_unit
(default: multiples of the layer's mean activation norm). The study lives in an SQLAlchemy
database (default: sqlite optuna.db next to the params file, absolute so DVC experiment
workspaces share it); several processes on one study split the work, and a rerun resumes.
Writes trials.csv, best.json, best.csv, search.png and heldout_responses.jsonl under
search_dir(out, trait, variant, position, component, method), and gathers every study's
outcome into metrics/search.json (DVC metrics).
"""

from __future__ import annotations

import argparse
import sys

from steerops.cli import add_common, add_override, csv_list, load_params_for, stage_parser
from steerops.errors import SteeropsError


def register(subparsers) -> None:
    parser = stage_parser(
        subparsers, "search",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(parser)
    add_override(parser, "--trait", "traits.names", type=csv_list(), metavar="CAT/NAME[,..]",
                 help="trait(s) to search, one study each (default: traits.names)")
    add_override(parser, "--method", "steering.method", metavar="M")
    add_override(parser, "--position", "steering.position", metavar="SPEC",
                 help="position the vectors were extracted at, e.g. prompt[-1]")
    add_override(parser, "--component", "steering.component",
                 choices=["residual", "attn_out", "mlp_out"])
    add_override(parser, "--variant", "steering.variant", metavar="NAME",
                 help="model variant to steer")
    add_override(parser, "--vector-variant", "steering.vector_variant", metavar="NAME",
                 help="model variant the vectors were extracted on")
    add_override(parser, "--coefficient-unit", "steering.coefficient_unit",
                 choices=["norm", "absolute"],
                 help="unit of --coef-min/--coef-max: x the layer's mean norm, or raw weight")
    add_override(parser, "--layers", "search.layers", metavar="SPEC",
                 help="layers searched (categorical when several; default steering.layers)")
    add_override(parser, "--direction", "steering.direction", choices=["positive", "negative"])
    add_override(parser, "--min-coherence", "search.min_coherence", type=float, metavar="C",
                 help="a trial is feasible if its coherence is at least this (0-100)")
    add_override(parser, "--trials", "search.trials", type=int, metavar="N",
                 help="completed search trials the study should hold")
    add_override(parser, "--batch", "search.batch", type=int, metavar="K",
                 help="trials asked and evaluated in one batched generation")
    add_override(parser, "--sampler", "search.sampler", choices=["gp", "tpe"])
    add_override(parser, "--seed", "search.seed", type=int, metavar="N",
                 help="sampler seed (the question split follows params `seed`)")
    add_override(parser, "--coef-min", "search.coef_min", type=float, metavar="C")
    add_override(parser, "--coef-max", "search.coef_max", type=float, metavar="C")
    add_override(parser, "--enqueue", "search.enqueue", type=csv_list(float), metavar="C1,C2",
                 help="coefficients evaluated first (at every searched layer)")
    add_override(parser, "--known-results", "search.known_results", metavar="JSONL",
                 help="steering results log whose matching configs become trials")
    add_override(parser, "--no-known", "search.import_known", action="store_const",
                 const=False, help="do not import known results as trials")
    add_override(parser, "--storage", "search.storage", metavar="URL",
                 help="study storage: SQLAlchemy URL (sqlite, postgresql, mysql) or "
                 "journal:///PATH (Optuna's journal file on a shared disk)")
    add_override(parser, "--study", "search.study", metavar="NAME")
    add_override(parser, "--max-new-tokens", "steering.max_new_tokens", type=int, metavar="N")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from steerops.grid import grid_cells
    from steerops.search.runner import search_trait

    params = load_params_for(args)
    cells = list(grid_cells(params, args, params.search.methods, params.search.positions))
    if params.search.study and len(cells) * len(params.traits.names) > 1:
        raise SteeropsError("search.study: one study name cannot serve several traits, "
                            "methods or positions; pass one --trait, --method and --position")
    from steerops.summary import write_search_summary

    finalised = False
    for cell in cells:
        for trait in cell.traits.names:
            best = search_trait(cell, trait, progress=sys.stderr.isatty())
            if best is not None:  # None: another worker finalises the study
                print(summary_line(best))
                finalised = True
    if finalised:
        write_search_summary(params)


def summary_line(best: dict) -> str:
    chosen, search, held = best["chosen"], best["search"], best["heldout"]
    verdict = "feasible" if best["feasible"] else "NOT feasible"
    return (f"{best['trait']}: layer {chosen['layer']} coefficient {chosen['coefficient']:.4g} "
            f"({verdict}): search delta {search['trait_delta']:+.1f} coherence "
            f"{search['coherence_mean']:.1f}; held-out delta {_fmt(held['trait_delta'], '+.1f')} "
            f"coherence {_fmt(held['coherence_mean'], '.1f')}; {best['n_trials']} trials, "
            f"{best['n_generations']['total']} rows generated; study {best['study']!r}")


def _fmt(x, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)
