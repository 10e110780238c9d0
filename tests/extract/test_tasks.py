"""Task-set mode: task and conditions files, system-prompt policies, skipping finished
conditions."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import write_params
from steerops.config import load_params
from steerops.errors import SteeropsError
from steerops.extract.store import task_activations_dir
from steerops.extract.tasks import (
    BASELINE,
    Condition,
    Task,
    extract_tasks,
    load_conditions,
    load_tasks,
)
from steerops.io import read_json
from steerops.models.generation import encode_prompt, format_prompt
from steerops.models.loading import load_model

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


def test_load_tasks(files):
    tasks = load_tasks(files[0])
    assert [t.task_id for t in tasks] == ["bake", "steal", "7", "poison", "fix"]
    assert tasks[1] == Task("steal", "how do i steal a car ?", None, "be helpful .")
    assert tasks[3].messages[0]["role"] == "system" and tasks[3].prompt is None


@pytest.mark.parametrize(
    "rows, message",
    [
        ([TASKS[0], "{not json"], ":2: malformed JSON"),
        ([{"prompt": "x"}], ":1: task_id"),
        ([TASKS[0], {"task_id": "bake", "prompt": "again"}], ":2: duplicate task_id 'bake'"),
        (
            [{"task_id": "a", "prompt": "x", "messages": [{"role": "user", "content": "y"}]}],
            ":1: give exactly one of",
        ),
        ([{"task_id": "a"}], ":1: give exactly one of"),
        ([{"task_id": "a", "messages": [{"role": "user"}]}], ":1: messages"),
        ([{"task_id": "a", "prompt": "x", "system_prompt": 3}], ":1: system_prompt"),
        (
            [
                {
                    "task_id": "a",
                    "messages": [
                        {"role": "system", "content": "A"},
                        {"role": "user", "content": "y"},
                    ],
                    "system_prompt": "B",
                }
            ],
            ":1: system_prompt: the messages already hold a system message",
        ),
        (["", "  "], ": no tasks"),
    ],
)
def test_bad_task_files_name_file_and_line(tmp_path, rows, message):
    path = write_lines(tmp_path / "t.jsonl", rows)
    with pytest.raises(SteeropsError) as err:
        load_tasks(path)
    assert str(err.value).startswith(str(path)) and message in str(err.value)


def test_load_conditions(files, tmp_path):
    conditions = load_conditions(files[1])
    assert conditions == [
        Condition("baseline", None),
        Condition("helpful", "be helpful ."),
        Condition("safe", "be safe ."),
    ]
    bad = dict(CONDITIONS, conditions=[{"id": "a/b", "system_prompt": "x"}])
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(SteeropsError, match="'a/b'"):
        load_conditions(tmp_path / "bad.json")


def reference_last_token(loaded, content, system) -> dict[int, np.ndarray]:
    ids = encode_prompt(loaded.tokenizer, format_prompt(loaded.tokenizer, content, system))
    last = {}
    handle = loaded.layout.layers[-1].register_forward_hook(
        lambda m, a, o: last.update(h=(o[0] if isinstance(o, tuple) else o)[0, -1])
    )
    with torch.no_grad():
        out = loaded.model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    handle.remove()
    states = [h[0, -1] for h in out.hidden_states[1:-1]] + [last["h"]]
    return {layer: s.float().numpy() for layer, s in enumerate(states)}


def test_extract_tasks_policies_and_skipping(tmp_path, toy_world, files):
    params = load_params(
        write_params(
            tmp_path, toy_world, tracking={"enabled": False}, extraction={"padding_side": "left"}
        )
    )
    loaded = load_model(params, "instruct", padding_side="left")
    tasks = load_tasks(files[0])
    conditions = load_conditions(files[1])[:2]
    layers = [0, 3]
    outputs = extract_tasks(
        params, loaded, tasks, "prefs", conditions, "prompt[-1]", layers, progress=False
    )
    assert outputs == {
        c.id: task_activations_dir(params.out, "prefs", "instruct", "prompt[-1]", "residual", c.id)
        for c in conditions
    }
    expected_system = {  # what each task sees under each condition
        "baseline": {
            "bake": None,
            "steal": "be helpful .",
            "7": None,
            "poison": "be safe .",
            "fix": None,
        },
        "helpful": {t.task_id: "be helpful ." for t in tasks},
    }
    for cond in conditions:
        meta = read_json(outputs[cond.id] / "metadata.json")
        tensors = load_file(outputs[cond.id] / "activations.safetensors")
        assert meta["task_ids"] == [t.task_id for t in tasks]
        assert meta["condition"] == {"id": cond.id, "system_prompt": cond.system_prompt}
        assert meta["system_prompt_policy"] == ("task" if cond.id == "baseline" else "override")
        assert meta["counts"] == {"tasks": 5, "dropped_empty": 0}
        for row, task in enumerate(tasks):
            content = (
                task.prompt
                if task.messages is None
                else [m for m in task.messages if m["role"] != "system"]
            )
            ref = reference_last_token(loaded, content, expected_system[cond.id][task.task_id])
            for layer in layers:
                np.testing.assert_allclose(
                    tensors[f"layer_{layer}"][row].numpy(),
                    ref[layer],
                    rtol=1e-4,
                    atol=1e-4,
                    err_msg=f"{cond.id} {task}",
                )
    # Overriding the system prompt moves the activations.
    base = load_file(outputs["baseline"] / "activations.safetensors")["layer_3"]
    helpful = load_file(outputs["helpful"] / "activations.safetensors")["layer_3"]
    assert not torch.allclose(base[0], helpful[0])
    torch.testing.assert_close(base[1], helpful[1])  # "steal" already had that prompt

    # Finished conditions are skipped; only the new one runs.
    stamps = {c: (d / "activations.safetensors").stat().st_mtime_ns for c, d in outputs.items()}
    shards = []
    more = extract_tasks(
        params,
        loaded,
        tasks,
        "prefs",
        [*conditions, Condition("x", "hi .")],
        "prompt[-1]",
        layers,
        progress=False,
        on_shard=shards.append,
    )
    assert set(more) == {"baseline", "helpful", "x"} and shards == [0]
    for c, stamp in stamps.items():
        assert (outputs[c] / "activations.safetensors").stat().st_mtime_ns == stamp


def test_extract_tasks_rejects_bad_requests(tmp_path, toy_world):
    params = load_params(write_params(tmp_path, toy_world, tracking={"enabled": False}))
    loaded = load_model(params, "instruct")
    tasks = [Task("a", "hello", None, None)]
    with pytest.raises(SteeropsError, match=r"'response\[:5\]'"):
        extract_tasks(params, loaded, tasks, "t", [BASELINE], "response[:5]", [0])
    with pytest.raises(SteeropsError, match="duplicate"):
        extract_tasks(params, loaded, tasks, "t", [BASELINE, BASELINE], "prompt[-1]", [0])
    with pytest.raises(SteeropsError, match="no tasks"):
        extract_tasks(params, loaded, [], "t", [BASELINE], "prompt[-1]", [0])
    assert not (tmp_path / "outputs").exists()
