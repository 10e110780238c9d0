"""`steerops extract`: pooled activations for traits, or for a task set (probes).

    steerops extract [--trait CAT/NAME] [--variant V] [--position SPEC[,SPEC]] [--layers SPEC]
                     [--component residual|attn_out|mlp_out]
    steerops extract --tasks FILE.jsonl [--conditions FILE.json] [--variant V]
                     [--position SPEC] [--layers SPEC]

With --tasks, a flag not given defaults to probes.variant / probes.layers /
probes.component / probes.position (the probes' activations), not to extraction.*.
Every input is checked (specs, trait data, responses) before the model is loaded.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from steerops.cli import flags, load_params_for, overrides_from, run_out_flag, stage_parser
from steerops.errors import SteeropsError
from steerops.io import check_folder_name
from steerops.specs import Layers
from steerops.traits import load_trait

SERVED = "up to date, served from disk"
FORCE_HINT = "(--force extracts again)"


def register(subparsers) -> None:
    parser = stage_parser(subparsers, "extract", __doc__)
    flags(
        parser,
        "--trait=traits.names --position=extraction.positions extraction.variant "
        "extraction.layers extraction.component extraction.dtype extraction.token_budget "
        "extraction.shard_examples",
    )
    parser.add_argument(
        "--tasks",
        metavar="FILE.jsonl",
        default=None,
        help="task-set mode: tasks (task_id, prompt or messages, "
        "optional system_prompt), one JSON object per line",
    )
    parser.add_argument(
        "--conditions",
        metavar="FILE.json",
        default=None,
        help="task-set mode: system-prompt conditions (baseline + conditions)",
    )
    parser.add_argument("--force", action="store_true", help="recompute even if up to date")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    params = load_params_for(args)
    if args.tasks:
        _run_tasks(args, params)
    elif args.conditions:
        raise SteeropsError("--conditions needs --tasks FILE.jsonl")
    else:
        _run_traits(args, params)


def _pipeline_file(params, tasks_file: Path) -> bool:
    """Whether `tasks_file` is the pipeline's task file (`probes.tasks`)."""
    return tasks_file.resolve() == params.path(params.probes.tasks).resolve()


def _task_set_name(params, tasks_file: Path, scratch: bool) -> str:
    """The folder name of a task set's activations: the pipeline's (`probes.tasks_name`, or
        its file's stem) for the pipeline's task file, the file's own stem for another one,
        which must not land in the pipeline's folder (a declared DVC output) unless the run writes
    a folder of its own (`scratch`: --out DIR)."""
    from steerops.extract.tasks import tasks_name

    pipeline = tasks_name(params)
    check_folder_name(pipeline, "probes.tasks_name" if params.probes.tasks_name else "probes.tasks")
    if _pipeline_file(params, tasks_file):
        return pipeline
    name = tasks_file.stem
    check_folder_name(name, f"--tasks {tasks_file}")
    if name == pipeline and not scratch:
        raise SteeropsError(
            f"--tasks {tasks_file}: not the pipeline's task file ({params.probes.tasks}), but "
            f"its activations would replace the pipeline's task set {name!r}: rename the "
            "file, or pass --out DIR to write a scratch run"
        )
    return name


def _run_traits(args, params) -> None:
    from steerops.extract.trait import extract_trait
    from steerops.generate.store import (
        check_generated_length,
        check_prompts,
        load_kept_responses,
        responses_file,
    )

    cfg = params.extraction
    positions = cfg.positions
    if not positions:
        raise SteeropsError("extraction.positions: empty")
    params.variant(cfg.variant, "extraction.variant")
    for name in params.traits.names:
        trait = load_trait(params.path(params.traits.root), name)
        if any(p.needs_response for p in positions):
            source = responses_file(params.out, name, cfg.variant)
            out_flag = run_out_flag(params)
            check_prompts(source, trait, out_flag)
            load_kept_responses(source, name, cfg.variant, trait.prompt_counts(), out_flag)
            for pos in positions:
                check_generated_length(source, name, pos, out_flag)
    _precheck(params, cfg.variant, cfg.layers, "extraction.layers", cfg.component)
    loaded = _load(params, cfg.variant)
    layers = cfg.layers.resolve(loaded.layout.num_layers, "extraction.layers")
    for name in params.traits.names:
        for pos in positions:
            out_dir, meta = extract_trait(
                params, loaded, name, pos, layers, cfg.component, force=args.force
            )
            _report(f"{name} {pos.text}", out_dir, meta)


def _run_tasks(args, params) -> None:
    from steerops.extract.store import task_activations_dir
    from steerops.extract.tasks import (
        BASELINE,
        check_task_file,
        extract_tasks,
        load_conditions,
        load_tasks,
        tasks_digest,
    )

    # The extraction flags apply when given; otherwise the probes block's settings do.
    probes = params.probes
    given = overrides_from(args)
    if "traits.names" in given:
        raise SteeropsError("--trait: task-set mode (--tasks) extracts the tasks, not a trait")

    def chosen(key: str, default):
        return getattr(params.extraction, key) if f"extraction.{key}" in given else default

    def key_of(name: str) -> str:  # the params key a setting came from (errors name it)
        return f"extraction.{name}" if f"extraction.{name}" in given else f"probes.{name}"

    variant, layer_spec = chosen("variant", probes.variant), chosen("layers", probes.layers)
    component = chosen("component", probes.component)
    positions = chosen("positions", [probes.position])
    if len(positions) != 1:
        raise SteeropsError(
            f"--position: task-set mode takes one position (got {', '.join(map(str, positions))})"
        )
    position = positions[0]
    params.variant(variant, key_of("variant"))
    tasks_file = Path(args.tasks)
    tasks = load_tasks(tasks_file)
    conditions = load_conditions(args.conditions) if args.conditions else [BASELINE]
    if position.needs_response:
        raise SteeropsError(
            f"position {position.text!r}: task sets have no responses; use a "
            "prompt position such as prompt[-1]"
        )
    name = _task_set_name(params, tasks_file, scratch=bool(getattr(args, "run_folder", None)))
    _precheck(params, variant, layer_spec, key_of("layers"), component)
    digest = tasks_digest(tasks)
    advice = (
        "set probes.tasks_name to name this set apart, or delete that folder to replace them"
        if _pipeline_file(params, tasks_file)
        else "rename the file, pass --out DIR for a run of its own, or delete that folder "
        "to replace them"
    )
    for c in conditions:  # before the model loads
        folder = task_activations_dir(params.out, name, variant, position, component, c.id)
        check_task_file(folder, tasks_file, params.root, digest, f"task set {name!r}: {advice}")
    loaded = _load(params, variant)
    layers = layer_spec.resolve(loaded.layout.num_layers, key_of("layers"))
    before = {
        c.id: _written(task_activations_dir(params.out, name, variant, position, component, c.id))
        for c in conditions
    }
    inputs = {"tasks": tasks_file}
    if args.conditions:
        inputs["conditions"] = Path(args.conditions)
    outputs = extract_tasks(
        params,
        loaded,
        tasks,
        name,
        conditions,
        position,
        layers,
        component,
        force=args.force,
        run_inputs=inputs,
        tasks_file=tasks_file,
    )
    for cond_id, out_dir in outputs.items():
        served = _written(out_dir) == before[cond_id]
        done = f"{SERVED} {FORCE_HINT}" if served else "extracted"
        print(f"{name} [{cond_id}]: {done} -> {out_dir}")


def _precheck(params, variant: str, spec: Layers, key: str, component: str) -> None:
    """Check layer ranges (of params key `key`) and the component against the model's
    config before loading its weights."""
    from steerops.models.loading import model_shape
    from steerops.models.resolver import check_component, component_paths

    model = params.variant(variant)
    shape = model_shape(params, variant)
    if shape.model_type is None:  # unreadable config: the check after loading still runs
        return
    if shape.num_layers is not None:
        spec.resolve(shape.num_layers, key)
    model_type = shape.model_type
    attn, mlp = component_paths(model_type, model.attn_path, model.mlp_path)
    check_component(model_type, component, attn if component == "attn_out" else mlp, variant)


def _load(params, variant: str):
    from steerops.models.loading import load_model

    return load_model(params, variant, padding_side=params.extraction.padding_side)


def _written(folder: Path) -> tuple[int, int] | None:
    """Which write of `folder`'s metadata.json is on disk (an extraction writes it last, as
    a new file; serving the folder leaves it), None when there is none."""
    from steerops.extract.store import METADATA_FILE

    try:
        stat = (folder / METADATA_FILE).stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def _report(label: str, out_dir: Path, meta: dict) -> None:
    """One line per position: what an extraction did, or that it was served from disk
    (its metadata as the file holds it, with no timing: that is only an extraction's
    own, `run_job`; a served folder may have had its record of sources rewritten)."""
    counts = meta["counts"]
    examples = (
        f"{counts.get('positive', 0)} positive / {counts.get('negative', 0)} negative, "
        f"{counts.get('dropped_empty', 0)} dropped"
    )
    timing = meta.get("timing")
    if timing is None:  # served: no speed for no work
        print(f"{label}: {SERVED}: {examples} {FORCE_HINT} -> {out_dir}")
        return
    resumed = timing.get("reused_shards")
    resumed_from = f", {resumed} shards from an interrupted run reused" if resumed else ""
    print(
        f"{label}: extracted {examples}, {timing['tokens_per_s'] or 0:.0f} tokens/s"
        f"{resumed_from} -> {out_dir}"
    )
