"""Runs of a temporary DVC experiment workspace (`dvc exp run --temp`, queued experiments)
are logged to the repository's own MLflow store, not to one removed with the workspace."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

import steerops
from steerops.config import load_params
from steerops.tracking.store import tracking_uri
from steerops.workspace import lasting_folder

SRC = str(Path(steerops.__file__).resolve().parents[1])  # the steerops under test


def test_a_folder_of_a_temporary_workspace_maps_to_the_repository(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    repo = tmp_path / "repo"
    copy = repo / ".dvc" / "tmp" / "exps" / "standalone" / "tmpab12"
    (copy / ".dvc").mkdir(parents=True)
    (copy / "experiments" / "toy").mkdir(parents=True)
    (copy / "experiments" / "toy" / "params.yaml").write_text("experiment: t\n")
    params = load_params(copy / "experiments" / "toy" / "params.yaml")
    assert tracking_uri(params) == f"sqlite:///{repo / 'experiments' / 'toy' / 'mlflow.db'}"
    # a repository made with `dvc init --subdir`: the DVC root is below the copy's top
    sub = repo / "proj" / ".dvc" / "tmp" / "exps" / "tmpcd34"
    (sub / "proj" / ".dvc").mkdir(parents=True)
    assert lasting_folder(sub / "proj") == repo / "proj"
    assert lasting_folder(tmp_path / "elsewhere") == tmp_path / "elsewhere"


def test_the_study_and_the_judge_cache_of_a_temporary_workspace_last(tmp_path):
    """The default Optuna storage and the judge cache (no DVC outputs) of a temporary
    workspace's stage live in the repository, as its MLflow store does."""
    from steerops.judges.cache import cache_folder
    from steerops.search.storage import default_storage_url

    repo = tmp_path / "repo"
    copy = repo / ".dvc" / "tmp" / "exps" / "run" / "tmpef56"
    (copy / ".dvc").mkdir(parents=True)
    (copy / "params.yaml").write_text("experiment: t\n")
    params = load_params(copy / "params.yaml")
    assert default_storage_url(params) == f"sqlite:///{repo / 'optuna.db'}"
    assert cache_folder(params) == repo / "outputs" / "judge_cache"
    (repo / "params.yaml").write_text("experiment: t\nsearch: {storage: sqlite:///x.db}\n")
    assert default_storage_url(load_params(repo / "params.yaml")) == "sqlite:///x.db"
    assert cache_folder(load_params(repo / "params.yaml")) == repo / "outputs" / "judge_cache"


def test_a_temp_experiment_is_logged_in_the_repository(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([*dvc, "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "params.yaml").write_text("experiment: t\nseed: 0\n")
    (tmp_path / "stage.py").write_text(
        "from steerops.config import load_params\n"
        "from steerops.tracking import track\n"
        "params = load_params('params.yaml')\n"
        "with track(params, 'report', 'in a temp workspace') as tracker:\n"
        "    tracker.log_params({'seed': params.seed})\n"
        "open('out.txt', 'w').write('done')\n"
    )
    (tmp_path / "dvc.yaml").write_text(
        f"stages:\n  s:\n    cmd: {sys.executable} stage.py\n    params: [seed]\n"
        "    outs: [out.txt]\n"
    )
    (tmp_path / ".gitignore").write_text("mlflow.db*\n.steerops/\n")
    subprocess.run([*git, "add", "-A"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "init"], cwd=tmp_path, check=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    run = [*dvc, "exp", "run", "--temp", "-S", "seed=3"]
    done = subprocess.run(run, cwd=tmp_path, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(done.stdout + done.stderr)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("t")
    assert experiment is not None, "the run went with the temporary workspace"
    (run_,) = client.search_runs([experiment.experiment_id])
    assert run_.data.params == {"seed": "3"} and run_.info.status == "FINISHED"
