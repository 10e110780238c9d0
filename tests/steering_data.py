"""Steering results logs written by hand, in the layout and format `steerops steer` writes
(per-question scores included), and the documented bootstrap recomputed independently
(shared by the steering, search and report tests)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy import stats as scipy_stats

from steerops.steering.store import steering_dir

TRAIT, VARIANT, COMPONENT = "toy/refusal", "instruct", "residual"
SETTINGS = {
    "trait": TRAIT,
    "model": {"variant": VARIANT, "id": "m"},
    "vector_variant": "base",
    "max_new_tokens": 24,
    "judge": "toy:exact",
    "scope": "all",
    "direction": "positive",
    "coefficient_unit": "norm",
}


def settings_for(questions: list[str], **changes) -> dict:
    return {
        **SETTINGS,
        **changes,
        "questions_hash": "|".join(questions),
        "n_questions": len(questions),
    }


def settings_hash_of(settings: dict) -> str:
    from steerops.steering.evaluate import settings_hash

    return settings_hash(settings)


def baseline_entry(settings: dict, questions: list[str], scores: list) -> dict:
    traits = [t for t, _ in scores if t is not None]
    cohs = [c for _, c in scores if c is not None]
    return {
        "type": "baseline",
        "settings_hash": settings_hash_of(settings),
        "settings": settings,
        "questions": questions,
        "scores": [list(s) for s in scores],
        "result": {
            "trait_mean": float(np.mean(traits)),
            "coherence_mean": float(np.mean(cohs)),
            "n": len(scores),
        },
    }


def config_entry(
    settings: dict,
    method: str,
    position: str,
    layer: int,
    coefficient: float,
    scores: list,
    vector_hash: str | None = None,
    weight_per_unit: float = 10.0,
    vector_files: dict | None = None,
    component: str = COMPONENT,
) -> dict:
    return {
        "type": "config",
        "settings_hash": settings_hash_of(settings),
        "config": {
            "coefficient": coefficient,
            "vectors": [
                {
                    "layer": layer,
                    "component": component,
                    "position": position,
                    "method": method,
                    "weight": coefficient * weight_per_unit,
                }
            ],
        },
        "vector_files": vector_files or {f"{method}|{position}|{component}": "md5"},
        "vector_hashes": [vector_hash or f"{method}-{layer}"],
        "scores": [list(s) for s in scores],
        "result": {
            # over the answers scored, as `configs.summarize` means them
            "trait_mean": float(np.mean([t for t, _ in scores if t is not None])),
            "coherence_mean": float(np.mean([c for _, c in scores if c is not None])),
            "n": len(scores),
        },
    }


def write_log(path: Path, entries: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        for e in entries:
            f.write(json.dumps(e) + "\n")
    return path


def cell_log(
    out: Path, method: str, position: str, variant: str = VARIANT, component: str = COMPONENT
) -> Path:
    return steering_dir(out, TRAIT, variant, position, component, method) / "results.jsonl"


def reference_interval(d: np.ndarray, seed: int, resamples: int = 20_000, confidence=0.95):
    """The documented paired bootstrap, written draw by draw."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(d), size=(resamples, len(d)))
    means = np.array([sum(d[i] for i in row) / len(row) for row in draws])
    # Hesterberg's expanded percentile tail, from scipy's t and normal distributions
    n = len(d)
    z = np.sqrt(n / (n - 1)) * scipy_stats.t.ppf(0.5 + confidence / 2, n - 1) if n > 1 else None
    tail = scipy_stats.norm.cdf(-z) if n > 1 else (1 - confidence) / 2
    return float(d.mean()), float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def refusing(questions: list[str], fraction: float) -> set[str]:
    """The first `fraction` of `questions` (the ones a config makes refuse)."""
    return set(questions[: round(fraction * len(questions))])


def write_grid(
    out: Path,
    cells: dict[tuple[str, str], list[tuple]],
    questions: list[str],
    seed: int = 0,
    heldout_fraction: float = 0.5,
    same_vectors: dict[str, str] | None = None,
    baseline_trait: float = 0.0,
    settings_of: dict[str, dict] | None = None,
    variant: str = VARIANT,
    component: str = COMPONENT,
) -> tuple[list[str], list[str]]:
    """Cell logs as `steerops steer` writes them. `cells[(method, position)]` lists configs
    `(layer, coefficient, selection refusal fraction, held-out refusal fraction, coherence)`;
    the baseline scores `baseline_trait` (coherence 100) and a "refusing" question
    100 - `baseline_trait`. `same_vectors` maps a method to the one whose vector hashes it
    shares; `settings_of` a method to its cell's changed settings (e.g. another scope);
    `variant` the steered model variant the cells' folders name, `component` the one their
    vectors steer. Returns the (selection,
    held-out) questions of the split."""
    from steerops.stats import split_questions

    selection, heldout = split_questions(questions, heldout_fraction, seed)
    base = [(baseline_trait, 100.0)] * len(questions)
    for (method, position), configs in cells.items():
        settings = settings_for(questions, **(settings_of or {}).get(method, {}))
        entries = [baseline_entry(settings, questions, base)]
        same = (same_vectors or {}).get(method, method)
        for layer, coef, sel, held, coherence in configs:
            refuse = refusing(selection, sel) | refusing(heldout, held)
            moved = 100.0 - baseline_trait
            scores = [(moved if q in refuse else baseline_trait, coherence) for q in questions]
            entries.append(
                config_entry(
                    settings,
                    method,
                    position,
                    layer,
                    coef,
                    scores,
                    vector_hash=f"{same}-{layer}",
                    component=component,
                )
            )
        write_log(cell_log(out, method, position, variant, component), entries)
    return selection, heldout
