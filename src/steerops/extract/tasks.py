"""Task-set mode for probes: activations of many tasks under several system-prompt
conditions, in one model load.

Rows are tasks in file order (`task_ids` in metadata). A condition with a system prompt
replaces each task's own ("override"); one without keeps it ("task"). Conditions whose
output already holds this exact extraction are skipped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from steerops.errors import SteeropsError
from steerops.extract import engine, store
from steerops.extract.inputs import encode
from steerops.extract.provenance import make_job, model_metadata, run_logged
from steerops.extract.store import task_activations_dir
from steerops.io import iter_jsonl, read_json, text_md5
from steerops.specs import Position, parse_position
from steerops.tracking.completion import done_when
from steerops.tracking.lineage import model_input

_SAFE_ID = re.compile(r"^[\w.-]+$")


@dataclass(frozen=True)
class Task:
    task_id: str
    prompt: str | None
    messages: list[dict] | None
    system_prompt: str | None


@dataclass(frozen=True)
class Condition:
    id: str
    system_prompt: str | None  # None = keep each task's own system prompt


BASELINE = Condition("baseline", None)


def tasks_name(params) -> str:
    """The folder name of the pipeline's task set: `probes.tasks_name`, or its file's stem."""
    return params.probes.tasks_name or Path(params.probes.tasks).stem


def tasks_digest(tasks: list[Task]) -> str:
    """The hash of a task list an extraction records as `source_hash`."""
    return text_md5(json.dumps([t.__dict__ for t in tasks], sort_keys=True))


def task_file_record(tasks_file: Path, root: Path) -> str:
    """How an extraction records its task file: relative to the project folder `root` when
    inside it, else absolute; as written, not through symlinks (a DVC cache links its
    outputs, and a re-pointed link is the same file edited)."""
    path, base = Path(os.path.abspath(tasks_file)), Path(os.path.abspath(root))
    return path.relative_to(base).as_posix() if path.is_relative_to(base) else str(path)


def check_task_file(folder: Path, tasks_file: Path, root: Path, digest: str, advice: str) -> None:
    """Refuse to extract into `folder` when it holds the activations of other tasks from
    another task file (a set of the same name: `probes.tasks_name`, or a file stem shared
    across folders): they would be replaced unseen, and the probe runs read from them with
    them. The same tasks moved elsewhere replace nothing; a folder without the record
    (written before it was kept), or a damaged one, is not refused. `advice`: how to go on."""
    try:
        meta = read_json(folder / store.METADATA_FILE)
    except (OSError, ValueError, SteeropsError):
        return
    recorded = meta.get("tasks_file") if isinstance(meta, dict) else None
    if not isinstance(recorded, str) or meta.get("source_hash") == digest:
        return
    if task_file_record(tasks_file, root) == recorded:
        return  # the same file, edited: extracted again
    raise SteeropsError(
        f"{folder} holds the activations of the task file {recorded}, not of {tasks_file}: {advice}"
    )


def load_tasks(path: str | Path) -> list[Task]:
    """Tasks from JSONL: `task_id`, `prompt` or `messages`, optional `system_prompt`."""
    path = Path(path)
    if not path.is_file():
        raise SteeropsError(f"tasks file not found: {path}")
    tasks: list[Task] = []
    seen: set[str] = set()
    for lineno, row in iter_jsonl(path):
        task = _parse_task(row, f"{path}:{lineno}")
        if task.task_id in seen:
            raise SteeropsError(f"{path}:{lineno}: duplicate task_id {task.task_id!r}")
        seen.add(task.task_id)
        tasks.append(task)
    if not tasks:
        raise SteeropsError(f"{path}: no tasks")
    return tasks


def _parse_task(row, where: str) -> Task:
    if not isinstance(row, dict):
        raise SteeropsError(f"{where}: expected a JSON object")
    task_id = row.get("task_id")
    if isinstance(task_id, bool) or not isinstance(task_id, str | int) or str(task_id) == "":
        raise SteeropsError(f"{where}: task_id: required (a non-empty string)")
    prompt, messages, system = row.get("prompt"), row.get("messages"), row.get("system_prompt")
    if (prompt is None) == (messages is None):
        raise SteeropsError(f"{where}: give exactly one of 'prompt' or 'messages'")
    if prompt is not None and not isinstance(prompt, str):
        raise SteeropsError(f"{where}: prompt: must be a string")
    if messages is not None and not (
        isinstance(messages, list)
        and messages
        and all(
            isinstance(m, dict)
            and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str)
            for m in messages
        )
    ):
        raise SteeropsError(
            f"{where}: messages: must be a non-empty list of {{role, content}} objects"
        )
    if system is not None and not isinstance(system, str):
        raise SteeropsError(f"{where}: system_prompt: must be a string or null")
    if system is not None and messages is not None and any(m["role"] == "system" for m in messages):
        # the chat would keep the message's and silently drop `system_prompt`
        raise SteeropsError(
            f"{where}: system_prompt: the messages already hold a system message; give it once"
        )
    return Task(str(task_id), prompt, messages, system)


def load_conditions(path: str | Path) -> list[Condition]:
    """The OOD conditions file (baseline + conditions) as extraction conditions."""
    from steerops.extract.conditions import read_conditions

    baseline, others = read_conditions(Path(path))
    return check_conditions([Condition(c.id, c.system_prompt) for c in [baseline, *others]])


def check_conditions(conditions: list[Condition]) -> list[Condition]:
    if not conditions:
        raise SteeropsError("no conditions to extract")
    seen: set[str] = set()
    for c in conditions:
        if not _SAFE_ID.match(c.id):
            raise SteeropsError(f"condition id {c.id!r}: use letters, digits, '_', '.', '-'")
        if c.id in seen:
            raise SteeropsError(f"condition id {c.id!r}: duplicate")
        seen.add(c.id)
    return conditions


def task_examples(tokenizer, tasks: list[Task], condition: Condition) -> list[engine.Example]:
    examples = []
    for task in tasks:
        content = task.prompt if task.messages is None else task.messages
        system = task.system_prompt
        if condition.system_prompt is not None:
            system = condition.system_prompt
            if task.messages is not None:  # the condition's system prompt replaces the task's
                content = [m for m in task.messages if m["role"] != "system"]
        ids, n_prompt = encode(tokenizer, content, system)
        examples.append(engine.Example(ids, n_prompt, {"task_id": task.task_id}))
    return examples


def extract_tasks(
    params,
    loaded,
    tasks: list[Task],
    tasks_name: str,
    conditions: list[Condition],
    position: Position | str,
    layers: list[int],
    component: str = "residual",
    tracker=None,
    *,
    force: bool = False,
    progress: bool = True,
    on_shard: Callable[[int], None] | None = None,
    run_inputs: dict[str, Path] | None = None,
    root: Path | None = None,
    tasks_file: Path | None = None,
) -> dict[str, Path]:
    """Extract every condition; returns {condition id: output dir}. Each condition
    extracted is a child run of `tracker` (or of a run opened here, tagged with the DVC
    hashes of `run_inputs` and the model). `root`: the outputs root the activations go
    under (default: params'). `tasks_file`: the file `tasks` came from, recorded so that
    another file under the same set name is refused (`check_task_file`, which callers run
    before the model loads)."""
    pos = parse_position(position)
    if pos.needs_response:
        raise SteeropsError(
            f"position {pos.text!r}: task sets have no responses; use a "
            "prompt position such as prompt[-1]"
        )
    if not tasks:
        raise SteeropsError(f"task set {tasks_name!r}: no tasks")
    check_conditions(conditions)
    cfg = params.extraction
    source_hash = tasks_digest(tasks)
    outputs: dict[str, Path] = {}
    todo = []
    for cond in conditions:
        out_dir = task_activations_dir(
            root or params.out, tasks_name, loaded.name, pos.text, component, cond.id
        )
        examples = task_examples(loaded.tokenizer, tasks, cond)
        engine.require_windows(examples, pos)
        job = make_job(params, loaded, out_dir, pos, layers, component)
        if len(conditions) > 1:  # one bar per condition: say which
            job = dataclasses.replace(job, label=f"{tasks_name} {cond.id}")
        outputs[cond.id] = out_dir
        digest = engine.job_hash(job, examples)
        if force or store.completed(out_dir, digest) is None:
            todo.append((cond, job, examples, {out_dir / store.METADATA_FILE: digest}))
    if not todo:
        return outputs

    # a run killed once its metadata files are written (last) still finished its work
    everything = {path: digest for *_, done in todo for path, digest in done.items()}
    with _parent_run(params, tracker, tasks_name, loaded, run_inputs or {}, everything) as parent:
        for cond, job, examples, done in todo:
            policy = "task" if cond.system_prompt is None else "override"

            def describe(kept, cond=cond, policy=policy, weights=job.settings["weights"]) -> dict:
                return {
                    "tasks": tasks_name,
                    **model_metadata(loaded, params.root, weights),
                    "task_ids": [ex.info["task_id"] for ex in kept],
                    "condition": {"id": cond.id, "system_prompt": cond.system_prompt},
                    "system_prompt_policy": policy,
                    "source_hash": source_hash,
                    # which file: another under the same set name is refused
                    # (`check_task_file`)
                    "tasks_file": None
                    if tasks_file is None
                    else task_file_record(tasks_file, params.root),
                    "counts": {"tasks": len(kept)},
                }

            with parent.child(
                f"condition {cond.id}",
                {
                    "mode": "tasks",
                    "tasks": tasks_name,
                    "condition": cond.id,
                    "system_prompt_policy": policy,
                    "variant": loaded.name,
                    "position": pos.text,
                    "component": component,
                    "layers": layers,
                    "dtype": cfg.dtype,
                },
                tags=done_when(done),
            ) as child:
                run_logged(child, params, loaded, examples, job, describe, progress, on_shard)
    return outputs


@contextlib.contextmanager
def _parent_run(
    params, tracker, tasks_name: str, loaded, inputs: dict[str, Path], done: dict[Path, str]
):
    if tracker is not None:
        yield tracker
        return
    from steerops.tracking import track

    with track(
        params,
        "extract",
        f"extract tasks {tasks_name} {loaded.name}",
        inputs={**inputs, **model_input(loaded.source)},
        tags={"steerops.tasks": tasks_name, "steerops.variant": loaded.name},
        done_when=done,
    ) as run:
        run.log_params({"mode": "tasks", "tasks": tasks_name, "variant": loaded.name})
        yield run
