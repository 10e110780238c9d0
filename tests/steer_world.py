"""A toy experiment ready to steer: params on the toy world and seeded random unit vectors
per layer, written where the vectors stage writes them (shared by the scratch-run and
tracking tests, which need a steerable cell, not a good one)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from conftest import write_params
from steerops.config import load_params
from steerops.vectors.store import save_vectors, vectors_dir

TRAIT, POSITION = "toy/refusal", "prompt[-1]"
SMALL = ["--subset", "4", "--max-new-tokens", "6", "--layers", "1,2", "--coefficients", "0.5,1"]


def steer_params(folder: Path, toy: Path, methods=("mean_diff",), **blocks) -> Path:
    path = write_params(folder, toy, **blocks)
    params = load_params(path)
    config = json.loads((toy / "model" / "config.json").read_text())
    gen = torch.Generator().manual_seed(0)
    for method in methods:
        vectors = {}
        for layer in range(config["num_hidden_layers"]):
            v = torch.randn(config["hidden_size"], generator=gen)
            vectors[layer] = v / v.norm()
        meta = {
            "method": method,
            "trait": TRAIT,
            "variant": "base",
            "position": POSITION,
            "component": "residual",
            "layers": {str(layer): {"mean_norm": 20.0} for layer in vectors},
        }
        save_vectors(
            vectors_dir(params.inputs, TRAIT, "base", POSITION, "residual", method), vectors, meta
        )
    return path
