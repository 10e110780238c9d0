"""Task-set activations for the probe stages: find them, extract what is missing (one model
load for every missing condition), and read chosen layers as float64 matrices."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from steerops.errors import SteeropsError
from steerops.extract import store
from steerops.extract.store import damage, is_complete, read_metadata, stored_layers
from steerops.extract.tasks import check_task_file, tasks_digest, tasks_name
from steerops.models.fingerprint import model_fingerprint


def condition_dir(params, condition_id: str, root: Path | None = None) -> Path:
    """Where a condition's task activations are under `root` (default: params' outputs)."""
    probes = params.probes
    return store.task_activations_dir(
        root or params.out,
        tasks_name(params),
        probes.variant,
        probes.position,
        probes.component,
        condition_id,
    )


def is_fresh(
    params,
    folder: Path,
    digest: str,
    system_prompt: str | None,
    layers: list[int] | None,
    hash_now: Callable[[str | None, list[int]], str] | None = None,
) -> bool:
    """Whether `folder` holds activations of these tasks, this condition prompt, this model
    and (at least) these layers (None: params' probes.layers), so no model load is needed;
    with `hash_now` (`settings_hash_now`), also extracted as params would extract them now
    (dtypes, padding side, chat template, token norm rule: what `extract --tasks` checks)."""
    # damaged (metadata unreadable, or tensors changed since written): extracted again
    if not is_complete(folder) or damage(folder) is not None:
        return False
    meta = read_metadata(folder)
    spec = params.variant(params.probes.variant, "probes.variant")
    model = meta.get("model") or {}
    if (
        meta.get("source_hash") != digest
        or (meta.get("condition") or {}).get("system_prompt", "") != system_prompt
        or model.get("id") != spec.id
        or model.get("revision") != spec.revision
        # the same folder with other weights (a fine-tune written over it) is another model
        or ("weights" in model and model["weights"] != weights_now(params))
    ):
        return False
    recorded = meta.get("settings_hash")  # every extraction's (hand-made folders may lack it)
    if hash_now is not None and recorded is not None:
        if recorded != hash_now(system_prompt, list(meta.get("layers") or [])):
            return False  # other extraction settings: `extract --tasks` would extract again
    wanted = layers if layers is not None else select_layers(params, folder)
    return set(wanted) <= set(stored_layers(folder))


def settings_hash_now(params, tasks) -> Callable[[str | None, list[int]], str]:
    """(condition system prompt, layers) -> the settings hash `extract --tasks` would record
    for the probes' tasks now, from the tokenizer alone (loaded once, when first asked)."""
    from steerops.extract.engine import job_hash
    from steerops.extract.provenance import job_of, model_settings
    from steerops.extract.tasks import Condition, task_examples
    from steerops.models.loading import load_tokenizer, model_source
    from steerops.specs import parse_position

    probes = params.probes
    position = parse_position(probes.position)
    now: dict = {}

    def settings_hash(system_prompt: str | None, layers: list[int]) -> str:
        if not now:
            now["tokenizer"] = load_tokenizer(params, probes.variant)
            spec, source = params.variant(probes.variant), model_source(params, probes.variant)
            now["settings"] = model_settings(spec, source, now["tokenizer"])
        examples = task_examples(now["tokenizer"], tasks, Condition("now", system_prompt))
        job = job_of(params, now["settings"], Path(), position, layers, probes.component)
        return job_hash(job, examples)

    return settings_hash


def weights_now(params) -> str:
    """The weights fingerprint of the probes' model as it is now."""
    from steerops.models.loading import model_source  # imports transformers

    variant = params.probes.variant
    return model_fingerprint(model_source(params, variant), params.variant(variant).revision)


def ensure_conditions(
    params,
    conditions: list[tuple[str, str | None]],
    layers: list[int] | None = None,
    tracker=None,
    extract_root: Path | None = None,
) -> dict[str, Path]:
    """Activation dirs for (condition id, system prompt) pairs: fresh ones under params'
    outputs root (as `steerops extract --tasks` writes them), else under `extract_root`;
    stale or missing ones are extracted there (default: params' outputs root) in one model
    load, at `layers` (default: params' probes.layers). `probe ood` keeps what it extracts
    in its own folder, which DVC tracks as its output."""
    from steerops.extract.tasks import Condition, extract_tasks, load_tasks

    probes = params.probes
    tasks_file = params.path(probes.tasks)
    if not tasks_file.is_file():
        raise SteeropsError(f"probes.tasks: file not found: {tasks_file}")
    tasks = load_tasks(tasks_file)
    digest, hash_now = tasks_digest(tasks), settings_hash_now(params, tasks)
    dirs, stale = {}, []
    for cid, prompt in conditions:
        shared = condition_dir(params, cid)
        own = condition_dir(params, cid, extract_root)
        places = dict.fromkeys((shared, own))  # one place without `extract_root`: read once
        fresh = [d for d in places if is_fresh(params, d, digest, prompt, layers, hash_now)]
        dirs[cid] = fresh[0] if fresh else own
        if not fresh:
            # before the model loads: another task file's activations are not replaced
            check_task_file(own, tasks_file, params.root, digest, _set_advice(params))
            stale.append((cid, prompt))
    if not stale:
        return dirs
    from steerops.models.loading import load_model

    loaded = load_model(params, probes.variant)
    wanted = (
        layers
        if layers is not None
        else probes.layers.resolve(loaded.layout.num_layers, "probes.layers")
    )
    extract_tasks(
        params,
        loaded,
        tasks,
        tasks_name(params),
        [Condition(cid, prompt) for cid, prompt in stale],
        probes.position,
        wanted,
        component=probes.component,
        tracker=tracker,
        root=extract_root,
        tasks_file=tasks_file,
    )
    for cid, prompt in stale:
        if not is_fresh(params, dirs[cid], digest, prompt, wanted, hash_now):
            raise SteeropsError(
                f"extraction of condition {cid!r} left no usable activations in {dirs[cid]}"
            )
    return dirs


def _set_advice(params) -> str:
    """The refusal of `check_task_file` for the probes' task set: the param that names it,
    and how to go on."""
    if params.probes.tasks_name:
        key = f"probes.tasks_name {params.probes.tasks_name!r}"
    else:
        key = f"probes.tasks {params.probes.tasks!r} (its file name, the set's name)"
    return (
        f"{key} names another task set: give this one its own (probes.tasks_name or "
        "--tasks-name), or delete that folder to replace them"
    )


def read_task_ids(folder: Path, layers: list[int]) -> tuple[list[str], dict]:
    """(task ids in row order, metadata), after checking that `layers` are stored."""
    metadata = read_metadata(folder)
    have = stored_layers(folder)
    missing = [layer for layer in layers if layer not in have]
    if missing:
        raise SteeropsError(
            f"probes.layers: layer {missing[0]} not in "
            f"{folder / store.TENSORS_FILE} "
            f"(stored: {have}); delete that folder to re-extract"
        )
    return [str(t) for t in metadata.get("task_ids", [])], metadata


def read_layer(folder: Path, layer: int, n_rows: int) -> np.ndarray:
    """One layer as [n_tasks, hidden] float64 (one at a time: all layers of a large model
    and task set do not fit in memory together)."""
    matrix = store.read_layer(folder, layer).numpy().astype(np.float64)
    if matrix.shape[0] != n_rows:
        raise SteeropsError(
            f"{folder / store.METADATA_FILE}: {n_rows} task_ids for "
            f"{matrix.shape[0]} activation rows"
        )
    return matrix


def load_condition(
    folder: Path, layers: list[int]
) -> tuple[list[str], dict[int, np.ndarray], dict]:
    """(task ids in row order, {layer: [n_tasks, hidden] float64}, metadata)."""
    task_ids, metadata = read_task_ids(folder, layers)
    return task_ids, {k: read_layer(folder, k, len(task_ids)) for k in layers}, metadata


def select_layers(params, folder: Path) -> list[int]:
    """The params' layer spec, resolved against the model depth stored with activations."""
    depth = read_metadata(folder).get("num_layers")
    if depth is None:  # fall back to what is stored
        return (
            stored_layers(folder)
            if params.probes.layers.text == "all"
            else params.probes.layers.resolve(max(stored_layers(folder)) + 1, "probes.layers")
        )
    return params.probes.layers.resolve(int(depth), "probes.layers")
