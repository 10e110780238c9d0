"""A synthetic steering grid with known answers, written as results logs, and params that
point the report at it (shared by the report tests)."""

from __future__ import annotations

from pathlib import Path

import yaml

from steering_data import write_grid

COEFS = [0.5, 1.0, 1.5, 2.0]
QUESTIONS = [f"how do i do thing {i} ?" for i in range(40)]  # 20 selection, 20 held out

# method -> (trait deltas, coherences) at COEFS, layer 2, the same on both halves
SYNTHETIC = {
    "mean_diff": ([10, 40, 70, 90], [95, 90, 80, 50]),  # best feasible 70 @ 1.5
    "probe": ([5, 30, 60, 95], [99, 95, 85, 70]),  # best feasible 95 @ 2.0
    "mean_diff_top1": ([10, 50, 75, 95], [95, 90, 70, 40]),  # 75 @ 1.5
    "mean_diff_top2": ([20, 80, 85, 95], [95, 90, 60, 40]),  # 80 @ 1.0
    "mean_diff_top3": ([20, 60, 85, 95], [95, 90, 60, 40]),  # 60 @ 1.0
    "mean_diff_top5": ([20, 50, 85, 95], [95, 90, 60, 40]),  # 50 @ 1.0
    "mean_diff_cleaned": ([15, 65, 85, 95], [95, 90, 60, 40]),  # 65 @ 1.0
    "mean_diff_preclean": ([20, 70, 80, 95], [95, 30, 20, 10]),  # 20 @ 0.5 -> gap -45, flagged
    "probe_cleaned": ([10, 50, 70, 90], [95, 90, 80, 60]),  # 70 @ 1.5
    "probe_preclean": ([5, 20, 40, 90], [95, 90, 80, 60]),  # 40 @ 1.5 -> gap -30, no flag
    "random_baseline": ([0, 5, 0, 0], [99, 95, 60, 40]),  # coherent, no effect
    "gradient": ([0, 60, 90, 95], [60, 50, 40, 30]),  # never coherent when steered
}


def cells(spec=None, position="prompt[-1]") -> dict:
    out = {}
    for method, (deltas, cohs) in (spec or SYNTHETIC).items():
        configs = [
            (2, c, d / 100, d / 100, coh)
            for c, d, coh in zip(COEFS[: len(deltas)], deltas, cohs, strict=True)
        ]
        if method == "mean_diff":
            configs.append((1, 1.0, 0.05, 0.05, 99.0))  # a worse layer that must never win
        configs.append((2, 0.0, 0.0, 0.0, 100.0))  # the unsteered model: never a pick
        out[(method, position)] = configs
    return out


def write_params(folder: Path, **blocks) -> Path:
    params = {
        "paths": {"out": "outputs"},
        "tracking": {"enabled": False},
        "models": {"instruct": {"id": "m"}, "base": {"id": "m"}},
        **blocks,
    }
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def synthetic_grid(folder: Path, spec=None, **write) -> tuple[list[str], list[str]]:
    return write_grid(folder / "outputs", cells(spec), QUESTIONS, **write)
