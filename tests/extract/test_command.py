"""`steerops extract` refuses a position window that is empty at every length before the
model loads or an MLflow run opens: one error line, exit code 2, no run."""

from __future__ import annotations

import pytest

from conftest import write_params
from steerops.cli import main
from steerops.models import loading


@pytest.mark.parametrize("mode", ["trait", "tasks"])
@pytest.mark.parametrize("position", ["prompt[5:2]", "prompt[:0]", "prompt[-2:-5]"])
def test_an_always_empty_window_is_refused_up_front(
    tmp_path, toy_world, monkeypatch, capsys, mode, position
):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad position was refused")

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(loading, "load_model", refuse)
    params = write_params(tmp_path, toy_world)
    argv = ["extract", "--params", str(params), "--position", position, "--layers", "1"]
    if mode == "tasks":
        tasks = tmp_path / "tasks.jsonl"
        tasks.write_text('{"task_id": "a", "prompt": "hi"}\n')
        argv += ["--tasks", str(tasks)]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("steerops extract: error: "), err
    assert f"position {position!r}" in err[0]
    assert not (tmp_path / "mlflow.db").exists()  # no MLflow run was opened
    assert not (tmp_path / "outputs").exists()
