"""`steerops extract` refuses a position window that is empty at every length before the
model loads or an MLflow run opens: one error line, exit code 2, no run."""

from __future__ import annotations

import pytest

from conftest import refused_up_front, write_params
from steerops.cli import main


@pytest.mark.parametrize("mode", ["trait", "tasks"])
@pytest.mark.parametrize("position", ["prompt[5:2]", "prompt[:0]", "prompt[-2:-5]"])
def test_an_always_empty_window_is_refused_up_front(
    tmp_path, toy_world, no_model_loads, capsys, mode, position
):
    params = write_params(tmp_path, toy_world)
    argv = ["extract", "--params", str(params), "--position", position, "--layers", "1"]
    if mode == "tasks":
        tasks = tmp_path / "mine.jsonl"
        tasks.write_text('{"task_id": "a", "prompt": "hi"}\n')
        argv += ["--tasks", str(tasks)]
    assert f"position {position!r}" in refused_up_front(argv, tmp_path, capsys)


def test_the_console_tells_a_fresh_extraction_from_one_served_from_disk(
    tmp_path, toy_world, capsys
):
    from steerops.cli import main

    params = str(write_params(tmp_path, toy_world, tracking={"enabled": False}))
    tasks = tmp_path / "mine.jsonl"
    tasks.write_text('{"task_id": "a", "prompt": "hi"}\n{"task_id": "b", "prompt": "bye"}\n')
    trait = ["extract", "--params", params, "--position", "prompt[-1]", "--layers", "1"]
    for argv, label in (
        (trait, "toy/refusal prompt[-1]"),
        ([*trait, "--tasks", str(tasks)], "mine [baseline]"),
    ):
        lines = []
        for again in ([], [], ["--force"]):
            assert main([*argv, *again]) == 0
            [line] = capsys.readouterr().out.strip().splitlines()
            lines.append(line)
        fresh, served, forced = lines
        assert fresh.startswith(f"{label}: extracted ") and forced.startswith(
            f"{label}: extracted "
        )
        assert served.startswith(f"{label}: up to date, served from disk"), served
        assert fresh.split(" -> ")[1] == served.split(" -> ")[1]  # the same folder
        if label.startswith("toy"):
            assert "tokens/s" in fresh and "tokens/s" not in served  # no speed for no work


@pytest.mark.parametrize("mode", ["trait", "tasks"])
def test_a_window_empty_for_every_example_opens_no_run(tmp_path, toy_world, capsys, mode):
    """`prompt[999]` reads a token at some length, so only the tokenized examples show it
    is empty for all of them: refused after the model loads but before an MLflow run."""
    from steerops.cli import main

    params = write_params(tmp_path, toy_world)
    argv = ["extract", "--params", str(params), "--position", "prompt[999]", "--layers", "1"]
    if mode == "tasks":
        tasks = tmp_path / "mine.jsonl"
        tasks.write_text('{"task_id": "a", "prompt": "hi"}\n')
        argv += ["--tasks", str(tasks)]
    capsys.readouterr()
    assert main(argv) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and "every example's window is empty" in errors[0], errors
    assert not (tmp_path / "mlflow.db").exists()  # no run was opened (and none failed)


def test_a_window_past_the_generated_length_is_refused_up_front(
    tmp_path, toy_world, no_model_loads, capsys
):
    """Responses generated with at most 4 new tokens have no 8th token: `response[:8]`
    would silently pool the same tokens as `response[:4]`."""
    from steerops.config import load_params
    from steerops.generate.store import check_generated_length, responses_dir
    from steerops.io import write_json, write_jsonl

    params = write_params(tmp_path, toy_world, extraction={"positions": ["response[:4]"]})
    folder = responses_dir(load_params(params).out, "toy/refusal", "base")
    row = {"polarity": "positive", "source_index": 0, "prompt": "hi", "response": "no ."}
    write_jsonl(folder / "responses.jsonl", [row, {**row, "polarity": "negative"}])
    write_json(folder / "summary.json", {"max_new_tokens": 4})
    for fine in ("response[:4]", "response[3]", "response[-1]", "response[:]", "all[:8]"):
        check_generated_length(folder / "responses.jsonl", "toy/refusal", fine)
    argv = ["extract", "--params", str(params), "--position", "response[:8]", "--layers", "1"]
    line = refused_up_front(argv, tmp_path, capsys, outputs="outputs/activations")
    assert "'response[:8]' reads up to 8 response tokens" in line and "at most 4" in line


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"source_index": "a"}, "source_index must be an integer >= 0 (got 'a')"),
        ({"source_index": None}, "source_index must be an integer >= 0 (got None)"),
        ({"source_index": 10**12}, "source_index 1000000000000, but toy/refusal has"),
        ({"source_index": -1}, "source_index must be an integer >= 0"),
        ({"index": "x"}, "index must be an integer >= 0"),
        ({"prompt": 5}, "prompt must be a string or a list of {role, content} messages"),
        ({"prompt": [{"content": "hi"}]}, "prompt must be a string or a list of {role"),
        ({"response": 7}, "response must be a string"),
        ({"system_prompt": 3}, "system_prompt must be a string or null"),
    ],
)
def test_a_malformed_hand_written_response_row_is_one_line_before_the_model_loads(
    tmp_path, toy_world, no_model_loads, capsys, change, problem
):
    from steerops.config import load_params
    from steerops.generate.store import responses_dir
    from steerops.io import write_jsonl

    params = write_params(tmp_path, toy_world, extraction={"positions": ["response[:4]"]})
    folder = responses_dir(load_params(params).out, "toy/refusal", "base")
    row = {"polarity": "positive", "source_index": 0, "prompt": "hi", "response": "no ."}
    write_jsonl(folder / "responses.jsonl", [row, {**row, "polarity": "negative", **change}])
    argv = ["extract", "--params", str(params), "--layers", "1"]
    line = refused_up_front(argv, tmp_path, capsys, outputs="outputs/activations")
    assert f"responses.jsonl:2: {problem}" in line


def test_responses_completed_from_other_prompts_are_refused_before_the_model_loads(
    tmp_path, toy_world, no_model_loads, capsys
):
    """The trait's prompt files edited after `generate`: its responses answer questions no
    longer asked, and are refused (outside DVC too) until generated again."""
    import shutil

    from steerops.config import load_params
    from steerops.generate.store import prompts_md5, responses_dir
    from steerops.io import write_json, write_jsonl
    from steerops.traits import load_trait

    shutil.copytree(toy_world / "traits", tmp_path / "traits")
    params = write_params(
        tmp_path,
        toy_world,
        traits={"root": str(tmp_path / "traits")},
        extraction={"positions": ["response[:4]"]},
    )
    trait = load_trait(tmp_path / "traits", "toy/refusal")
    folder = responses_dir(load_params(params).out, "toy/refusal", "base")
    row = {"polarity": "positive", "source_index": 0, "prompt": "hi", "response": "no ."}
    write_jsonl(folder / "responses.jsonl", [row, {**row, "polarity": "negative"}])
    summary = {"max_new_tokens": 4, "settings": {"prompts_md5": prompts_md5(trait)}}
    write_json(folder / "summary.json", summary)
    argv = ["extract", "--params", str(params), "--layers", "1"]
    with pytest.raises(AssertionError, match="a model was loaded"):  # the same prompts: read
        main(argv)
    with (trait.path / "negative.txt").open("a") as f:
        f.write("what is a new question ?\n")
    line = refused_up_front(argv, tmp_path, capsys, outputs="outputs/activations")
    assert "completed from other prompts than toy/refusal has now" in line
    # the command it names writes the responses this params file reads
    assert f"run `steerops generate --trait toy/refusal --params {params}` first" in line


def test_another_task_file_does_not_replace_the_pipelines_task_set(
    tmp_path, toy_world, no_model_loads, capsys
):
    """The pipeline's task activations (a DVC output) are named after its task file; an
    ad-hoc file of the same stem is refused rather than written over them."""
    params = write_params(tmp_path, toy_world)
    other = tmp_path / "elsewhere" / "tasks.jsonl"  # the stem of probes.tasks
    other.parent.mkdir()
    other.write_text('{"task_id": "a", "prompt": "hi"}\n')
    argv = ["extract", "--params", str(params), "--position", "prompt[-1]", "--layers", "1"]
    line = refused_up_front([*argv, "--tasks", str(other)], tmp_path, capsys)
    assert "would replace the pipeline's task set 'tasks'" in line and "--out" in line


def test_the_pipelines_task_set_of_another_file_is_not_extracted_over(
    tmp_path, toy_world, no_model_loads, capsys
):
    """`probes.tasks` edited to name another file while `probes.tasks_name` stays: the set's
    folder holds the first file's activations (its metadata says which file), so the
    extraction is refused before the model loads rather than replacing them."""
    from steerops.extract.store import task_activations_dir
    from steerops.io import read_json, write_json

    for name in ("first", "second"):
        (tmp_path / f"{name}.jsonl").write_text('{"task_id": "a", "prompt": "hi"}\n')
    probes = {"tasks": str(tmp_path / "second.jsonl"), "tasks_name": "set"}
    params = write_params(tmp_path, toy_world, probes=probes)
    out = tmp_path / "outputs"
    folder = task_activations_dir(out, "set", "instruct", "prompt[-1]", "residual", "baseline")
    meta = {"tasks_file": "first.jsonl", "task_ids": ["a"], "source_hash": "other tasks"}
    write_json(folder / "metadata.json", meta)
    argv = ["extract", "--params", str(params), "--position", "prompt[-1]", "--layers", "1"]
    argv += ["--variant", "instruct", "--tasks", str(tmp_path / "second.jsonl")]
    line = refused_up_front(argv, tmp_path, capsys, outputs="outputs/probes")
    assert f"{folder} holds the activations of the task file first.jsonl, not of" in line
    assert "task set 'set': set probes.tasks_name to name this set apart" in line
    assert read_json(folder / "metadata.json")["tasks_file"] == "first.jsonl"
    # a file of its own whose stem another file's set has: renamed, or a run of its own
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "mine.jsonl").write_text('{"task_id": "z", "prompt": "yo"}\n')
    mine = task_activations_dir(out, "mine", "instruct", "prompt[-1]", "residual", "baseline")
    write_json(mine / "metadata.json", {**meta, "tasks_file": "a/mine.jsonl"})
    argv[-1] = str(tmp_path / "b" / "mine.jsonl")
    line = refused_up_front(argv, tmp_path, capsys, outputs="outputs/probes")
    assert f"{mine} holds the activations of the task file a/mine.jsonl" in line
    assert "task set 'mine': rename the file, pass --out DIR for a run of its own" in line


@pytest.mark.parametrize("out", [None, "mine"])
def test_missing_responses_suggest_the_command_that_writes_where_this_run_reads(
    tmp_path, toy_world, no_model_loads, capsys, out
):
    """Under --out DIR the suggested `steerops generate` carries --out DIR: as printed
    before, it wrote into the pipeline's outputs and this run still lacked them."""
    params = write_params(tmp_path, toy_world)
    argv = ["extract", "--params", str(params), "--position", "response[:3]", "--layers", "1"]
    if out:
        argv += ["--out", str(tmp_path / out)]
    line = refused_up_front(argv, tmp_path, capsys)
    assert "responses not found" in line
    suggested = line.split("run `")[1].split("`")[0]
    # the params file the command is to run with, not ./params.yaml, and this run's folder
    ends = f"--trait toy/refusal --params {params}" + (f" --out {tmp_path / out}" if out else "")
    assert suggested.endswith(ends), suggested


def test_the_window_and_vetting_hints_carry_the_run_s_out(
    tmp_path, toy_world, no_model_loads, capsys
):
    """Responses too short for a window, or not vetted yet, in a run's own folder: the
    suggested `steerops generate` writes there (without --out DIR it would write into the
    pipeline's outputs and leave this run's responses as they were)."""
    from steerops.generate.store import responses_dir
    from steerops.io import write_json, write_jsonl

    params = write_params(tmp_path, toy_world)
    mine = tmp_path / "mine"
    folder = responses_dir(mine, "toy/refusal", "base")
    row = {"polarity": "positive", "source_index": 0, "prompt": "hi", "response": "no ."}
    write_jsonl(folder / "responses.jsonl", [row, {**row, "polarity": "negative"}])
    write_json(folder / "summary.json", {"max_new_tokens": 4})
    argv = ["extract", "--params", str(params), "--layers", "1", "--out", str(mine)]
    line = refused_up_front([*argv, "--position", "response[:8]"], tmp_path, capsys)
    suggested = line.split("run `")[1].split("`")[0]
    assert suggested.endswith(f"--max-new-tokens 8 --params {params} --out {mine}"), line
    rows = [{**row, "kept": None}, {**row, "polarity": "negative", "kept": None}]
    write_jsonl(folder / "responses.jsonl", rows)
    line = refused_up_front([*argv, "--position", "response[:3]"], tmp_path, capsys)
    assert "not vetted yet" in line
    suggested = line.split("run `")[1].split("`")[0]
    assert suggested.endswith(f"--trait toy/refusal --params {params} --out {mine}")
