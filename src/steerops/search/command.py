"""`steerops search`: an Optuna search of the steering coefficient (and layer) under a
coherence constraint, evaluated in batches, reported on held-out questions.

One study per (trait, vector variant, method, position, component, steered variant,
direction). The steering questions are split (seeded) into a search part and a held-out
part; the search only ever sees the first. Coefficients are in steering.coefficient_unit
(default: multiples of the layer's mean activation norm). The study lives in an SQLAlchemy
database (default: sqlite optuna.db next to the params file, absolute so DVC experiment
workspaces share it); several processes on one study split the work, and a rerun resumes.
Writes trials.csv, best.json, best.csv, search.png and heldout_responses.jsonl under
search_dir(out, trait, variant, position, component, method).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from steerops.cli import add_common, add_override, csv_list, load_params_for
from steerops.errors import SteeropsError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "search", help="Optuna search of the steering coefficient under a coherence constraint",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common(parser)
    add_override(parser, "--trait", "traits.names", type=csv_list(), metavar="CAT/NAME[,..]",
                 help="trait(s) to search, one study each (default: traits.names)")
    add_override(parser, "--method", "steering.method", metavar="M")
    add_override(parser, "--position", "steering.position", metavar="SPEC",
                 help="position the vectors were extracted at, e.g. prompt[-1]")
    add_override(parser, "--component", "steering.component",
                 choices=["residual", "attn_out", "mlp_out"])
    add_override(parser, "--layers", "search.layers", metavar="SPEC",
                 help="layers searched (categorical when several; default steering.layers)")
    add_override(parser, "--direction", "steering.direction", choices=["positive", "negative"])
    add_override(parser, "--min-coherence", "search.min_coherence", type=float,
                 help="a trial is feasible if its coherence is at least this (0-100)")
    add_override(parser, "--trials", "search.trials", type=int,
                 help="completed search trials the study should hold")
    add_override(parser, "--batch", "search.batch", type=int,
                 help="trials asked and evaluated in one batched generation")
    add_override(parser, "--sampler", "search.sampler", choices=["gp", "tpe"])
    add_override(parser, "--seed", "search.seed", type=int)
    add_override(parser, "--coef-min", "search.coef_min", type=float)
    add_override(parser, "--coef-max", "search.coef_max", type=float)
    add_override(parser, "--enqueue", "search.enqueue", type=csv_list(float), metavar="C1,C2",
                 help="coefficients evaluated first (at every searched layer)")
    add_override(parser, "--known-results", "search.known_results", metavar="JSONL",
                 help="steering results log whose matching configs become trials")
    add_override(parser, "--no-known", "search.import_known", action="store_const",
                 const=False, help="do not import known results as trials")
    add_override(parser, "--storage", "search.storage", metavar="URL",
                 help="SQLAlchemy URL of the study database (sqlite, postgresql, mysql)")
    add_override(parser, "--study", "search.study", metavar="NAME")
    add_override(parser, "--max-new-tokens", "steering.max_new_tokens", type=int)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    params = load_params_for(args)
    if params.search.study and len(params.traits.names) > 1:
        raise SteeropsError("search.study: one study name cannot serve several traits; "
                            "pass one --trait")
    for trait in params.traits.names:
        best = search_trait(params, trait, progress=sys.stderr.isatty())
        print(summary_line(best))


def summary_line(best: dict) -> str:
    chosen, search, held = best["chosen"], best["search"], best["heldout"]
    verdict = "feasible" if best["feasible"] else "NOT feasible"
    return (f"{best['trait']}: layer {chosen['layer']} coefficient {chosen['coefficient']:.4g} "
            f"({verdict}): search delta {search['trait_delta']:+.1f} coherence "
            f"{search['coherence_mean']:.1f}; held-out delta {_fmt(held['trait_delta'])} "
            f"coherence {_fmt(held['coherence_mean'])}; {best['n_trials']} trials, "
            f"{best['n_generations']['total']} rows generated; study {best['study']!r}")


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:+.1f}"


def default_storage(params) -> str:
    return f"sqlite:///{(params.root / 'optuna.db').resolve()}"


def default_study_name(trait: str, cfg, position: str) -> str:
    return ":".join([trait, cfg.vector_variant, cfg.method, position, cfg.component,
                     cfg.variant, cfg.direction])


def search_trait(params, trait: str, progress: bool = True) -> dict:
    """Run (or resume) the study for one trait and write its outputs; returns best.json."""
    from steerops.extract.batching import release_memory
    from steerops.paths import search_dir, vectors_dir
    from steerops.search.heldout import split_questions
    from steerops.specs import parse_position
    from steerops.steering.evaluate import SteeringEvaluator
    from steerops.tracking import track
    from steerops.traits import load_trait, trait_dir

    cfg, st = params.search, params.steering
    position = parse_position(st.position).text
    seed = params.seed if cfg.seed is None else cfg.seed
    data = load_trait(params.path(params.traits.root), trait, need_prompts=False,
                      need_questions=True)
    questions = data.questions[:st.subset] if st.subset else data.questions
    # The split follows the experiment's seed, not the sampler's: re-seeding a search must
    # not move questions between the search and held-out parts.
    search_q, heldout_q = split_questions(questions, cfg.heldout_fraction, params.seed)
    out_dir = search_dir(params.out, trait, st.variant, position, st.component, st.method)
    vec_dir = vectors_dir(params.out, trait, st.vector_variant, position, st.component,
                          st.method)
    name = cfg.study or default_study_name(trait, st, position)
    inputs = {"vectors": vec_dir, "trait": trait_dir(params.path(params.traits.root), trait)}
    tags = {"steerops.trait": trait, "steerops.method": st.method, "optuna.study": name}
    with track(params, "search", f"search {name}", inputs=inputs, tags=tags) as tracker:
        evaluator = SteeringEvaluator(params, trait, questions=search_q, progress=progress)
        outcome = _search(params, evaluator, name, position, seed, tracker, progress)
        del evaluator  # free the model before the held-out evaluator loads its own
        release_memory()
        held_eval = SteeringEvaluator(params, trait, questions=heldout_q, progress=progress)
        return _finish(params, outcome, held_eval, out_dir, trait, position, seed, tracker)


def _search(params, evaluator, name: str, position: str, seed: int, tracker,
            progress: bool) -> dict:
    from steerops.search.known import load_known
    from steerops.search.loop import VectorSource, run_search
    from steerops.search.study import SearchStudy, Space, storage_label, url_is_sqlite
    from steerops.specs import parse_layers

    cfg, st = params.search, params.steering
    source = VectorSource(st.method, position, st.component)
    layers = parse_layers(cfg.layers or st.layers, evaluator.loaded.layout.num_layers)
    available = _vector_layers(params, evaluator.trait, st, position)
    missing = [layer for layer in layers if layer not in available]
    if missing:  # fail now, naming the layer, not in the middle of the search
        raise SteeropsError(f"search.layers: no {st.method} vectors at layer(s) {missing} "
                            f"(have {sorted(available)})")
    for layer in layers:  # and a missing layer norm too
        evaluator.weight_for(st.method, position, st.component, layer, 1.0)
    min_coherence = st.min_coherence if cfg.min_coherence is None else cfg.min_coherence
    storage = cfg.storage or default_storage(params)
    if url_is_sqlite(storage) and cfg.storage is None:
        params.root.mkdir(parents=True, exist_ok=True)
    settings = {"settings_hash": evaluator.settings_hash, "layers": layers,
                "coef_min": cfg.coef_min, "coef_max": cfg.coef_max,
                "min_coherence": min_coherence, "method": st.method, "position": position,
                "component": st.component}
    study = SearchStudy(storage, name, Space(cfg.coef_min, cfg.coef_max, tuple(layers)),
                        min_coherence, settings, sampler=cfg.sampler, seed=seed,
                        startup_trials=cfg.startup_trials, heartbeat_s=cfg.heartbeat_s,
                        grace_s=cfg.grace_s, max_retry=cfg.max_retry)
    for c in cfg.enqueue:
        for layer in layers:
            study.enqueue(layer, c)
    known_path = params.path(cfg.known_results) if cfg.known_results else \
        _steer_results(params, evaluator.trait, st, position)
    vector_files = {f"{st.method}|{position}|{st.component}": _vectors_md5(params, evaluator
                                                                           .trait, st, position)}
    known = load_known(known_path, evaluator.settings_hash, st.method, position, st.component,
                       layers, vector_files, required=cfg.known_results is not None) \
        if cfg.import_known else []
    tracker.log_params({"study": name, "storage": storage_label(storage), "sampler": cfg.sampler,
                        "trials": cfg.trials, "batch": cfg.batch, "seed": seed,
                        "layers": ",".join(map(str, layers)), "coef_min": cfg.coef_min,
                        "coef_max": cfg.coef_max, "min_coherence": min_coherence,
                        "direction": st.direction, "method": st.method, "position": position,
                        "component": st.component, "n_search_questions":
                        len(evaluator.questions), "settings_hash": evaluator.settings_hash})
    stats = run_search(study, evaluator, source, cfg.trials, cfg.batch, st.direction,
                       known=known, tracker=tracker, progress=progress)
    return {"study": study, "stats": stats, "source": source, "layers": layers,
            "min_coherence": min_coherence, "storage": storage_label(storage),
            "questions": list(evaluator.questions), "settings_hash": evaluator.settings_hash}


def _finish(params, outcome: dict, held_eval, out_dir: Path, trait: str, position: str,
            seed: int, tracker) -> dict:
    from steerops.search.heldout import evaluate_heldout, write_heldout_responses
    from steerops.search.results import (
        choose_best,
        generated_rows,
        plot_search,
        write_best,
        write_trials_csv,
    )

    st, cfg = params.steering, params.search
    study, stats = outcome["study"], outcome["stats"]
    records = study.records()
    chosen, feasible = choose_best(records)
    if chosen is None:
        raise SteeropsError(f"search: study {study.name!r} has no completed trial (the judge "
                            "scored nothing)")
    if not feasible:
        print(f"steerops search: warning: no trial reached coherence >= "
              f"{outcome['min_coherence']:g}; reporting the most coherent trial (coherence "
              f"{chosen.coherence_mean:.1f}) instead", file=sys.stderr)
    held = evaluate_heldout(held_eval, outcome["source"], chosen.layer, chosen.coefficient,
                            chosen.weight, st.direction)
    search_rows = generated_rows(records)
    n_search, n_heldout = len(outcome["questions"]), held["n_questions"]
    held_rows = held.pop("rows_generated")
    best = {
        "trait": trait, "variant": st.variant, "vector_variant": st.vector_variant,
        "method": st.method, "position": position, "component": st.component,
        "direction": st.direction, "min_coherence": outcome["min_coherence"],
        "study": study.name, "storage": outcome["storage"], "sampler": cfg.sampler,
        "seed": seed, "layers": outcome["layers"], "coef_range": [cfg.coef_min, cfg.coef_max],
        "coefficient_unit": st.coefficient_unit, "feasible": feasible,
        "chosen": {"trial": chosen.number, "layer": chosen.layer,
                   "coefficient": chosen.coefficient, "weight": chosen.weight,
                   "source": chosen.source},
        "search": {"trait_delta": chosen.trait_delta, "trait_mean": chosen.trait_mean,
                   "coherence_mean": chosen.coherence_mean,
                   "baseline_trait": stats.baseline_trait,
                   "n_questions": len(outcome["questions"]),
                   "settings_hash": outcome["settings_hash"]},
        "heldout": {k: v for k, v in held.items() if k != "responses"},
        "n_trials": sum(r.state == "complete" for r in records),
        "n_feasible": sum(bool(r.feasible) for r in records if r.state == "complete"),
        # rows the protocol generates (trials served from a results log cost none), and
        # rows this invocation actually generated
        "n_generations": {"trials": search_rows, "baseline": n_search,
                          "heldout": 2 * n_heldout,
                          "total": search_rows + n_search + 2 * n_heldout,
                          "this_run": stats.rows + held_rows},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_trials_csv(out_dir / "trials.csv", records)
    write_heldout_responses(out_dir / "heldout_responses.jsonl", held)
    plot_search(out_dir / "search.png", records, chosen, outcome["min_coherence"],
                f"{trait} {st.method} {position}")
    write_best(out_dir, best)
    tracker.log_metrics({"search_trait_delta": chosen.trait_delta,
                         "search_coherence": chosen.coherence_mean,
                         "heldout_trait_delta": held["trait_delta"],
                         "heldout_coherence": held["coherence_mean"],
                         "feasible": float(feasible), "n_trials": best["n_trials"],
                         "n_generations": best["n_generations"]["total"]})
    tracker.set_tags({"steerops.feasible": feasible})
    for name in ("best.json", "best.csv", "trials.csv", "search.png"):
        tracker.log_artifact(out_dir / name)
    return best


def _vector_layers(params, trait: str, st, position: str) -> set[int]:
    from steerops.vectors.store import vectors_for

    vectors, _ = vectors_for(params, trait, st.vector_variant, position, st.component,
                             st.method)
    return set(vectors)


def _vectors_md5(params, trait: str, st, position: str) -> str:
    from steerops.io import file_md5
    from steerops.paths import vectors_dir
    from steerops.vectors.store import TENSORS_FILE

    return file_md5(vectors_dir(params.out, trait, st.vector_variant, position, st.component,
                                st.method) / TENSORS_FILE)


def _steer_results(params, trait: str, st, position: str) -> Path:
    from steerops.paths import steering_dir
    from steerops.steering.results import RESULTS_FILE

    return steering_dir(params.out, trait, st.variant, position, st.component,
                        st.method) / RESULTS_FILE
