"""`steerops extract` refuses a position window that is empty at every length before the
model loads or an MLflow run opens: one error line, exit code 2, no run."""

from __future__ import annotations

import pytest

from conftest import refused_up_front, write_params


@pytest.mark.parametrize("mode", ["trait", "tasks"])
@pytest.mark.parametrize("position", ["prompt[5:2]", "prompt[:0]", "prompt[-2:-5]"])
def test_an_always_empty_window_is_refused_up_front(
    tmp_path, toy_world, no_model_loads, capsys, mode, position
):
    params = write_params(tmp_path, toy_world)
    argv = ["extract", "--params", str(params), "--position", position, "--layers", "1"]
    if mode == "tasks":
        tasks = tmp_path / "tasks.jsonl"
        tasks.write_text('{"task_id": "a", "prompt": "hi"}\n')
        argv += ["--tasks", str(tasks)]
    assert f"position {position!r}" in refused_up_front(argv, tmp_path, capsys)
