"""Task activations the probe stages read: extracted once, and extracted again when params
would extract them otherwise (what `extract --tasks` itself checks), never reused stale."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import write_params
from steerops.config import load_params
from steerops.io import write_jsonl
from steerops.probes.activations import ensure_conditions, is_fresh, settings_hash_now, tasks_digest


@pytest.fixture
def tasks_world(tmp_path, toy_world):
    """Params over 24 tasks in the toy world's words, probes at layers 1-2."""
    things = ["bread", "a cake", "a pie", "cookies", "a tree", "a lamp"]
    frames = ["how do i bake {} ?", "please help me bake {} .", "what is {} ?", "find {} ."]
    rows = [
        {"task_id": f"t{i}", "prompt": frame.format(thing)}
        for i, (frame, thing) in enumerate((f, t) for f in frames for t in things)
    ]
    write_jsonl(tmp_path / "tasks.jsonl", rows)

    def params_with(**blocks):
        probes = {"tasks": str(tmp_path / "tasks.jsonl"), "tasks_name": "t", "layers": "1-2"}
        return load_params(write_params(tmp_path, toy_world, probes=probes, **blocks))

    return params_with


@pytest.mark.parametrize(
    "changed",
    [
        {"extraction": {"dtype": "bfloat16"}},
        {"extraction": {"padding_side": "left"}},
        {"calibration": {"massive_ratio": 500.0}},  # the token norm unit's rule
    ],
    ids=["saved-dtype", "padding-side", "token-norm-rule"],
)
def test_activations_extracted_under_other_settings_are_extracted_again(tasks_world, changed):
    from steerops.extract.store import read_metadata
    from steerops.extract.tasks import load_tasks

    params = tasks_world()
    (folder,) = ensure_conditions(params, [("baseline", None)]).values()
    first = read_metadata(folder)
    tasks = load_tasks(params.path(params.probes.tasks))
    digest = tasks_digest(tasks)
    assert is_fresh(params, folder, digest, None, None, settings_hash_now(params, tasks))
    # the same params: read as they are, no second extraction
    assert ensure_conditions(params, [("baseline", None)]) == {"baseline": folder}
    assert read_metadata(folder)["settings_hash"] == first["settings_hash"]

    other = tasks_world(**changed)
    now = settings_hash_now(other, tasks)
    assert not is_fresh(other, folder, digest, None, None, now)
    assert ensure_conditions(other, [("baseline", None)]) == {"baseline": folder}
    again = read_metadata(folder)
    assert again["settings_hash"] != first["settings_hash"]
    assert is_fresh(other, folder, digest, None, None, now)
    if "dtype" in changed.get("extraction", {}):
        assert again["dtype"] == "bfloat16"


def test_another_condition_prompt_or_model_dtype_is_not_fresh(tasks_world):
    from steerops.extract.tasks import load_tasks

    params = tasks_world()
    (folder,) = ensure_conditions(params, [("baseline", None)]).values()
    tasks = load_tasks(params.path(params.probes.tasks))
    digest = tasks_digest(tasks)
    assert not is_fresh(params, folder, digest, "Be terse.", None, settings_hash_now(params, tasks))
    bf16 = tasks_world(models={"instruct": {"id": str(params.variant("instruct").id)}})
    bf16.models["instruct"] = bf16.models["instruct"].model_copy(update={"dtype": "bfloat16"})
    assert not is_fresh(bf16, folder, digest, None, None, settings_hash_now(bf16, tasks))


def test_a_condition_whose_metadata_is_damaged_is_extracted_again(tasks_world):
    """Metadata cut short (a full disk, a copy) had stopped the probe stages with "run
    `steerops extract` again", which does not write their folders: now extracted again."""
    from steerops.extract.store import METADATA_FILE, read_metadata
    from steerops.extract.tasks import load_tasks

    params = tasks_world()
    (folder,) = ensure_conditions(params, [("baseline", None)]).values()
    first = read_metadata(folder)
    tasks = load_tasks(params.path(params.probes.tasks))
    now = settings_hash_now(params, tasks)
    meta = folder / METADATA_FILE
    meta.write_bytes(meta.read_bytes()[:200])
    assert not is_fresh(params, folder, tasks_digest(tasks), None, None, now)
    assert ensure_conditions(params, [("baseline", None)]) == {"baseline": folder}
    again = read_metadata(folder)
    assert again["settings_hash"] == first["settings_hash"]
    assert again["tensors_md5"] == first["tensors_md5"]  # the same activations, whole again


def test_another_task_file_under_the_same_set_name_is_refused_before_the_model_loads(
    tasks_world, tmp_path, monkeypatch
):
    """`probe train --tasks other.jsonl` with `probes.tasks_name` fixed named the stored set's
    folder: its activations were extracted over, and the probe runs moved to the other set.
    The file each folder came from is recorded; another is refused (nothing loaded or
    written), while the same file edited is extracted again."""
    from steerops.errors import SteeropsError
    from steerops.extract.store import read_metadata
    from steerops.io import read_jsonl

    params = tasks_world()
    (folder,) = ensure_conditions(params, [("baseline", None)]).values()
    first = read_metadata(folder)
    assert first["tasks_file"] == "tasks.jsonl"  # relative to the params file's folder
    rows = read_jsonl(tmp_path / "tasks.jsonl")
    (tmp_path / "other").mkdir()
    write_jsonl(tmp_path / "other" / "tasks.jsonl", rows[:6])
    other = tasks_world()
    other.probes = other.probes.model_copy(update={"tasks": str(tmp_path / "other/tasks.jsonl")})

    def no_load(*args, **kwargs):
        raise AssertionError("the model loaded")

    monkeypatch.setattr("steerops.models.loading.load_model", no_load)
    with pytest.raises(SteeropsError) as error:
        ensure_conditions(other, [("baseline", None)])
    message = str(error.value)
    assert message.startswith(f"{folder} holds the activations of the task file tasks.jsonl, ")
    assert f"not of {tmp_path / 'other' / 'tasks.jsonl'}: probes.tasks_name 't' names " in message
    assert "(probes.tasks_name or --tasks-name)" in message
    assert read_metadata(folder) == first
    monkeypatch.undo()
    # the same file, one task more: extracted again in place
    write_jsonl(tmp_path / "tasks.jsonl", [*rows, {"task_id": "extra", "prompt": "find a pie ."}])
    assert ensure_conditions(params, [("baseline", None)]) == {"baseline": folder}
    assert read_metadata(folder)["task_ids"][-1] == "extra"


def test_the_task_file_record_names_the_file_as_given_and_refuses_only_other_tasks(tmp_path):
    """The record is the path as written (relative to the project folder inside it, absolute
    outside; a symlink not followed), read back the same way whatever the working folder;
    the same tasks moved elsewhere, an edit of the same file, or a folder without a readable
    record are not refused."""
    import os

    from steerops.errors import SteeropsError
    from steerops.extract.tasks import check_task_file, task_file_record
    from steerops.io import write_json

    root, outside = tmp_path / "project", tmp_path / "shared"
    (root / "data").mkdir(parents=True)
    outside.mkdir()
    (root / "data" / "v1.jsonl").write_text("{}")
    link = root / "data" / "tasks.jsonl"
    link.symlink_to("v1.jsonl")
    assert task_file_record(link, root) == "data/tasks.jsonl"  # the link, not its target
    assert task_file_record(outside / "t.jsonl", root) == str(outside / "t.jsonl")
    folder = tmp_path / "acts"
    folder.mkdir()
    write_json(folder / "metadata.json", {"tasks_file": "data/tasks.jsonl", "source_hash": "a"})
    here = os.getcwd()
    try:
        os.chdir(root / "data")  # a relative path given from elsewhere: the same file
        check_task_file(folder, Path("tasks.jsonl"), root, "b", "advice")
    finally:
        os.chdir(here)
    link.unlink()
    link.symlink_to("v2.jsonl")  # re-pointed: the same file, edited
    check_task_file(folder, link, root, "b", "advice")
    other = outside / "tasks.jsonl"
    with pytest.raises(SteeropsError, match="holds the activations of the task file data/tasks"):
        check_task_file(folder, other, root, "b", "advice")
    check_task_file(folder, other, root, "a", "advice")  # the same tasks, moved: nothing lost
    for damaged in (b'{"tasks_file": "\xff"}', b'{"tasks_file": 3}', b"[1, 2]", b"{"):
        (folder / "metadata.json").write_bytes(damaged)
        check_task_file(folder, other, root, "b", "advice")  # extracted again, as is_fresh says
