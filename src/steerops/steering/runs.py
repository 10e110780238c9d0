"""MLflow records of a steering sweep: a parent run per grid cell (its settings, its best
config and files) with a nested run per config, so the UI compares configs side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from steerops.steering.configs import ConfigResult
from steerops.steering.evaluate import SteeringEvaluator
from steerops.steering.store import CSV_FILE, CURVE_FILE, METRICS_FILE, RESULTS_FILE, joined


def config_params(result: ConfigResult) -> dict[str, Any]:
    """A config as flat MLflow params (multi-vector configs join fields with '+')."""
    assert result.config is not None
    refs = result.config.vectors
    return {
        "method": joined([r.method for r in refs]),
        "position": joined([r.position for r in refs]),
        "component": joined([r.component for r in refs]),
        "layer": joined([r.layer for r in refs]),
        "coefficient": result.config.coefficient,
        "weight": "+".join(f"{w:.6g}" for w in result.weights),
    }


def log_configs(tracker, evaluator: SteeringEvaluator, results: list[ConfigResult]) -> None:
    """A nested run per config under `tracker`'s run."""
    session = evaluator.session
    labels = {
        "model": session.model["id"],
        "variant": session.variant,
        "vector_variant": session.vector_variant,
        "trait": session.trait,
        "judge": session.judge.id,
        "scope": session.cfg.scope,
        "settings_hash": evaluator.settings_hash,
    }
    for result in results:
        params = {**labels, **config_params(result), "cached": result.cached}
        name = f"{params['method']} L{params['layer']} c{params['coefficient']}"
        with tracker.child(name, params) as child:
            child.log_metrics(
                {
                    "trait_mean": result.trait_mean,
                    "coherence_mean": result.coherence_mean,
                    "trait_delta": result.trait_delta,
                }
            )


def log_cell(
    tracker,
    evaluator: SteeringEvaluator,
    cell: dict[str, Any],
    layers: list[int],
    written: dict[str, Any],
    out_dir: Path,
) -> None:
    """The cell's parent run: its settings, the best-config metrics and its files."""
    session, cfg = evaluator.session, evaluator.session.cfg
    tracker.log_params(
        {
            "model": session.model["id"],
            "variant": session.variant,
            "vector_variant": session.vector_variant,
            "trait": session.trait,
            **cell,
            "layers": ",".join(map(str, layers)),
            "coefficients": ",".join(f"{c:g}" for c in cfg.coefficients),
            "coefficient_unit": cfg.coefficient_unit,
            "direction": cfg.direction,
            "judge": session.judge.id,
            "scope": cfg.scope,
            "max_new_tokens": cfg.max_new_tokens,
            "n_questions": len(evaluator.questions),
            "min_coherence": cfg.min_coherence,
            "settings_hash": evaluator.settings_hash,
        }
    )
    metrics = written["metrics"]
    tracker.log_metrics(
        {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    )
    for name in (CSV_FILE, METRICS_FILE, CURVE_FILE, RESULTS_FILE):
        tracker.log_artifact(out_dir / name)
    for path in written["responses"]:
        tracker.log_artifact(path, "responses")
