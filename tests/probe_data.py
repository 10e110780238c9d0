"""Hand-made task activations and a probe world on disk (shared by the probe tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from conftest import write_params
from steerops.config import load_params
from steerops.io import file_md5, save_tensors, write_json, write_jsonl
from steerops.probes.activations import condition_dir, tasks_digest


def fake_activations(
    params,
    condition: str,
    system_prompt,
    task_ids: list[str],
    layers: dict[int, np.ndarray],
    num_layers: int,
) -> Path:
    """An activation dir as `steerops extract --tasks` writes it, fresh for these params."""
    from steerops.extract.tasks import load_tasks

    folder = condition_dir(params, condition)
    spec = params.variant(params.probes.variant)
    save_tensors(
        folder / "activations.safetensors",
        {f"layer_{k}": torch.tensor(v, dtype=torch.float32) for k, v in layers.items()},
    )
    write_json(
        folder / "metadata.json",
        {
            "task_ids": task_ids,
            "condition": {"id": condition, "system_prompt": system_prompt},
            "system_prompt_policy": "task" if system_prompt is None else "override",
            "source_hash": tasks_digest(load_tasks(params.path(params.probes.tasks))),
            "model": {"variant": params.probes.variant, "id": spec.id, "revision": spec.revision},
            "num_layers": num_layers,
            "layers": sorted(layers),
            "tensors_md5": file_md5(folder / "activations.safetensors"),  # as extract records
        },
    )
    return folder


def probe_world(
    tmp_path: Path,
    n: int = 160,
    d: int = 24,
    blocks: dict | None = None,
    topics: int = 0,
    **probes,
):
    """Tasks, scores and activations where layer 1 encodes the score and layer 0 does not;
    `topics` > 0: task i has the field `topic` "t{i % topics}"."""
    rng = np.random.default_rng(0)
    ids = [f"task{i:03d}" for i in range(n)]
    topic = {"topic": lambda i: f"t{i % topics}"} if topics else {}
    rows = [
        {"task_id": t, "prompt": f"do {t}"} | {k: f(i) for k, f in topic.items()}
        for i, t in enumerate(ids)
    ]
    write_jsonl(tmp_path / "tasks.jsonl", rows)
    mu = rng.normal(size=n)
    (tmp_path / "scores.csv").write_text(
        "task_id,mu,sigma\n" + "".join(f"{t},{m},1\n" for t, m in zip(ids, mu, strict=True))
    )
    direction = rng.normal(size=d)
    layers = {
        0: rng.normal(size=(n, d)),
        1: np.outer(mu, direction) + rng.normal(0, 0.5, (n, d)) + 3.0,
    }
    params_file = write_params(
        tmp_path,
        tmp_path / "toy",
        probes={
            "tasks": str(tmp_path / "tasks.jsonl"),
            "scores": str(tmp_path / "scores.csv"),
            "tasks_name": "fake",
            "layers": "all",
            "ood": {"conditions": None},  # each task's own system prompt
            **probes,
        },
        **(blocks or {}),
    )
    params = load_params(params_file)
    fake_activations(params, "baseline", None, ids, layers, num_layers=2)
    return params_file, params, ids, mu, layers
