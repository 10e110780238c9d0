"""Shared fixtures: the toy world (built once per session) and params pointing at it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

# The models under test are tiny: one thread avoids oversubscription overhead that makes
# them many times slower when the two cores are shared.
torch.set_num_threads(1)


def pytest_collection_modifyitems(items) -> None:
    """Tests that use the toy world build it (about 90 s) unless STEEROPS_TEST_TOY gives one:
    they are slow, as are the end-to-end runs in tests/e2e."""
    for item in items:
        if "toy_world" in getattr(item, "fixturenames", ()) or "e2e" in item.path.parts:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def toy_world(tmp_path_factory) -> Path:
    """The toy world built with the default seed (model, traits, calibration prompts).

    STEEROPS_TEST_TOY=DIR reuses a world already built with the default seed (local runs)."""
    import os
    import shutil

    from steerops.toy.build import build_toy_world

    out = tmp_path_factory.mktemp("toy")
    prebuilt = os.environ.get("STEEROPS_TEST_TOY")
    if prebuilt:
        shutil.copytree(prebuilt, out, dirs_exist_ok=True)
        return out
    build_toy_world(out, seed=0, progress=False)
    return out


def write_params(folder: Path, toy: Path, **blocks) -> Path:
    """A params.yaml in `folder` using the toy world, outputs under `folder/outputs`, and
    MLflow tracking in a sqlite file of its own. `blocks` update top-level params blocks."""
    params = {
        "paths": {"toy": str(toy), "out": str(folder / "outputs")},
        "models": {
            "base": {"id": str(toy / "model")},
            "instruct": {"id": str(toy / "model")},
        },
        "traits": {"root": str(toy / "traits"), "names": ["toy/refusal"]},
        "calibration": {"prompts": str(toy / "calibration.jsonl")},
        "judge": {"kind": "toy", "cache_dir": str(folder / "judge_cache")},
        "tracking": {"uri": f"sqlite:///{folder / 'mlflow.db'}"},
    }
    for key, value in blocks.items():
        if isinstance(value, dict) and isinstance(params.get(key), dict):
            params[key].update(value)
        else:
            params[key] = value
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.fixture
def toy_params(tmp_path, toy_world) -> Path:
    """Path of a params.yaml for the toy world with outputs in a fresh tmp dir."""
    return write_params(tmp_path, toy_world)
