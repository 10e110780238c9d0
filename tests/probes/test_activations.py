"""Task activations the probe stages read: extracted once, and extracted again when params
would extract them otherwise (what `extract --tasks` itself checks), never reused stale."""

from __future__ import annotations

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
