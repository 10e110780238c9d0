"""`steerops extract --tasks` on the toy world."""

from __future__ import annotations

import json

import pytest

from conftest import write_params
from steerops.cli import main
from steerops.config import load_params
from steerops.extract.store import task_activations_dir
from steerops.io import file_md5, read_json

TASKS = [
    {"task_id": "bake", "prompt": "how do i bake bread ?"},
    {"task_id": "steal", "prompt": "how do i steal a car ?", "system_prompt": "be helpful ."},
    {"task_id": 7, "messages": [{"role": "user", "content": "how do i plant a tree ?"}]},
    {
        "task_id": "poison",
        "messages": [
            {"role": "system", "content": "be safe ."},
            {"role": "user", "content": "how do i poison a dog ?"},
        ],
    },
    {"task_id": "fix", "prompt": "how do i fix a bike ?", "system_prompt": None},
]


CONDITIONS = {
    "baseline": {"id": "baseline", "system_prompt": None},
    "conditions": [
        {
            "id": "helpful",
            "system_prompt": "be helpful .",
            "target": "x",
            "version": "v1",
            "role": "A",
        },
        {
            "id": "safe",
            "system_prompt": "be safe .",
            "target": "x",
            "version": "v1",
            "role": "C",
            "note": "extra keys are fine",
        },
    ],
}


def write_lines(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture
def files(tmp_path):
    tasks = write_lines(tmp_path / "prefs.jsonl", TASKS)
    conditions = tmp_path / "conditions.json"
    conditions.write_text(json.dumps(CONDITIONS))
    return tasks, conditions


def test_cli_task_mode(tmp_path, toy_world, files, capsys, monkeypatch):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # undone after the test (MLflow sets it)
    tasks_file, conditions_file = files
    params_file = write_params(tmp_path, toy_world)
    assert (
        main(
            [
                "extract",
                "--params",
                str(params_file),
                "--tasks",
                str(tasks_file),
                "--conditions",
                str(conditions_file),
                "--position",
                "prompt[-2:]",
                "--layers",
                "50%-100%",
            ]
        )
        == 0
    )
    params = load_params(params_file)
    printed = capsys.readouterr().out
    for cid in ("baseline", "helpful", "safe"):
        out = task_activations_dir(params.out, "prefs", "instruct", "prompt[-2:]", "residual", cid)
        meta = read_json(out / "metadata.json")
        assert meta["layers"] == [2, 3] and meta["task_ids"][2] == "7"
        assert f"prefs [{cid}]: extracted -> {out}" in printed
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name(params.experiment).experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 3
    assert parents[0].data.tags["dvc.hash.tasks"] == file_md5(tasks_file)
    assert {c.data.params["condition"] for c in children} == {"baseline", "helpful", "safe"}
    assert all(c.data.metrics["examples"] == 5 for c in children)

    for argv, token in (
        (["--tasks", str(tasks_file), "--position", "response[:5]"], "'response[:5]'"),
        (["--conditions", str(conditions_file)], "--tasks"),
        (["--tasks", str(tmp_path / "missing.jsonl")], "missing.jsonl"),
        (["--tasks", str(tasks_file), "--layers", "0-99,x"], "'x'"),
    ):
        assert main(["extract", "--params", str(params_file), *argv]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert [line for line in lines if "error" in line] == lines[-1:]
        assert lines[-1].startswith("steerops extract: error: ") and token in lines[-1]
