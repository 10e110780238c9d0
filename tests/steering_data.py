"""Steering results logs written by hand, in the layout and format `steerops steer` writes
(per-question scores included), and the documented bootstrap recomputed independently
(shared by the steering, search and report tests)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

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
) -> dict:
    return {
        "type": "config",
        "settings_hash": settings_hash_of(settings),
        "config": {
            "coefficient": coefficient,
            "vectors": [
                {
                    "layer": layer,
                    "component": COMPONENT,
                    "position": position,
                    "method": method,
                    "weight": coefficient * weight_per_unit,
                }
            ],
        },
        "vector_files": vector_files or {f"{method}|{position}|{COMPONENT}": "md5"},
        "vector_hashes": [vector_hash or f"{method}-{layer}"],
        "scores": [list(s) for s in scores],
        "result": {
            "trait_mean": float(np.mean([t for t, _ in scores])),
            "coherence_mean": float(np.mean([c for _, c in scores])),
            "n": len(scores),
        },
    }


def write_log(path: Path, entries: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        for e in entries:
            f.write(json.dumps(e) + "\n")
    return path


def cell_log(out: Path, method: str, position: str) -> Path:
    return steering_dir(out, TRAIT, VARIANT, position, COMPONENT, method) / "results.jsonl"


def reference_interval(d: np.ndarray, seed: int, resamples: int = 2000):
    """The documented paired bootstrap, written draw by draw."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(d), size=(resamples, len(d)))
    means = np.array([sum(d[i] for i in row) / len(row) for row in draws])
    return float(d.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))
