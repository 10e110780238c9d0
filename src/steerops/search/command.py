"""`steerops search`: an Optuna search of the steering coefficient (and layer) under a
coherence constraint, evaluated in batches, reported on held-out questions.

One study per (trait, vector variant, method, position, component, steered variant,
direction) and settings: the layers, range, bar and margin, trials and startup trials,
batch, sampler and seed, the generation settings and questions (--subset), the vectors'
files (extracted or built again) and the grid results it starts from are in its default
name, so changing any of them starts a new study (an explicit --study NAME refuses
another objective). The steering questions are split (seeded) into a
search part and a held-out part; the search only ever sees the first. Coefficients are in
steering.coefficient_unit (default: multiples of the layer's mean per-token norm). The
study lives in an SQLAlchemy database (default: sqlite optuna.db next to the params file,
or in a scratch run's folder); several processes on one study split the work, and a rerun
resumes.
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

from steerops import stats
from steerops.cli import (
    abs_path,
    display_path,
    flags,
    load_params_for,
    no_flag,
    params_flag,
    stage_parser,
)
from steerops.errors import SteeropsError


def register(subparsers) -> None:
    parser = stage_parser(subparsers, "search", __doc__, scratch=True)
    flags(parser, "--trait=traits.names --method=search.methods --position=search.positions")
    # the vector source and how it generates, as `steerops steer` takes them
    flags(
        parser,
        "steering.component steering.variant steering.vector_variant "
        "steering.coefficient_unit steering.direction steering.max_new_tokens "
        "steering.subset",
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
    from steerops.search.known import check_known_file
    from steerops.search.opening import check_storage
    from steerops.search.runner import sampler_identity, search_trait
    from steerops.search.storage import check_storage_folder, default_storage_url
    from steerops.search.store import search_dir, write_search_summary
    from steerops.steering.best import note_report_behind
    from steerops.steering.configs import VectorSource, grid_cells
    from steerops.steering.preflight import check_grid

    params = load_params_for(args)
    check_storage_folder(params)
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
    if cfg.known_results:  # read to serve scores even when no trial is imported from it
        check_known_file(params.path(cfg.known_results))
    checked = check_grid(params, params.traits.names, cells, layers, key, coefficients, "search")
    min_coherence = st.min_coherence if cfg.min_coherence is None else cfg.min_coherence
    known = {"coef_min": cfg.coef_min, "coef_max": cfg.coef_max, "min_coherence": min_coherence}
    if min_coherence + cfg.coherence_margin > 100:
        raise SteeropsError(
            f"search.coherence_margin: {cfg.coherence_margin:g} over the bar "
            f"{min_coherence:g} asks coherence {min_coherence + cfg.coherence_margin:g}, over "
            "the judge's 100: no trial could be chosen"
        )
    # recorded only when set, as the study's settings have it (unset: refused by a study
    # that was run with one)
    known["coherence_margin"] = cfg.coherence_margin or None
    if cfg.study:  # one trait and cell (above): what a named study must have been run with
        ((method, position),) = cells
        source = VectorSource.of(method, position, st.component)  # as a study records it
        known.update(method=source.method, position=source.position, component=source.component)
        # the defaults as unset, so a study run with another sampler or seed is refused here
        known.update({"sampler_seed": None, "sampler": None, **sampler_identity(params)})
        resolved = checked[params.traits.names[0]]
        if resolved is not None:
            known["layers"] = resolved
    check_storage(default_storage_url(params), cfg.heartbeat_s, cfg.study, known, cfg.sampler)
    finalised, links, news = False, list[str](), list[bool]()
    for method, position in cells:
        for trait in params.traits.names:
            best = search_trait(params, trait, method, position, links=links, news=news)
            if best is not None:  # None: another worker finalises the study
                print(summary_line(best))
                folder = search_dir(
                    params.out, trait, best["variant"], position, best["component"], method
                )
                print(f"  files: {display_path(folder)}")
                finalised = True
    if finalised:
        write_search_summary(params)
        if any(news):  # a rerun that changed nothing leaves the report as current as it was
            note_report_behind(params, "search")
    for link in links:
        print(f"MLflow run: {link}")


def summary_line(best: dict) -> str:
    from steerops.search.store import READ_BEFORE, read_before_text

    chosen, search, held = best["chosen"], best["search"], best["heldout"]
    exhausted = "; range exhausted" if best.get("range_exhausted") else ""
    tail = (
        f"{best['n_trials']} trials and {best['n_known']} known results{exhausted}, "
        f"{best['n_generations']['total']} rows in all ({best['n_generations']['this_run']} "
        f"generated by this run); study {best['study']!r}"
    )
    cell = f"{best['trait']} {best.get('position', '')} `{best.get('method', '')}`"
    if chosen is None:
        few = stats.few_questions_note(best["search"].get("n_questions"))
        hint = f"; {few.replace('held-out', 'search-half')}" if few else ""
        coherent = best["n_feasible"]
        if best["status"] == stats.UNSCORED:  # the judge's failure, not the steering's
            coherent += best.get("n_coherent_unscored") or 0
            why = f"{coherent} coherent trials, none with a trait score"
        elif best["status"] == stats.NO_EFFECT:
            why = f"{coherent} coherent trials, none with an interval above zero"
        else:  # (a coherent trial at coefficient 0 is the unsteered model: no choice)
            base = best["search"].get("baseline_coherence")
            unsteered = (
                f"; the unsteered model's coherence {stats.coherence_text(base)} on the search half"
                if base is not None
                else ""
            )
            why = f"no steered trial coherent{unsteered}"
        return f"{cell}: {best['status']} ({why}{hint}); {tail}"
    # only an "ok" choice is an optimal coefficient; another verdict shows what was checked
    picked = f"layer {chosen['layer']} coefficient {chosen['coefficient']:.4g}"
    if best["status"] != "ok":
        picked = f"no optimal coefficient (chosen on the search half: {picked})"
    bar = best.get("min_coherence")
    unscored = held.get("coherence_unscored")
    under = stats.under_bar_phrase(
        held.get("coherence_scored"), held.get("under_bar"), bar, unscored
    )
    unmoved = stats.unmoved_phrase(
        held.get("under_bar"),
        bar,
        held.get("under_bar_moved"),
        [held.get(k) for k in ("credited_delta", "credited_lo", "credited_hi")],
        unscored,
    )
    refused = held.get("n_refused") or 0
    left_out = f"{refused} answers the judge refused left out" if refused else ""
    notes = [f"n {held['n']}", under, unmoved, left_out, stats.few_questions_note(held["n"])]
    if earlier := read_before_text(held.get("read_before")):
        notes.append(f"{READ_BEFORE}: {earlier}")
    if chosen.get("at_range_top"):
        top = best.get("coef_range", [None, None])[1]
        picked += f" (the range's top, search.coef_max {top:g}: the optimum may lie beyond)"
    return (
        f"{cell}: {best['status']}: {picked}: search delta "
        f"{_interval(search)} (n {search['n']}); held-out delta {_interval(held)} coherence "
        f"{stats.coherence_text(held['coherence_mean'])} ({'; '.join(n for n in notes if n)}); "
        f"{tail}"
    )


def _interval(half: dict) -> str:
    return stats.interval_text(half["trait_delta"], half.get("delta_lo"), half.get("delta_hi"))


DASHBOARD = """Serve optuna-dashboard on the search studies (search.storage, default
optuna.db next to the params file, or a scratch run's with --out). Its "Best Trial" is the
trial the search reported (of the trials with coherence >= the study's threshold and an
effect beyond the interval, the largest trait delta, ties to the more coherent, then
smaller coefficient), or before a search has
chosen the best feasible trial; a plain `optuna-dashboard URL` shows the best value
regardless of feasibility. Ctrl-C or SIGTERM stops it. Needs the optuna-dashboard
package."""


def register_dashboard(subparsers) -> None:
    parser = stage_parser(subparsers, "dashboard", DASHBOARD, common=False)
    params_flag(parser)
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

    if not 1 <= args.port <= 65535:
        raise SteeropsError(f"--port: {args.port} is not a port (1-65535)")
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
    try:
        run_server(storage, host=args.host, port=args.port)
    except KeyboardInterrupt:  # how a server is stopped: not an interrupted stage to resume
        print("dashboard: stopped")
    except OSError as exc:  # an unknown host, a port in use or not this user's
        raise SteeropsError(
            f"--host {args.host} --port {args.port}: cannot serve there ({exc.strerror or exc})"
        ) from None
