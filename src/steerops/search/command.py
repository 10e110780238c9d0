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
outcome into metrics/search.json (DVC metrics). Without --method/--position, one study runs
per cell of search.methods x search.positions (empty: the steering grid's lists).
"""

from __future__ import annotations

import argparse
import sys

from steerops.cli import flags, load_params_for, no_flag, stage_parser
from steerops.errors import SteeropsError


def register(subparsers) -> None:
    parser = stage_parser(subparsers, "search", __doc__)
    flags(parser, "--trait=traits.names --method=search.methods --position=search.positions")
    # the vector source and how it generates, as `steerops steer` takes them
    flags(
        parser,
        "steering.component steering.variant steering.vector_variant "
        "steering.coefficient_unit steering.direction steering.max_new_tokens",
    )
    flags(
        parser,
        "search.layers search.min_coherence search.trials search.batch search.sampler "
        "search.seed search.coef_min search.coef_max search.enqueue search.known_results "
        "search.storage search.study",
    )
    no_flag(parser, "--no-known", "search.import_known", "do not import known results")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from steerops.search.runner import search_trait
    from steerops.search.store import write_search_summary
    from steerops.steering.configs import grid_cells

    params = load_params_for(args)
    cfg = params.search
    cells = grid_cells(
        cfg.methods or params.steering.methods, cfg.positions or params.steering.positions
    )
    if cfg.study and len(cells) * len(params.traits.names) > 1:
        raise SteeropsError(
            "search.study: one study name cannot serve several traits, "
            "methods or positions; pass one --trait, --method and --position"
        )
    finalised = False
    for method, position in cells:
        for trait in params.traits.names:
            best = search_trait(params, trait, method, position, progress=sys.stderr.isatty())
            if best is not None:  # None: another worker finalises the study
                print(summary_line(best))
                finalised = True
    if finalised:
        write_search_summary(params)


def summary_line(best: dict) -> str:
    chosen, search, held = best["chosen"], best["search"], best["heldout"]
    tail = (
        f"{best['n_trials']} trials ({best['n_known']} known), "
        f"{best['n_generations']['total']} rows generated; study {best['study']!r}"
    )
    if chosen is None:
        return f"{best['trait']}: {best['status']} ({best['n_feasible']} coherent trials); {tail}"
    return (
        f"{best['trait']}: {best['status']}: layer {chosen['layer']} coefficient "
        f"{chosen['coefficient']:.4g}: search delta {_fmt(search['trait_delta'], '+.1f')} "
        f"(n {search['n']}); held-out delta {_fmt(held['trait_delta'], '+.1f')} "
        f"[{_fmt(held['delta_lo'], '+.1f')}, {_fmt(held['delta_hi'], '+.1f')}] coherence "
        f"{_fmt(held['coherence_mean'], '.1f')} (n {held['n']}); {tail}"
    )


def _fmt(x, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)
