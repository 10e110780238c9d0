"""Hand-made activations with planted directions, written as `steerops extract` writes them, and
params pointing at them (shared by the vectors tests).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import yaml

from steerops.config.models import TOY_MODEL
from steerops.extract.store import activations_dir
from steerops.io import write_json

TRAIT, POSITION = "toy/refusal", "prompt[-1]"


LAYERS = (0, 1, 2)


def planted(
    n_pos: int,
    n_neg: int,
    d: int,
    seed: int,
    shift: float = 1.5,
    massive: dict[int, float] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian classes separated along a random unit direction `u`; `massive` adds large
    per-row values (mean given, 5% spread) at chosen dims, like a model's massive dims."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=d)
    u /= np.linalg.norm(u)
    pos = rng.normal(size=(n_pos, d)) + shift * u
    neg = rng.normal(size=(n_neg, d)) - shift * u
    for dim, value in (massive or {}).items():
        pos[:, dim] += value * (1 + 0.05 * rng.normal(size=n_pos))
        neg[:, dim] += value * (1 + 0.05 * rng.normal(size=n_neg))
    return pos, neg, u


def write_activations(
    out: Path,
    data: dict[int, np.ndarray],
    n_pos: int,
    *,
    n_val: int = 0,
    trait: str = TRAIT,
    variant: str = "base",
    position: str = POSITION,
    component: str = "residual",
    hidden_size: int | None = None,
    model: dict | None = None,
) -> Path:
    """Activations in the extract contract: rows [pos..., neg...]; the last `n_val` of each
    class are the val split; `model`: the model record (default: the toy model params name
    by default, with no weights fingerprint). Returns the directory."""
    n, d = next(iter(data.values())).shape
    n_neg = n - n_pos
    examples = []
    for polarity, count, offset in (("positive", n_pos, 0), ("negative", n_neg, n_pos)):
        for k in range(count):
            examples.append(
                {
                    "index": offset + k,
                    "polarity": polarity,
                    "source_index": k,
                    "rollout": 0,
                    "split": "val" if k >= count - n_val else "train",
                }
            )
    directory = activations_dir(out, trait, variant, position, component)
    from steerops.io import save_tensors

    save_tensors(
        directory / "activations.safetensors",
        {f"layer_{layer}": torch.tensor(x, dtype=torch.float32) for layer, x in data.items()},
    )
    write_json(
        directory / "metadata.json",
        {
            "trait": trait,
            # the model params name by default (vectors refuse activations of another)
            "model": model or {"variant": variant, "id": TOY_MODEL, "revision": None},
            "position": position,
            "component": component,
            "layers": sorted(data),
            "hidden_size": hidden_size or d,
            "num_layers": len(data),
            "dtype": "float32",
            "seed": 0,
            "examples": examples,
            "mean_norm": {
                str(layer): float(np.linalg.norm(x, axis=1).mean()) for layer, x in data.items()
            },
            "counts": {"positive": n_pos, "negative": n_neg},
            "source_hash": "synthetic",
        },
    )
    return directory


def params_file(folder: Path, **blocks) -> Path:
    """params.yaml with outputs in `folder/outputs`; tracking off unless a block sets it."""
    data = {
        "paths": {"out": str(folder / "outputs")},
        "traits": {"names": [TRAIT]},
        "extraction": {"variant": "base", "positions": [POSITION]},
        "tracking": {"enabled": False},
    }
    data.update(blocks)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def stacked(
    n_pos: int = 30, n_neg: int = 30, d: int = 12, massive: dict[int, float] | None = None
) -> tuple[dict[int, np.ndarray], int]:
    data = {}
    for layer in LAYERS:
        pos, neg, _ = planted(n_pos, n_neg, d, seed=10 + layer, massive=massive)
        data[layer] = np.concatenate([pos, neg])
    return data, n_pos


def cosine(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
