"""Where a run writes: the pipeline's outputs, or a scratch run's folder of its own (`--out`
DIR, else `runs/<stage>-<time>/`), which never lies in another pipeline's areas; the
params a stage runs with; and the flags a suggested command needs to write what this
run reads."""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import shlex
import sys
import time
from pathlib import Path

from steerops.cli.options import command_name, flags_given, overrides_from
from steerops.errors import SteeropsError
from steerops.io import check_folder_target

RUNS_DIR = "runs"  # scratch run folders, next to the params file
# in a run folder given with --out: the --inputs its steer and search read, which a later
# command on the folder reads too unless given --inputs (a report of the run without them
# would read the pipeline's vectors and calibration, not those its results were made with)
INPUTS_RECORD = "inputs.json"
# what marks a project folder, which --out never names (a params file alone may be a copy
# kept with a run as its record)
PROJECT_FILES = ("dvc.yaml", "dvc.lock")


def load_params_for(args: argparse.Namespace):
    """The params of this invocation: the params file, the flags' overrides and the run's
    place (the pipeline's outputs, --out DIR, or a scratch run folder)."""
    from steerops.config import DEFAULT_PARAMS_FILE, load_params
    from steerops.config.models import pin_device

    if args.params is None and not Path(DEFAULT_PARAMS_FILE).exists():
        # a stage run outside the project folder would otherwise fail on the toy's paths
        print(
            f"steerops {command_name(args)}: no {DEFAULT_PARAMS_FILE} in {Path.cwd()}: every key "
            "takes its default (the toy world); --params FILE names a params file",
            file=sys.stderr,
        )
    overrides = overrides_from(args)
    folder = getattr(args, "run_folder", None)
    scratch = getattr(args, "scratch_stage", False)
    if folder and getattr(args, "pipeline", False):
        raise SteeropsError(
            "--pipeline writes the pipeline's outputs (paths.out) and --out DIR a run of its "
            "own: give one of them"
        )
    inputs = getattr(args, "inputs_folder", None)
    if inputs and not folder:
        if getattr(args, "pipeline", False) or (scratch and os.environ.get("DVC_STAGE")):
            how = "--pipeline" if getattr(args, "pipeline", False) else "a `dvc repro` stage"
            raise SteeropsError(
                f"{how} reads and writes the pipeline's outputs (paths.out) and --inputs DIR "
                "reads another folder's: run it by hand for --inputs"
            )
        if not scratch:  # its outputs would replace the pipeline's
            raise SteeropsError(
                f"--inputs DIR needs --out DIR: without it `steerops {command_name(args)}` writes "
                "the pipeline's outputs"
            )
    params = load_params(args.params, overrides, flags_given(args))
    pipeline_out = (params.inputs,)  # the pipeline's outputs, before --out or --inputs
    record = None
    if folder:
        check_run_folder(Path(folder), params)
        if hasattr(args, "inputs_folder") and not inputs:
            inputs = _recorded_inputs(Path(folder), command_name(args))
        if not scratch and not getattr(args, "inputs_from_pipeline", False):
            # the whole run, inputs included, lives there
            params = load_params(args.params, {**overrides, "paths.out": folder}, flags_given(args))
    if inputs:
        if not Path(inputs).is_dir():
            what = "a file, not a folder" if Path(inputs).exists() else "no such folder"
            raise SteeropsError(f"--inputs {inputs}: {what}")
        params = load_params(args.params, {**overrides, "paths.out": inputs}, flags_given(args))
        params.set_inputs_flag(f" --out {shlex.quote(display_path(inputs))}")
        if folder and scratch:  # steer and search: what the run's results are made from,
            # recorded once their inputs pass (a refused command leaves the record as it was)
            record = functools.partial(_record_inputs, Path(folder), Path(inputs))
    if (
        args.params is not None
        and Path(args.params).resolve() != Path(DEFAULT_PARAMS_FILE).resolve()
    ):
        params.set_params_flag(f" --params {shlex.quote(display_path(args.params))}")
    pin_device(params, getattr(args, "device", None))
    if folder:
        params.set_run_folder(Path(folder), named=True, kept=pipeline_out)
        if record is not None:
            params.when_checked(record)
    elif scratch and not (getattr(args, "pipeline", False) or os.environ.get("DVC_STAGE")):
        args.scratch_folder = new_run_folder(params.root, args.command)
        params.set_run_folder(args.scratch_folder, named=False, kept=pipeline_out)
        # said when the stage's run opens, its inputs checked: bad input gets one line
        where = f"{display_path(params.inputs)}/"
        reads = (
            f"it reads the outputs in {where} (--inputs) and writes none there"
            if inputs
            else f"it reads the pipeline's outputs in {where} and writes none; --pipeline or "
            "`dvc repro` writes them"
        )
        run = display_path(args.scratch_folder)
        notice = f"steerops {command_name(args)}: scratch run in {run} ({reads})"
        params.when_checked(functools.partial(print, notice, flush=True))
    return params


def _recorded_inputs(folder: Path, command: str) -> str | None:
    """The --inputs the run in `folder` was steered or searched with (`INPUTS_RECORD`), said
    on stderr; None without a record."""
    from steerops.io import read_json

    record = folder / INPUTS_RECORD
    if not record.is_file():
        return None
    try:
        recorded = read_json(record)
        inputs, relative = recorded["inputs"], recorded.get("relative")
        assert isinstance(inputs, str) and isinstance(relative, str | None)
    except (SteeropsError, KeyError, TypeError, AssertionError, AttributeError):
        raise SteeropsError(
            f"{record}: not a record of the run's --inputs; give --inputs DIR (which "
            "rewrites it when steering or searching)"
        ) from None
    # where they were; else, a project moved with its runs, where they are beside the run
    if not Path(inputs).is_dir() and relative is not None:
        inputs = os.path.normpath(folder.resolve() / relative)
    if not Path(inputs).is_dir():
        raise SteeropsError(
            f"--out {display_path(folder)}: its results were made from the inputs in "
            f"{display_path(inputs)} (--inputs), no longer a folder; give --inputs DIR"
        )
    print(
        f"steerops {command}: reading the inputs in {display_path(inputs)}, which this run's "
        f"steer and search read ({display_path(record)}); --inputs DIR reads others",
        file=sys.stderr,
    )
    return inputs


def _record_inputs(folder: Path, inputs: Path) -> None:
    from steerops.io import read_json, write_json

    # the folder, and its path from the run folder: a project moved with its runs still
    # finds them (none across drives)
    value: dict[str, str | None] = {"inputs": str(inputs.resolve()), "relative": None}
    with contextlib.suppress(ValueError):
        value["relative"] = os.path.relpath(inputs.resolve(), folder.resolve())
    record = folder / INPUTS_RECORD
    with contextlib.suppress(OSError, ValueError, SteeropsError):
        if read_json(record) == value:
            return
    write_json(record, value)


def check_run_folder(folder: Path, params) -> None:
    """--out names a run of its own: not the project folder (its metrics/ would replace the
    pipeline's), nor another project's or experiment's folder or pipeline files, nor the
    pipeline's outputs, reports or metrics or a folder in them (its files would mix with the
    pipeline's), nor steerops' own source; nor a file."""
    check_folder_target(folder, "--out")
    here = folder.resolve()
    if here == params.root.resolve():
        raise SteeropsError(
            f"--out {folder}: the project folder, whose metrics/ are the pipeline's; name a "
            "folder for this run (e.g. runs/NAME)"
        )
    check_outside_pipelines(folder, params, "--out")
    held = _project_marks(here, params.file)
    if held:
        raise SteeropsError(
            f"--out {folder}: a project folder (it holds {held}), whose metrics/ are its "
            "pipeline's; name a folder for this run (e.g. runs/NAME)"
        )
    source = Path(__file__).resolve().parents[2]  # src/ of an editable install
    if here == source or source in here.parents:
        raise SteeropsError(
            f"--out {folder}: inside steerops' source ({source}); name a "
            "folder for this run (e.g. runs/NAME)"
        )


def check_outside_pipelines(path: Path, params, flag: str) -> None:
    """A path a run of its own (--out) writes: not in this pipeline's outputs, reports or
    metrics (as its params file sets them, whatever flags say), nor in those of an
    experiment or project folder it lies in (another params file's pipeline, e.g. the toy
    experiment's given the main params)."""
    from steerops.config import DEFAULT_PARAMS_FILE

    here, root = path.resolve(), params.root.resolve()
    own = params.run_folder.resolve() if params.run_folder is not None else None
    if own is not None and (here == own or own in here.parents):
        return  # the run's own folder, which --out already checked
    areas = _pipeline_areas(root, params.file or root / DEFAULT_PARAMS_FILE)
    for folder in [here, *here.parents]:
        if _project_marks(folder, params.file):
            areas += _pipeline_areas(folder, folder / DEFAULT_PARAMS_FILE)
    for theirs, what, key, owner in areas:
        if here == theirs or theirs in here.parents:
            whose = "the pipeline's" if owner == root else f"{display_path(owner)}'s"
            raise SteeropsError(
                f"{flag} {display_path(path)}: inside {whose} {what} ({display_path(theirs)}, "
                f"{key}); name a path in this run's folder (e.g. runs/NAME)"
            )


# what a run writes straight into its folder and an experiment never at its top (its
# reports, metrics and MLflow store sit there too): a folder holding any is a run's, and a
# params file there a copy kept as the run's record
RUN_MADE = (
    "steering",
    "search",
    "vectors",
    "activations",
    "responses",
    "calibration",
    "probes",
    INPUTS_RECORD,
)


def _project_marks(folder: Path, in_use: Path | None = None) -> str | None:
    """What marks `folder` as a project or an experiment: dvc.yaml or dvc.lock, or a params
    file whose outputs folder is there, or one not made yet, in a folder neither in runs/
    nor holding what a run writes, unless it is a copy of the params file `in_use` (a run
    may keep one as its record)."""
    from steerops.config import DEFAULT_PARAMS_FILE

    held = next((name for name in PROJECT_FILES if (folder / name).exists()), None)
    file = folder / DEFAULT_PARAMS_FILE
    if held is None and file.is_file():
        (outputs, *_), *_ = _pipeline_areas(folder, file)
        if outputs.is_dir() and outputs != folder:
            held = f"{DEFAULT_PARAMS_FILE} and its outputs"
        elif outputs != folder and not (
            folder.parent.name == RUNS_DIR
            or any((folder / m).exists() for m in RUN_MADE)
            or _same_bytes(file, in_use)
        ):
            held = f"{DEFAULT_PARAMS_FILE}, its outputs not made yet"
    return held


def _same_bytes(file: Path, other: Path | None) -> bool:
    with contextlib.suppress(OSError):
        return other is not None and file.read_bytes() == Path(other).read_bytes()
    return False


def _pipeline_areas(root: Path, file: Path) -> list[tuple[Path, str, str, Path]]:
    """(folder, what, params key, root) of the pipeline files the params `file` of a
    pipeline at `root` keeps: its outputs, reports and metrics (read as YAML; the defaults
    where it is unreadable or silent)."""
    import yaml

    from steerops.config import SUMMARY_DIR

    values: dict = {}
    with contextlib.suppress(OSError, ValueError, yaml.YAMLError):
        loaded = yaml.safe_load(file.read_text(encoding="utf-8"))
        values = loaded if isinstance(loaded, dict) else {}

    def setting(block: str, default: str) -> Path:
        found = values.get(block)
        return (
            root / str((found if isinstance(found, dict) else {}).get("out", default))
        ).resolve()

    return [
        (setting("paths", "outputs"), "outputs", "paths.out", root),
        (setting("report", "reports"), "reports", "report.out", root),
        ((root / SUMMARY_DIR).resolve(), "metrics", f"{SUMMARY_DIR}/", root),
    ]


def new_run_folder(root: Path, stage: str) -> Path:
    """A fresh `runs/<stage>-<time>[-n]` folder next to the params file (created now, so
    two runs started in the same second get two folders)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1, 1000):
        folder = root / RUNS_DIR / (f"{stage}-{stamp}" + (f"-{n}" if n > 1 else ""))
        try:
            folder.mkdir(parents=True)
            return folder
        except FileExistsError:
            continue
    raise SteeropsError(f"cannot create a run folder under {root / RUNS_DIR}")


def display_path(path: str | Path) -> str:
    """`path` relative to the working directory when it lies inside it (short terminal
    lines), else as it is."""
    path = Path(path)
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix() or "."
    except ValueError:
        return str(path)


def run_out_flag(params) -> str:
    """What a command an error suggests needs to write where this run reads: " --params
    FILE" for a params file other than ./params.yaml, and " --out DIR" for a run given its
    own folder (--out DIR)."""
    out = f" --out {shlex.quote(display_path(params.run_folder))}" if params.run_named else ""
    return params.params_flag + out


def read_flag(params) -> str:
    """What a suggested `steerops report` needs to read what this run wrote and read:
    `run_out_flag`, and --inputs DIR when this run read another run's vectors."""
    flag = run_out_flag(params)
    if params.inputs_named:
        flag += f" --inputs {shlex.quote(display_path(params.inputs))}"
    return flag


def rerun_flag(params) -> str:
    """What a suggested `steerops steer` or `search` needs to write what this run reads:
    `read_flag`, and --pipeline for the pipeline's outputs (run by hand without it, either
    is a scratch run of its own, which this run would not read)."""
    flag = read_flag(params)
    return flag if params.run_named else flag + " --pipeline"


def run_file(
    params, args: argparse.Namespace, key: str, name: str, writes: bool = True
) -> Path | None:
    """Where a file at params `key` goes in a run of its own (--out DIR): DIR/`name`, so the
    run does not write over the pipeline's; None for the pipeline's run, or when the key's
    flag gave the path (one it `writes` must then lie outside every pipeline's files)."""
    if not params.run_named:
        return None
    if key in overrides_from(args):
        if writes:
            flag = flags_given(args).get(key, key)
            value = functools.reduce(getattr, key.split("."), params)
            check_outside_pipelines(params.path(value), params, flag)
        return None
    return params.run_folder / name


def _drop_if_empty(folder: Path | None) -> None:
    """Remove a scratch run folder a failed command left empty (and runs/, if that was all)."""
    if folder is not None and folder.is_dir() and not any(folder.rglob("*")):
        folder.rmdir()
        if not any(folder.parent.iterdir()):
            folder.parent.rmdir()
