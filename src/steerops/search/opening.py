"""What opening a study checks and writes before any trial: its storage reachable and
its trials readable, the settings and constraint it was made with, its sampler, and the
words optuna-dashboard shows for it."""

from __future__ import annotations

from typing import Any

import optuna

from steerops.errors import SteeropsError
from steerops.search.storage import open_storage, quiet, study_lock
from steerops.search.trials import CONSTRAINT

METRIC_NAME = "trait_delta"  # what a trial's value is, as optuna-dashboard names it


def check_storage(
    storage_url: str,
    heartbeat_s: int,
    study: str | None = None,
    settings: dict[str, Any] | None = None,
    sampler: str = "gp",
) -> None:
    """Open the study storage and its workers' lock as `SearchStudy` will, then let go: a
    bad URL, a missing driver, an unreachable server, a journal folder that cannot be made
    or a database with no shared lock fails here, before a model loads or a run opens. So
    does a named `study` that exists with other `settings` (those known before the model
    loads) or constraints its sampler cannot read."""
    storage = open_storage(storage_url, heartbeat_s)
    try:
        study_lock(storage_url, storage, "check")
        if study is not None and study in {s.study_name for s in storage.get_all_studies()}:
            with quiet():
                existing = optuna.load_study(study_name=study, storage=storage)
            stored = existing.user_attrs.get("settings")
            if stored:  # a check only: the study's own settings are recorded when it opens
                check_settings(existing, study, {**stored, **(settings or {})})
            check_constraints(existing, study, sampler)
    finally:
        engine = getattr(storage, "engine", None)  # an RDB storage's pooled connections
        if engine is not None:
            engine.dispose()


def describe(study, min_coherence: float, settings: dict[str, Any]) -> None:
    """Once per study: the objective's name and, in words, what it optimises (the user attrs
    optuna-dashboard shows on the study's page)."""
    if study.metric_names is None:
        study.set_metric_names([METRIC_NAME])
    if "objective" in study.user_attrs:
        return
    layers = settings.get("layers") or []
    words = {
        "objective": "maximise the trait delta (trait_mean minus the unsteered baseline's, "
        "in the search direction) on the search questions",
        "constraint": f"coherence_mean >= {min_coherence:g} (feasible when the trial's "
        "constraint, that bar - coherence_mean, is <= 0; the bar is min_coherence plus any "
        "coherence_margin)",
        "vectors": f"{settings.get('method')} at {settings.get('position')} "
        f"({settings.get('component')})",
        "layers": ",".join(map(str, layers)),
        "coefficient_range": f"{settings.get('coef_min')} to {settings.get('coef_max')}",
    }
    for key, value in words.items():
        study.set_user_attr(key, value)


def check_constraints(study, name: str, sampler: str) -> None:
    """Refuse a study whose trials hold their coherence constraint unnamed (older steerops
    versions) to the GP sampler, which fails mid-search on trials whose constraint names
    differ; TPE reads both forms."""
    if sampler != "gp":
        return
    legacy = [
        t.number
        for t in study.get_trials(deepcopy=False)
        if t.constraints and CONSTRAINT not in t.constraints
    ]
    if legacy:
        raise SteeropsError(
            f"search.study {name!r}: {len(legacy)} trials hold their coherence constraint in "
            "the unnamed form of older steerops versions, which the GP sampler cannot mix "
            "with new trials: search with search.sampler: tpe, or start another study "
            "(search.study)"
        )


def make_sampler(kind: str, seed: int, startup_trials: int):
    if kind == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup_trials)
    if kind == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=startup_trials, constant_liar=True
        )
    raise SteeropsError(f"search.sampler: unknown sampler {kind!r} (gp or tpe)")


def check_settings(study, name: str, settings: dict[str, Any]) -> None:
    """A study's trials are only comparable under one objective; refuse to mix."""
    stored = study.user_attrs.get("settings")
    if stored is None:
        study.set_user_attr("settings", settings)
        return
    for key in sorted(set(stored) | set(settings)):
        if stored.get(key) != settings.get(key):
            # unset: a key the study or this run leaves at its default (or an older study
            # never recorded)
            was, now = stored.get(key), settings.get(key)
            ran = f"{key} unset" if was is None else f"{key}={was!r}"
            raise SteeropsError(
                f"search.study: study {name!r} was run with {ran}, not "
                f"{'unset' if now is None else repr(now)}; pass --study NEW_NAME for a new study"
            )
