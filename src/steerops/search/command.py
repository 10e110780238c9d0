"""`steerops search`: an Optuna search of the steering coefficient (and layer) under a
coherence constraint, evaluated in batches, reported on held-out questions.

One study per (trait, vector variant, method, position, component, steered variant,
direction). The steering questions are split (seeded) into a search part and a held-out
part; the search only ever sees the first. Coefficients are in steering.coefficient_unit
(default: multiples of the layer's mean activation norm). The study lives in an SQLAlchemy
database (default: sqlite optuna.db next to the params file, or in a scratch run's folder);
several processes on one study split the work, and a rerun resumes.
Writes trials.csv, best.json, best.csv, search.png and heldout_responses.jsonl under
search_dir(out, trait, variant, position, component, method), and gathers every study's
outcome into metrics/search.json (DVC metrics). Without --method/--position, one study runs
per cell of search.methods x search.positions (empty: the steering grid's lists).

Run by DVC (or with --pipeline, as extra workers on the pipeline's study do) it writes the
pipeline's outputs; run by hand it is a scratch run under runs/search-<time>/ (or --out DIR)
that reads the pipeline's vectors. `steerops dashboard` shows the studies in optuna-dashboard.
"""

from __future__ import annotations

import argparse

from steerops.cli import abs_path, flags, load_params_for, no_flag, stage_parser
from steerops.errors import SteeropsError


def register(subparsers) -> None:
    parser = stage_parser(subparsers, "search", __doc__, scratch=True)
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
        "search.seed search.coef_min search.coef_max search.enqueue search.storage search.study",
    )
    flags(parser, "search.known_results", type=abs_path)  # relative to the working directory
    no_flag(parser, "--no-known", "search.import_known", "do not import known results")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from steerops.search.runner import search_trait
    from steerops.search.storage import default_storage_url
    from steerops.search.store import write_search_summary
    from steerops.search.study import check_storage
    from steerops.steering.configs import grid_cells
    from steerops.steering.preflight import check_grid

    params = load_params_for(args)
    cfg, st = params.search, params.steering
    cells = grid_cells(cfg.methods or st.methods, cfg.positions or st.positions)
    if cfg.study and len(cells) * len(params.traits.names) > 1:
        raise SteeropsError(
            "search.study: one study name cannot serve several traits, "
            "methods or positions; pass one --trait, --method and --position"
        )
    # every input, layer and vector checked before a model loads or a run opens
    layers, key = (cfg.layers, "search.layers") if cfg.layers else (st.layers, "steering.layers")
    coefficients = [cfg.coef_min, cfg.coef_max, *cfg.enqueue]
    check_grid(params, params.traits.names, cells, layers, key, coefficients, "search")
    check_storage(default_storage_url(params), cfg.heartbeat_s)
    finalised, links = False, list[str]()
    for method, position in cells:
        for trait in params.traits.names:
            best = search_trait(params, trait, method, position, links=links)
            if best is not None:  # None: another worker finalises the study
                print(summary_line(best))
                finalised = True
    if finalised:
        write_search_summary(params)
    for link in links:
        print(f"MLflow run: {link}")


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
        f"[{_fmt(search.get('delta_lo'), '+.1f')}, {_fmt(search.get('delta_hi'), '+.1f')}] "
        f"(n {search['n']}); held-out delta {_fmt(held['trait_delta'], '+.1f')} "
        f"[{_fmt(held['delta_lo'], '+.1f')}, {_fmt(held['delta_hi'], '+.1f')}] coherence "
        f"{_fmt(held['coherence_mean'], '.1f')} (n {held['n']}); {tail}"
    )


def _fmt(x, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


DASHBOARD = """Serve optuna-dashboard on the search studies (search.storage, default
optuna.db next to the params file, or a scratch run's with --out). Its "Best Trial" is the
best feasible trial (coherence >= the study's threshold), as the search reports it; a
plain `optuna-dashboard URL` shows the best value regardless of feasibility. Needs the
optuna-dashboard package."""


def register_dashboard(subparsers) -> None:
    parser = stage_parser(subparsers, "dashboard", DASHBOARD, common=False)
    parser.add_argument(
        "--params", default=None, metavar="FILE", help="experiment params (default: ./params.yaml)"
    )
    parser.add_argument(
        "--out",
        dest="run_folder",
        type=abs_path,
        metavar="DIR",
        help="a scratch run's folder (runs/search-<time>/): show the study it kept",
    )
    flags(parser, "search.storage")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on")
    parser.add_argument("--port", type=int, default=8080, help="port to serve on")
    parser.set_defaults(func=run_dashboard)


def run_dashboard(args: argparse.Namespace) -> None:
    from steerops.search.storage import dashboard_storage, default_storage_url, storage_label

    params = load_params_for(args)
    try:
        from optuna_dashboard import run_server
    except ImportError:
        raise SteeropsError(
            "dashboard: optuna-dashboard is not installed (pip install optuna-dashboard)"
        ) from None
    url = default_storage_url(params)
    storage = dashboard_storage(url)
    print(f"optuna-dashboard on {storage_label(url, params.root)}: http://{args.host}:{args.port}/")
    run_server(storage, host=args.host, port=args.port)
