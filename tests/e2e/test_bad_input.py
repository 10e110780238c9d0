"""Bad input of every class is one error line and exit code 2, and changes no file: not the
outputs already there, not the tracking store (no MLflow run is opened for it)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from conftest import command_of, write_params
from steerops.cli import main
from steerops.config import load_params
from steerops.extract.store import activations_dir
from steerops.extract.trait import extract_trait
from steerops.models.loading import load_model


@pytest.fixture(scope="module")
def project(tmp_path_factory, toy_world) -> Path:
    """A project with finished trait activations (prompt[-1], layer 1) and its own copy of
    the trait datasets; MLflow tracking on, in a database that does not exist yet."""
    folder = tmp_path_factory.mktemp("project")
    shutil.copytree(toy_world / "traits", folder / "traits")
    params_file = write_params(
        folder,
        toy_world,
        traits={"root": str(folder / "traits"), "names": ["toy/refusal"]},
        extraction={"positions": ["prompt[-1]"], "layers": "1"},
        tracking={"enabled": False},
    )
    params = load_params(params_file)
    extract_trait(params, load_model(params, "base"), "toy/refusal", "prompt[-1]", [1])
    write_params(
        folder,
        toy_world,
        traits={"root": str(folder / "traits"), "names": ["toy/refusal"]},
        extraction={"positions": ["prompt[-1]"], "layers": "1"},
    )
    return folder


def _params_with(project: Path, name: str, **changes) -> Path:
    data = yaml.safe_load((project / "params.yaml").read_text())
    for key, value in changes.items():
        block, _, field = key.partition(".")
        if field:
            data.setdefault(block, {})[field] = value
        else:
            data[block] = value
    path = project / name
    path.write_text(yaml.safe_dump(data))
    return path


def _activations(project: Path) -> Path:
    out = activations_dir(project / "outputs", "toy/refusal", "base", "prompt[-1]", "residual")
    return out / "activations.safetensors"


def nan_in_params(p: Path) -> list[str]:
    path = p / "nan.yaml"
    path.write_text((p / "params.yaml").read_text() + "steering: {coefficients: [.nan]}\n")
    return ["steer", "--params", str(path)]


def overflow_in_params(p: Path) -> list[str]:
    path = p / "overflow.yaml"
    path.write_text((p / "params.yaml").read_text() + "steering: {coefficients: [1.0e+400]}\n")
    return ["steer", "--params", str(path)]


def non_utf8_params(p: Path) -> list[str]:
    path = p / "latin1.yaml"
    path.write_bytes((p / "params.yaml").read_bytes() + b"# caf\xe9\n")
    return ["extract", "--params", str(path)]


def non_utf8_prompts(p: Path) -> list[str]:
    trait = p / "traits" / "bad" / "latin1"
    trait.mkdir(parents=True, exist_ok=True)
    (trait / "positive.txt").write_bytes(b"how do i make a bomb ?\nbake a g\xe2teau ?\n")
    (trait / "negative.txt").write_text("how do i bake bread ?\n")
    return ["extract", "--trait", "bad/latin1"]


def non_utf8_steering_json(p: Path) -> list[str]:
    trait = p / "traits" / "bad" / "latin1json"
    shutil.copytree(p / "traits" / "toy" / "refusal", trait, dirs_exist_ok=True)
    (trait / "steering.json").write_bytes(b'{"questions": ["caf\xe9 ?"]}')
    return ["generate", "--trait", "bad/latin1json"]


def pickled_model(p: Path) -> list[str]:
    from safetensors.torch import load_file

    model = p / "pickled_model"
    if not model.exists():
        shutil.copytree(Path(load_params(p / "params.yaml").models["base"].id), model)
        torch.save(load_file(model / "model.safetensors"), model / "pytorch_model.bin")
        (model / "model.safetensors").unlink()
    params = _params_with(p, "pickled.yaml", models={"base": {"id": str(model)}})
    return ["extract", "--params", str(params)]


def truncated_model(p: Path) -> list[str]:
    model = p / "truncated_model"
    if not model.exists():
        shutil.copytree(Path(load_params(p / "params.yaml").models["base"].id), model)
        weights = model / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:-64])
    params = _params_with(p, "truncated.yaml", models={"base": {"id": str(model)}})
    return ["calibrate", "--params", str(params), "--variant", "base"]


def truncated_activations(p: Path) -> list[str]:
    path = _activations(p)
    path.write_bytes(path.read_bytes()[:-64])
    return ["vectors", "--methods", "mean_diff"]


def pickled_activations(p: Path) -> list[str]:
    torch.save({"layer_1": torch.zeros(4, 96)}, _activations(p))
    return ["vectors", "--methods", "mean_diff"]


def flipped_activations(p: Path) -> list[str]:
    data = bytearray(_activations(p).read_bytes())
    data[-3] ^= 0x20  # same size, intact header: only the recorded MD5 tells
    _activations(p).write_bytes(bytes(data))
    return ["vectors", "--methods", "mean_diff"]


def out_is_a_file(p: Path) -> list[str]:
    (p / "not_a_folder").write_text("x")
    return ["extract", "--out", str(p / "not_a_folder")]


def out_under_a_file(p: Path) -> list[str]:
    (p / "not_a_folder").write_text("x")
    return ["generate", "--out", str(p / "not_a_folder" / "run")]


def pipeline_and_out(p: Path) -> list[str]:
    return ["steer", "--pipeline", "--out", str(p / "run"), "--method", "mean_diff"]


def folder_tracking_store(p: Path) -> list[str]:
    params = _params_with(p, "folder_store.yaml", **{"tracking.uri": str(p / "mlruns")})
    return ["generate", "--params", str(params)]


def duplicate_key(p: Path) -> list[str]:
    text = (p / "params.yaml").read_text() + "\nseed: 3\nseed: 4\n"
    (p / "twice.yaml").write_text(text)
    return ["extract", "--params", str(p / "twice.yaml")]


def scores_csv_is_a_folder(p: Path) -> list[str]:
    (p / "scores").mkdir(exist_ok=True)
    comparisons = p / "comparisons.jsonl"
    comparisons.write_text('{"a": "t1", "b": "t2", "winner": "a"}\n')
    return [
        "probe",
        "thurstonian",
        "--comparisons",
        str(comparisons),
        "--out-csv",
        str(p / "scores"),
    ]


def known_results_missing_without_import(p: Path) -> list[str]:
    return [
        "search",
        "--known-results",
        str(p / "none.jsonl"),
        "--no-known",
        "--method",
        "mean_diff",
    ]


def empty_experiment(p: Path) -> list[str]:
    return ["extract", "--params", str(_params_with(p, "empty.yaml", experiment=""))]


def blank_experiment(p: Path) -> list[str]:
    return ["generate", "--params", str(_params_with(p, "blank.yaml", experiment="  "))]


def trait_dot_dot(p: Path) -> list[str]:
    return ["extract", "--trait", "../../outside"]


def trait_dot_dot_part(p: Path) -> list[str]:
    return ["generate", "--trait", "toy/.."]


def trait_absolute(p: Path) -> list[str]:
    return ["vectors", "--trait", "/tmp/outside"]


def trait_dot_dot_steer(p: Path) -> list[str]:
    return ["steer", "--trait", "toy/../../x"]


def tasks_name_escapes(p: Path) -> list[str]:
    tasks = p / "tasks.jsonl"
    tasks.write_text('{"task_id": "a", "prompt": "hi"}\n')
    params = _params_with(p, "tasks.yaml", **{"probes.tasks_name": "../../x"})
    return ["extract", "--params", str(params), "--tasks", str(tasks)]


def trait_with_tasks(p: Path) -> list[str]:
    tasks = p / "tasks.jsonl"
    tasks.write_text('{"task_id": "a", "prompt": "hi"}\n')
    return ["extract", "--tasks", str(tasks), "--trait", "toy/refusal"]


def only_coefficient_zero(p: Path) -> list[str]:
    return ["steer", "--coefficients", "0", "--method", "mean_diff", "--position", "prompt[-1]"]


def subset_of_one(p: Path) -> list[str]:
    return ["steer", "--subset", "1", "--method", "mean_diff", "--position", "prompt[-1]"]


def variant_escapes(p: Path) -> list[str]:
    params = _params_with(p, "variant.yaml", models={"../x": {"id": "model"}})
    return ["vectors", "--params", str(params), "--variant", "../x"]


CASES: list[tuple[Callable[[Path], list[str]], str]] = [
    (nan_in_params, "steering.coefficients.0: '.nan' is not a finite number"),
    (overflow_in_params, "steering.coefficients.0: '1.0e+400' is out of range"),
    (non_utf8_params, "latin1.yaml:"),
    (non_utf8_prompts, "positive.txt:2: not UTF-8 text"),
    (non_utf8_steering_json, "steering.json:1: not UTF-8 text"),
    (pickled_model, "only pickled weights (pytorch_model.bin)"),
    (truncated_model, "model.safetensors is not a complete safetensors file"),
    (truncated_activations, "not a complete safetensors file"),
    (pickled_activations, "not a complete safetensors file"),
    (
        flipped_activations,  # the command names the variant: it rebuilds these very activations
        "does not match the MD5 in metadata.json; rerun `steerops extract --trait toy/refusal "
        "--variant base --position",
    ),
    (out_is_a_file, "--out: "),
    (out_under_a_file, "not_a_folder is a file, not a folder"),
    (pipeline_and_out, "--pipeline writes the pipeline's outputs"),
    (folder_tracking_store, "MLFLOW_ALLOW_FILE_STORE"),
    (duplicate_key, "seed: duplicate key (lines"),
    (scores_csv_is_a_folder, "scores is a folder, not a file"),
    (known_results_missing_without_import, "--known-results: file not found"),
    (empty_experiment, "experiment: "),
    (blank_experiment, "experiment: "),
    (trait_dot_dot, "trait '../../outside'"),
    (trait_dot_dot_part, "trait 'toy/..'"),
    (trait_absolute, "trait '/tmp/outside': an absolute path"),
    (trait_dot_dot_steer, "trait 'toy/../../x'"),
    (tasks_name_escapes, "probes.tasks_name: '../../x' is not a plain folder name"),
    (variant_escapes, "'../x' is not a plain folder name"),
    (only_coefficient_zero, "--coefficients: only 0, the unsteered model"),
    (subset_of_one, "needs at least 2 distinct questions, got 1, under --subset 1"),
    (trait_with_tasks, "--trait: task-set mode (--tasks) extracts the tasks"),
]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(f.relative_to(folder)): f.read_bytes() for f in folder.rglob("*") if f.is_file()}


@pytest.mark.parametrize("setup, message", CASES, ids=[c[0].__name__ for c in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(
    project, setup, message, capsys, monkeypatch
):
    monkeypatch.chdir(project)  # the default ./params.yaml
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    good = _activations(project).read_bytes()
    try:
        argv = setup(project)
        before = _snapshot(project)
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err  # refused before any work: no bar, warning or traceback
        prefix = f"steerops {command_of(argv)}: error: "
        assert err[-1].startswith(prefix) and message in err[-1], err[-1]
        assert _snapshot(project) == before  # no output, store or tracking file changed
        assert not (project / "mlflow.db").exists()  # no MLflow run was opened
    finally:
        _activations(project).write_bytes(good)
        (project / "mlflow.db").unlink(missing_ok=True)  # cases stay independent
