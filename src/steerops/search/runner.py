"""One trait's search, end to end: plan, search on one half of the questions, choose,
evaluate the choice on the other half, write the outputs.

The default study name is the vector source and steered variant plus a digest of everything
that defines it: the objective (evaluator settings hash, layers, coefficient range,
threshold), the design (the trials target and the sampler's start) and the known trials it
starts from (the grid cell's latest sweep, `steering.sweep`, or an explicit known-results
log; imported without generation). Rerunning with the same params resumes that study;
changing any of them starts a new one, which is served every config already evaluated under
the same settings (the same questions included) from the results logs, its own included,
without taking them as its trials: a study is a function of its params, not of what ran
before. An explicit --study NAME whose objective differs is refused; its design and known
trials are the user's to extend (more trials, a grid's new configs).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steerops.errors import SteeropsError
from steerops.io import text_md5
from steerops.search.loop import LoopStats
from steerops.specs import MethodName, Position
from steerops.stats import BASELINE_INCOHERENT, NO_EFFECT, OK, UNSCORED, coherence_text
from steerops.steering.configs import Config, VectorSource


@dataclass
class Plan:
    trait: str
    source: VectorSource
    layers: list[int]
    min_coherence: float  # the held-out verdict's bar
    storage: str
    study: str
    settings: dict
    seed: int
    search_questions: list[str]
    heldout_questions: list[str]
    out_dir: Path
    known: list = field(default_factory=list)  # KnownResult: the trials it starts from
    known_from: str = ""  # where they came from, for the search's first line
    margin: float = 0.0  # search.coherence_margin: the search half's bar is the verdict's + this

    @property
    def search_bar(self) -> float:
        """The coherence a trial needs on the search half to be feasible and chosen."""
        return self.min_coherence + self.margin


def search_trait(
    params,
    trait: str,
    method: MethodName,
    position: Position,
    progress: bool = True,
    links: list[str] | None = None,
    news: list[bool] | None = None,
) -> dict | None:
    """Run (or resume) the study of one (trait, method, position) and write its outputs;
    returns best.json, or None when another worker of the study finalises it. One model
    load serves the search and the held-out evaluation. The MLflow run opens before the
    model loads (its duration covers the work); its link is appended to `links`, and to
    `news` whether it found anything new (a trial evaluated or imported, an output changed;
    True where tracking is off, which cannot tell)."""
    from steerops.io import tree_md5
    from steerops.judges.cached import CachedJudge
    from steerops.models.loading import model_source
    from steerops.search.heldout import split_questions
    from steerops.search.store import search_dir
    from steerops.steering.evaluate import SteeringEvaluator
    from steerops.steering.session import SteeringSession
    from steerops.tracking import model_input, track
    from steerops.traits import trait_dir

    st = params.steering
    folder = trait_dir(params.path(params.traits.root), trait)
    inputs = {
        "vectors": _vectors_dir(params, trait, method, position),
        "trait": folder,
        **model_input(model_source(params, st.variant)),  # the steered weights
    }
    tags = {
        "steerops.trait": trait,
        "steerops.method": method.name,
        "steerops.position": position.text,
        "steerops.component": st.component,
    }
    datasets = {f"{trait} questions": (folder / "steering.json", "questions")}
    name = f"search {method} {position} {trait}"
    # held: logged once something is new (a trial evaluated or imported, an output changed),
    # as `steer` opens no run for a rerun that finds its work done
    with track(
        params, "search", name, inputs=inputs, tags=tags, datasets=datasets, held=True
    ) as tracker:
        session = SteeringSession(params, trait, progress=progress)
        # The split follows the experiment's seed, not the sampler's: re-seeding a search
        # must not move questions between the search and held-out parts.
        search_q, heldout_q = split_questions(
            session.questions, params.search.heldout_fraction, params.seed
        )
        out_dir = search_dir(params.out, trait, st.variant, position, st.component, method)
        # The search keeps its own results log (and baselines) in its output folder, and is
        # served from the grid's scores (and an explicit known-results log) where they cover
        # it. The evaluator reads the pipeline's grid (paths.out) also in a scratch run
        # (--out), and the run's own grid where a scratch steer wrote one: the trials
        # imported from it are served, not generated.
        source = VectorSource.of(method, position, st.component)
        extra: tuple[Path, ...] = ()
        if params.search.known_results:
            extra += (params.path(params.search.known_results),)
        evaluator = SteeringEvaluator(session, search_q, results_dir=out_dir, read_also=extra)
        plan = make_plan(
            params,
            evaluator,
            source,
            search_q,
            heldout_q,
            out_dir,
        )
        tracker.set_tags({"optuna.study": plan.study})
        # workers share a study only when they start from the same grid: say which
        space = search_space(params, plan)
        held = sum(space.holds(k.layer, k.coefficient) for k in plan.known)
        outside = len(plan.known) - held
        print(
            f"steerops search: study {plan.study!r}, starting from {held} known configs "
            f"({plan.known_from})"
            + (f"; {outside} more there lie outside its range or layers" if outside else ""),
            file=sys.stderr,
        )
        study, stats = run_plan(params, plan, evaluator, tracker, progress)
        if stats.evaluated or stats.rows or stats.imported:
            tracker.keep()
        with study.finalising() as mine:  # one worker of the study finalises it
            tracker.set_tags({"steerops.search_role": "finaliser" if mine else "worker"})
            if not mine:
                print(
                    f"steerops search: study {plan.study!r} is complete; another worker "
                    "finalises it",
                    file=sys.stderr,
                )
                best = None
            else:
                held_eval = SteeringEvaluator(
                    session, heldout_q, results_dir=out_dir, read_also=extra
                )
                before = tree_md5(out_dir) if out_dir.is_dir() else None
                best = finish(params, plan, study, stats, evaluator, held_eval, tracker)
                if tree_md5(out_dir) != before:  # an output written anew
                    tracker.keep()
        session.say_judge_cost(tracker, progress)  # the search's trials and held-out part
        if isinstance(session.judge, CachedJudge) and (models := session.judge.served_summary()):
            # which model an endpoint named for the answers this run scored with
            tracker.set_tags({"steerops.judge_served": models})
    if tracker.active and not tracker.kept:
        print(
            "steerops search: every trial was served and no output changed: no new MLflow "
            "run (the runs that evaluated them hold these results)",
            file=sys.stderr,
        )
    link = tracker.link()
    if links is not None and link:
        links.append(link)
    if news is not None:
        news.append(tracker.kept or not tracker.active)
    return best


def sampler_identity(params) -> dict[str, Any]:
    """The sampler's part of a study's settings: another sampler, or a sampler seed apart
    from the split's, draws other trials, so it is another study (the results logs serve
    it what this one evaluated). The defaults stay out, so a study keeps the name it had
    before these were part of it."""
    cfg = params.search
    seed = params.seed if cfg.seed is None else cfg.seed
    out: dict[str, Any] = {}
    if seed != params.seed:
        out["sampler_seed"] = seed
    if cfg.sampler != "gp":
        out["sampler"] = cfg.sampler
    return out


def make_plan(
    params,
    evaluator,
    source: VectorSource,
    search_q: list[str],
    heldout_q: list[str],
    out_dir: Path,
) -> Plan:
    cfg, st = params.search, params.steering
    layers = evaluator.session.layers(cfg.layers or st.layers)
    # fail now, naming the layer (or its missing norm), not in the middle of the search
    evaluator.check([Config.single(source, layer, cfg.coef_max) for layer in layers])
    from steerops.search.storage import default_storage_url

    min_coherence = st.min_coherence if cfg.min_coherence is None else cfg.min_coherence
    settings = {
        "settings_hash": evaluator.settings_hash,
        "layers": layers,
        "coef_min": cfg.coef_min,
        "coef_max": cfg.coef_max,
        "min_coherence": min_coherence,
        # only when set: a study without one keeps its name
        **({"coherence_margin": cfg.coherence_margin} if cfg.coherence_margin else {}),
        "method": source.method,
        "position": source.position,
        "component": source.component,
        # other vectors (extracted again) are another study: its trials measured these
        "vector_files": evaluator.vector_files(source),
    }
    settings.update(sampler_identity(params))
    known, known_from = _known(params, evaluator, source, layers)
    # What else makes a default-named study another one: its design (a study of 8 trials
    # is not the first 8 of a study of 20) and the trials it starts from. Names only: an
    # explicit --study is the user's to continue (more trials, a grid's new configs).
    naming: dict[str, Any] = {
        "trials": cfg.trials,
        "startup_trials": startup_trials(cfg.startup_trials, cfg.trials, len(layers)),
        # the sampler proposes `batch` trials before it hears of any: another trajectory
        "batch": cfg.batch,
    }
    if known:
        naming["known"] = [[k.layer, k.coefficient] for k in known]
    if cfg.enqueue:  # points to try first: a study that has run its trials would not
        naming["enqueue"] = sorted(cfg.enqueue)
    seed = params.seed if cfg.seed is None else cfg.seed
    digest = text_md5(json.dumps({**settings, **naming}, sort_keys=True))[:8]
    name = cfg.study or ":".join(
        [
            evaluator.session.trait,
            st.vector_variant,
            source.method,
            source.position,
            source.component,
            st.variant,
            st.direction,
            digest,
        ]
    )
    storage = default_storage_url(params)
    return Plan(
        evaluator.session.trait,
        source,
        layers,
        min_coherence,
        storage,
        name,
        settings,
        seed,
        search_q,
        heldout_q,
        out_dir,
        known,
        known_from,
        cfg.coherence_margin,
    )


def _known(params, evaluator, source: VectorSource, layers: list[int]) -> tuple[list, str]:
    """The configs the study starts from, and where they came from: the explicit
    known-results log's, or those of the grid cell's latest sweep (`steering.sweep`), with
    scores on the search questions under the search's scope: a scratch run's own grid (a
    `steer --out DIR` before this `search --out DIR`) when it gives any, else the
    pipeline's or --inputs' (which a scratch search reads, never writes). The search's own
    log is not one: it serves the study's trials, so a study started again (another grid,
    a deleted optuna.db) asks what it asks, served."""
    from steerops.cli import display_path
    from steerops.search.known import load_known
    from steerops.steering.store import results_file
    from steerops.steering.sweep import sweep_keys

    cfg = params.search
    if not cfg.import_known:
        return [], "search.import_known: false"

    def weight_of(layer: int, coefficient: float) -> float:
        return evaluator.session.weights(Config.single(source, layer, coefficient))[0]

    def read(path: Path, sweep) -> list:
        return load_known(
            path,
            evaluator.scope,
            evaluator.questions,
            source.method,
            source.position,
            source.component,
            layers,
            evaluator.vector_files(source),
            required=cfg.known_results is not None,
            weight_of=weight_of,
            sweep=sweep,
        )

    if cfg.known_results:
        return read(params.path(cfg.known_results), None), (
            f"search.known_results {cfg.known_results}"
        )
    trait, variant = evaluator.session.trait, params.steering.variant
    grids = [results_file(out, trait, variant, source.at(0)) for out in (params.out, params.inputs)]
    for path in dict.fromkeys(grids):  # the run's own first; one that gives none is passed
        if path.is_file() and (known := read(path, sweep_keys(path.parent))):
            return known, f"the grid cell's latest sweep in {display_path(path.parent)}"
    return [], f"no grid config to start from in {display_path(grids[-1].parent)}"


def search_space(params, plan: Plan):
    """The configs the search may try: its coefficient range at its layers."""
    from steerops.search.study import Space

    cfg = params.search
    resolution = cfg.min_gap * (cfg.coef_max - cfg.coef_min)
    return Space(cfg.coef_min, cfg.coef_max, tuple(plan.layers), resolution)


def run_plan(params, plan: Plan, evaluator, tracker, progress: bool):
    from steerops.search.known import band_points
    from steerops.search.loop import run_search
    from steerops.search.storage import storage_label
    from steerops.search.study import SearchStudy

    cfg, st, src = params.search, params.steering, plan.source
    study = SearchStudy(
        plan.storage,
        plan.study,
        search_space(params, plan),
        plan.search_bar,
        plan.settings,
        sampler=cfg.sampler,
        seed=plan.seed,
        startup_trials=startup_trials(cfg.startup_trials, cfg.trials, len(plan.layers)),
        heartbeat_s=cfg.heartbeat_s,
        grace_s=cfg.grace_s,
        max_retry=cfg.max_retry,
    )
    for c in cfg.enqueue:
        for layer in plan.layers:
            study.enqueue(layer, c)
    waiting = study.n_waiting(cfg.enqueue) if cfg.enqueue else 0
    if waiting and (study.exhausted() or study.n_done() >= cfg.trials):
        # a study named with --study that has run its trials evaluates nothing more
        print(
            f"warning: search.enqueue: study {plan.study!r} already holds its {cfg.trials} "
            f"trials: {waiting} points of search.enqueue wait for a run with more (--trials)",
            file=sys.stderr,
        )
    # start where the known results found the feasible band
    base = evaluator.baseline() if plan.known else None
    if base is not None and base.trait_mean is not None:
        for layer, c in band_points(plan.known, base, plan.search_bar, cfg.coef_max, st.direction):
            study.enqueue(layer, c)
    tracker.log_params(
        {
            **evaluator.run_params(),  # what the grid's runs carry, to compare with them
            **{k: v for k, v in plan.settings.items() if k not in ("layers", "vector_files")},
            "layers": ",".join(map(str, plan.layers)),
            # one param: the file names are not MLflow key characters
            "vector_files": json.dumps(plan.settings["vector_files"], sort_keys=True),
            "study": plan.study,
            "storage": storage_label(plan.storage, params.root),
            "sampler": cfg.sampler,
            "trials": cfg.trials,
            "batch": cfg.batch,
            "seed": plan.seed,
            "enqueue": ",".join(f"{c:g}" for c in cfg.enqueue) or None,
            "min_gap": cfg.min_gap,
            "direction": st.direction,
            "n_search_questions": len(plan.search_questions),
        }
    )
    stats = run_search(
        study,
        evaluator,
        src,
        cfg.trials,
        cfg.batch,
        st.direction,
        known=plan.known,
        tracker=tracker,
        progress=progress,
    )
    return study, stats


def finish(params, plan: Plan, study, stats: LoopStats, evaluator, held_eval, tracker) -> dict:
    from steerops.search.heldout import earlier_reads, evaluate_heldout
    from steerops.search.plots import plot_search
    from steerops.search.results import (
        NO_FEASIBLE,
        best_summary,
        choose_best,
        coherent_unscored,
        selection_rows,
        unchosen_status,
    )
    from steerops.search.store import (
        BEST_CSV,
        BEST_FILE,
        PLOT_FILE,
        TRIALS_FILE,
        write_best,
        write_heldout_responses,
        write_trials_csv,
        written_heldout_responses,
    )
    from steerops.steering.store import RESULTS_FILE

    records = study.records()
    if not any(r.state == "complete" for r in records):
        refused, repeated = study.n_refused(), study.n_repeated_refused()
        also = f", and {repeated} more repeated their params unasked" if repeated else ""
        why = (
            f"the judge's endpoint refused answers of {refused} of them (a content filter?)"
            f"{also}: the search's next run asks them again"
            if refused
            else "the judge scored nothing"
        )
        raise SteeropsError(f"search: study {plan.study!r} has no completed trial ({why})")
    direction = params.steering.direction
    rows = selection_rows(records, evaluator, plan.source, direction, params.seed)
    pick = choose_best(rows, plan.search_bar)
    chosen = next((r for r in rows if r["trial"] is pick), None)
    held = None
    unchosen = NO_FEASIBLE
    if pick is None:
        base = stats.baseline_coherence
        unscored = coherent_unscored(records, plan.search_bar)
        unchosen = unchosen_status(rows, plan.search_bar, base, unscored, plan.min_coherence)
        why = (
            "trials reached it, none with a trait delta above zero beyond its interval"
            if unchosen == NO_EFFECT
            else "trials reached it, the judge gave none of them a trait score"
            if unchosen == UNSCORED
            else "no steered trial reached it"
            + (
                f" (min_coherence {plan.min_coherence:g} + search.coherence_margin {plan.margin:g})"
                if plan.margin
                else ""
            )
        )
        if unchosen == BASELINE_INCOHERENT:
            why += (
                f", nor does the unsteered model (coherence {coherence_text(base)} on the "
                "search half): check the judge's coherence scale, or lower the bar"
            )
        print(
            f"steerops search: {unchosen}: coherence >= {plan.search_bar:g}: {why}",
            file=sys.stderr,
        )
    else:
        config = Config.single(plan.source, pick.layer, pick.coefficient)
        args = (pick.layer, pick.coefficient, held_eval.settings_hash, plan.heldout_questions)
        written = written_heldout_responses(plan.out_dir, *args)
        held = evaluate_heldout(
            held_eval,
            config,
            direction,
            params.seed,
            written,
            min_coherence=plan.min_coherence,
            chosen_at=plan.search_bar,
        )
        held["read_before"] = earlier_reads(
            held_eval.results_dir / RESULTS_FILE,
            held_eval.settings_hash,
            pick.layer,
            pick.coefficient,
        )
    best = best_summary(params, plan, records, chosen, stats, held, unchosen)
    out = plan.out_dir
    out.mkdir(parents=True, exist_ok=True)
    intervals = {
        r["trial"].number: (r["selection_delta_lo"], r["selection_delta_hi"]) for r in rows
    }
    write_trials_csv(out / TRIALS_FILE, records, intervals)
    write_heldout_responses(out, held)
    plot_search(
        out / PLOT_FILE,
        records,
        pick,
        plan.search_bar,  # what made a trial feasible
        f"{plan.trait} {plan.source.method} {plan.source.position}",
        best,
    )
    write_best(out, best)
    held_metrics = held or {}
    searched = best.get("search") or {}
    tracker.log_metrics(
        {
            "search_trait_delta": pick.trait_delta if pick else None,
            "search_delta_lo": searched.get("delta_lo"),
            "search_delta_hi": searched.get("delta_hi"),
            "search_n": searched.get("n"),
            "search_coherence": pick.coherence_mean if pick else None,
            "heldout_n": held_metrics.get("n"),
            "heldout_trait_delta": held_metrics.get("trait_delta"),
            "heldout_delta_lo": held_metrics.get("delta_lo"),
            "heldout_delta_hi": held_metrics.get("delta_hi"),
            "heldout_p": held_metrics.get("p"),
            "heldout_coherence": held_metrics.get("coherence_mean"),
            "heldout_under_bar": held_metrics.get("under_bar"),  # answers, of coherence_scored
            "heldout_coherence_scored": held_metrics.get("coherence_scored"),
            "heldout_coherence_unscored": held_metrics.get("coherence_unscored"),
            "heldout_credited_delta": held_metrics.get("credited_delta"),
            "heldout_credited_lo": held_metrics.get("credited_lo"),
            "heldout_credited_hi": held_metrics.get("credited_hi"),
            # nothing chosen: no held-out verdict (no metric, as the grid's runs)
            **({} if best["feasible"] is None else {"feasible": float(best["feasible"])}),
            "n_trials": best["n_trials"],
            "n_generations": best["n_generations"]["total"],
            "n_generated_this_run": best["n_generations"]["this_run"],
            "n_repeated_refused": stats.repeated_refused,  # this run's
        }
    )
    tags = {"steerops.status": best["status"]}
    if best["feasible"] is not None:
        tags["steerops.feasible"] = best["feasible"]
    study.record_choice(
        None if pick is None else pick.number, best["status"], bool(best["feasible"])
    )
    if pick is not None:
        label = "best" if best["status"] == OK else "chosen"  # no effect: not a best
        tags |= {
            f"steerops.{label}": f"L{pick.layer} c{pick.coefficient:.4g}",
            "optuna.chosen_trial": pick.number,
        }
    tracker.set_tags(tags)
    for name in (BEST_FILE, BEST_CSV, TRIALS_FILE, PLOT_FILE):
        tracker.log_artifact(out / name)
    if pick is not None and held is not None:
        label = f"L{pick.layer} c{pick.coefficient:.4g}"
        rows = [{"config": label, **r} for r in held.get("responses", [])]
        tracker.log_table(rows, "heldout_responses.json")
    return best


def startup_trials(given: int | None, trials: int, n_layers: int) -> int:
    """The design size: as given, or one point per searched layer (at least 3) but never
    more than half the trials, so the sampler's model always gets the other half."""
    if given is not None:
        return given
    return max(1, min(max(3, n_layers), trials // 2))


def _vectors_dir(params, trait: str, method: MethodName, position: Position) -> Path:
    from steerops.vectors.store import vectors_dir

    st = params.steering
    return vectors_dir(params.inputs, trait, st.vector_variant, position, st.component, method)
