"""The `steerops` command: one subcommand per pipeline stage.

Each stage's `command` module exposes `register(subparsers)`; only the module of the stage
named on the command line is imported (see `build_parser`). Flags that override params are
declared with `add_override` / `flags`, which record the dotted params key they set
and take type, choices and help from its field (`steerops.config.flags`).

Scratch runs: a stage registered with `scratch=True` (steer, search) writes the pipeline's
outputs only when it is the pipeline's run: when DVC runs it (DVC sets DVC_STAGE for every
stage command) or with `--pipeline`. Run by hand, it is a scratch run with a folder of its
own, `runs/<stage>-<time>/` next to the params file or `--out DIR`: it reads the pipeline's
outputs (vectors) and writes everything it makes there (see `Params.set_run_folder`).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import os
import re
import shlex
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from steerops import __version__
from steerops.errors import SteeropsError
from steerops.io import check_folder_target
from steerops.redact import redacted

# subcommand -> ("module[:function]" whose function, default `register`, adds the subparser,
# one-line help); pipeline order.
STAGES: dict[str, tuple[str, str]] = {
    "toy": (
        "steerops.toy.command",
        "build the embedded toy world (trained model, trait data, judge)",
    ),
    "smollm2": (
        "steerops.smollm2.command",
        "build the SmolLM2-135M-Instruct model folder from the installed package",
    ),
    "models": (
        "steerops.models.command",
        "record each model variant's id, revision and content fingerprint for DVC",
    ),
    "generate": (
        "steerops.generate.command",
        "complete a trait's positive/negative prompts (optionally vetted)",
    ),
    "extract": (
        "steerops.extract.command",
        "extract pooled activations (traits, or a task set for probes)",
    ),
    "vectors": ("steerops.vectors.command", "compute steering vectors from trait activations"),
    "calibrate": (
        "steerops.calibration.command",
        "find a variant's massive-activation dims (calibration.json)",
    ),
    "clean": (
        "steerops.vectors.command:register_clean",
        "remove massive dims from steering vectors (before or after fitting)",
    ),
    "steer": (
        "steerops.steering.command",
        "steer with vector methods over layers x coefficients and score them",
    ),
    "search": (
        "steerops.search.command",
        "Optuna search of the steering coefficient under a coherence constraint",
    ),
    "dashboard": (
        "steerops.search.command:register_dashboard",
        "optuna-dashboard on the search studies (best trial = the search's choice)",
    ),
    "report": (
        "steerops.report.command",
        "tables and plots from tracked steering and search results",
    ),
    "probe": (
        "steerops.probes.command",
        "train preference probes and analyse them under OOD conditions",
    ),
}

_OVERRIDE = "override:"
# `-1`, `-0.5`, `-1e-3`, `-1,1` (no flag of steerops looks like a negative number)
_NEGATIVE_VALUE = re.compile(r"^-\.?\d")
# a command's {params key: the flag that sets it} (for error messages), kept per command
# (a parser default): two commands may set one key with differently named flags
_FLAG_OF = "flag_of"
RUNS_DIR = "runs"  # scratch run folders, next to the params file
# what marks a project folder, which --out never names (a params file alone may be a copy
# kept with a run as its record)
PROJECT_FILES = ("dvc.yaml", "dvc.lock")
_invocation: list[str] = []  # this process's command line, as `main` got it


def invocation() -> str | None:
    """`steerops STAGE ARGS...` of the running command (None outside `main`), with the
    credentials (and a server URL's query) of any URL in it left out: it is logged as the
    run's description."""
    if not _invocation:
        return None
    return shlex.join(["steerops", *map(redacted, _invocation)])


def params_flag(parser: argparse.ArgumentParser) -> None:
    """--params FILE, the experiment's params (every stage takes it)."""
    parser.add_argument(
        "--params", default=None, metavar="FILE", help="experiment params (default: ./params.yaml)"
    )


def stage_parser(
    subparsers,
    name: str,
    description: str,
    common: bool = True,
    scratch: bool = False,
    out_help: str | None = None,
    device: bool = True,
) -> argparse.ArgumentParser:
    """The subparser of stage `name`: its help line from STAGES, `description` (a module
    docstring keeps its layout) and, with `common`, --params and --out (and --pipeline for
    a stage whose hand-made runs are scratch runs; `out_help` words --out for a stage that
    reads it otherwise; `device`: --device, for a stage that loads a model)."""
    formatter = (
        argparse.RawDescriptionHelpFormatter if "\n" in description else argparse.HelpFormatter
    )
    parser = subparsers.add_parser(
        name, help=STAGES[name][1], description=description, formatter_class=formatter
    )
    if common:
        add_common(parser, scratch, out_help, device)
    return parser


def add_override(parser: argparse.ArgumentParser, flag: str, key: str, **kwargs: Any) -> None:
    """A flag whose value, when given, replaces params key `key` (dotted). Type, choices,
    metavar and help come from the params field; `kwargs` replace them (an explicit `action`
    drops the derived type)."""
    from steerops.config.flags import flag_kwargs

    derived = flag_kwargs(key, flag)
    if "action" in kwargs:
        derived = {k: v for k, v in derived.items() if k == "help"}
    merged = {**derived, **kwargs}
    if merged.get("type") is abs_path and merged.get("help"):
        # the params key's path is read from the params file's folder; the flag's is not
        merged["help"] = (
            merged["help"].replace(" (relative to the params dir)", "")
            + " (given as a flag: relative to the working directory)"
        )
    parser.set_defaults(**{_FLAG_OF: {**(parser.get_default(_FLAG_OF) or {}), key: flag}})
    parser.add_argument(flag, dest=_OVERRIDE + key, default=None, **merged)


def no_flag(parser: argparse.ArgumentParser, flag: str, key: str, help: str) -> None:
    """A `--no-...` flag that sets boolean params key `key` to false."""
    add_override(parser, flag, key, action="store_const", const=False, help=help)


def flags(parser: argparse.ArgumentParser, keys: str, **kwargs: Any) -> None:
    """`add_override` for each space-separated params key: `block.some_key` gives
    `--some-key`, `--flag=block.key` names the flag itself."""
    for item in keys.split():
        flag, _, key = item.rpartition("=")
        add_override(parser, flag or "--" + key.rsplit(".", 1)[-1].replace("_", "-"), key, **kwargs)


def abs_path(text: str) -> str:
    """argparse type of a path flag: relative to the working directory, not the params."""
    return str(Path(text).resolve())


def run_or_path(text: str) -> str:
    """argparse type of a flag naming a run: its folder (relative to the working directory,
    as `abs_path`) or, where no such path exists, a run id kept as given."""
    return abs_path(text) if Path(text).exists() else text


def add_common(
    parser: argparse.ArgumentParser,
    scratch: bool = False,
    out_help: str | None = None,
    device: bool = True,
) -> None:
    params_flag(parser)
    if scratch:
        parser.add_argument(
            "--out",
            dest="run_folder",
            type=abs_path,
            metavar="DIR",
            help="this run's folder (default when run by hand: runs/<stage>-<time>/ next to "
            "the params file): its outputs, metrics/, judge cache (it reads the pipeline's "
            "too; one named outside paths.out is shared) (and a search's Optuna study); given "
            "--out, its MLflow store too (a default scratch run logs to the project's store "
            "beside the pipeline's runs), unless tracking.uri or MLFLOW_TRACKING_URI says "
            "otherwise; inputs are read from the pipeline's outputs (paths.out) or --inputs",
        )
        inputs_flag(parser)
        parser.add_argument(
            "--pipeline",
            action="store_true",
            help="write the pipeline's outputs (paths.out, metrics/), as `dvc repro` does; "
            "DVC's own runs are the pipeline's without it",
        )
    else:
        parser.add_argument(
            "--out",
            dest="run_folder",
            type=abs_path,
            metavar="DIR",
            help=out_help
            or "outputs root for this run instead of paths.out (read and written), with "
            "its metrics/, judge cache (unless judge.cache_dir lies outside paths.out: then "
            "shared) and, unless tracking.uri or MLFLOW_TRACKING_URI says otherwise, its "
            "MLflow store",
        )
    if device:  # a stage that loads no model has no use for it
        parser.add_argument(
            "--device",
            default=None,
            metavar="DEV",
            help="put every model this run loads on DEV (e.g. cuda:1: one worker per GPU on "
            "a shared params file), replacing models.<variant>.device / device_map",
        )
    parser.set_defaults(scratch_stage=scratch)


def inputs_flag(parser: argparse.ArgumentParser) -> None:
    """--inputs DIR, for a stage whose run by hand reads the pipeline's outputs."""
    parser.add_argument(
        "--inputs",
        dest="inputs_folder",
        type=abs_path,
        metavar="DIR",
        help="read the earlier stages' outputs (vectors, calibration, the results logs that "
        "serve known configs) from DIR instead of the pipeline's outputs (paths.out): e.g. "
        "a run made with `steerops vectors --out DIR` or `steerops clean --out DIR`",
    )


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    return {
        k[len(_OVERRIDE) :]: v
        for k, v in vars(args).items()
        if k.startswith(_OVERRIDE) and v is not None
    }


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
    if folder:
        check_run_folder(Path(folder), params)
        if not scratch and not getattr(args, "inputs_from_pipeline", False):
            # the whole run, inputs included, lives there
            params = load_params(args.params, {**overrides, "paths.out": folder}, flags_given(args))
    if inputs:
        if not Path(inputs).is_dir():
            what = "a file, not a folder" if Path(inputs).exists() else "no such folder"
            raise SteeropsError(f"--inputs {inputs}: {what}")
        params = load_params(args.params, {**overrides, "paths.out": inputs}, flags_given(args))
        params.set_inputs_flag(f" --out {shlex.quote(display_path(inputs))}")
    if (
        args.params is not None
        and Path(args.params).resolve() != Path(DEFAULT_PARAMS_FILE).resolve()
    ):
        params.set_params_flag(f" --params {shlex.quote(display_path(args.params))}")
    pin_device(params, getattr(args, "device", None))
    if folder:
        params.set_run_folder(Path(folder), named=True, kept=pipeline_out)
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
        params.hold_notice(f"steerops {command_name(args)}: scratch run in {run} ({reads})")
    return params


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
    held = _project_marks(here)
    if held:
        raise SteeropsError(
            f"--out {folder}: a project folder (it holds {held}), whose metrics/ are its "
            "pipeline's; name a folder for this run (e.g. runs/NAME)"
        )
    source = Path(__file__).resolve().parent.parent  # src/ of an editable install
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
        if _project_marks(folder):
            areas += _pipeline_areas(folder, folder / DEFAULT_PARAMS_FILE)
    for theirs, what, key, owner in areas:
        if here == theirs or theirs in here.parents:
            whose = "the pipeline's" if owner == root else f"{display_path(owner)}'s"
            raise SteeropsError(
                f"{flag} {display_path(path)}: inside {whose} {what} ({display_path(theirs)}, "
                f"{key}); name a path in this run's folder (e.g. runs/NAME)"
            )


def _project_marks(folder: Path) -> str | None:
    """What marks `folder` as a project or an experiment: dvc.yaml or dvc.lock, or a params
    file whose outputs folder is there (a params file alone may be a copy kept with a run
    as its record)."""
    from steerops.config import DEFAULT_PARAMS_FILE

    held = next((name for name in PROJECT_FILES if (folder / name).exists()), None)
    file = folder / DEFAULT_PARAMS_FILE
    if held is None and file.is_file():
        (outputs, *_), *_ = _pipeline_areas(folder, file)
        if outputs.is_dir() and outputs != folder:
            held = f"{DEFAULT_PARAMS_FILE} and its outputs"
    return held


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


def flags_given(args: argparse.Namespace) -> dict[str, str]:
    """{params key: the flag on this command line that set it}, so that an error about the
    key names what the user typed (`steerops.config.name_the_flag`)."""
    flag_of = getattr(args, _FLAG_OF, None) or {}
    given = {key: flag_of[key] for key in overrides_from(args) if key in flag_of}
    if getattr(args, "run_folder", None):
        given["paths.out"] = "--out"
    if getattr(args, "inputs_folder", None):  # a run by hand's --out leaves paths.out
        given["paths.out"] = "--inputs"
    if getattr(args, "device", None):
        given["models.*.device"] = "--device"
    return given


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


def rerun_flag(params) -> str:
    """What a suggested `steerops steer` or `search` needs to write what this run reads:
    `run_out_flag`, --inputs DIR when this run read another run's vectors, and --pipeline
    for the pipeline's outputs (run by hand without it, either is a scratch run of its own,
    which this run would not read)."""
    flag = run_out_flag(params)
    if params.inputs_named:
        flag += f" --inputs {shlex.quote(display_path(params.inputs))}"
    return flag if params.run_named else flag + " --pipeline"


def error_line(exc: Exception) -> str:
    """The error line: a SteeropsError's text; an OS error's reason and the file it names."""
    if isinstance(exc, OSError) and not isinstance(exc, SteeropsError):
        # a file where an output folder must go (--out FILE, --report-dir FILE): errno's
        # "File exists" / "Not a directory" do not say which is wrong
        if isinstance(exc, FileExistsError | NotADirectoryError) and exc.filename:
            return f"{exc.filename}: a file is where a folder must be (give a folder path)"
        return f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    return str(exc)


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


class OneLineParser(argparse.ArgumentParser):
    """A bad flag is one error line and exit code 2, like every other bad input (argparse
    prints the whole usage first); subcommand parsers inherit the class.

    A value that starts with a negative number is a value, lists included: argparse before
    Python 3.13 reads `--coefficients -1,1` as a second flag ("expected one argument")."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = _NEGATIVE_VALUE

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The CLI parser. Given `argv`, only the stage it names is imported: stage modules pull
    in torch, transformers and scikit-learn, so `steerops --help` and one-line errors come
    back at once. Without `argv`, every stage is registered (tests, documentation)."""
    parser = OneLineParser(
        prog="steerops",
        description="Experiment-tracked activation steering and probing for Hugging Face LMs.",
    )
    parser.add_argument("--version", action="version", version=f"steerops {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="STAGE")
    chosen = next((a for a in argv if not a.startswith("-")), None) if argv is not None else None
    for name, (target, help_text) in STAGES.items():
        if argv is None or name == chosen:
            module_name, _, function = target.partition(":")
            getattr(importlib.import_module(module_name), function or "register")(sub)
        else:
            sub.add_parser(name, help=help_text)
    return parser


def flag_given_twice(parser: argparse.ArgumentParser, argv: list[str]) -> str:
    """A warning when one setting is given twice on a command line (`--vet --no-vet`,
    `--layers 3 --layers 5`, an alias's flag given again), "" when none is. The last one
    wins, as in most command-line tools (an alias's default can be overridden), but a run
    under a value the user did not mean costs a sweep, so it is said."""
    seen: dict[str, tuple[str, str]] = {}
    current = parser
    for token in argv[: argv.index("--")] if "--" in argv else argv:
        sub = _subcommand(current, token)
        if sub is not None:  # `probe train`: the nested command's flags from here on
            current, seen = sub, {}
            continue
        name, _, value = token.partition("=")
        if not name.startswith("--"):
            continue
        matches = [o for o in current._option_string_actions if o.startswith(name)]
        exact = name if name in current._option_string_actions else None
        option = exact or (matches[0] if len(matches) == 1 else None)
        if option is None or option in ("--help", "-h"):
            continue
        dest = current._option_string_actions[option].dest
        if dest in seen:
            first = seen[dest][0]
            if first == option:
                return f"{option} given twice: the last one is used"
            return f"{first} and {option} both given: the last, {option}, is used"
        seen[dest] = (option, value)
    return ""


def _subcommand(parser: argparse.ArgumentParser, token: str) -> argparse.ArgumentParser | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and token in action.choices:
            return action.choices[token]
    return None


def command_name(args: argparse.Namespace) -> str:
    """The command as typed: `clean`, `probe train`."""
    return " ".join(filter(None, (args.command, getattr(args, "probe_command", None))))


def _deepest(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.ArgumentParser:
    for token in argv:
        sub = _subcommand(parser, token)
        if sub is not None:
            parser = sub
    return parser


def main(argv: list[str] | None = None) -> int:
    # before any stage imports mlflow: its usage telemetry would reach the network on every
    # tracked run (mlflow.telemetry.utils reads it; set to false, it stays the user's choice)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    if argv is None:  # the console script: progress as periodic lines when logged to a file
        from steerops.progress import lines_when_not_a_terminal

        lines_when_not_a_terminal()
    argv = sys.argv[1:] if argv is None else list(argv)
    _invocation[:] = argv
    try:  # a Ctrl-C while the stage's libraries import is an interrupt like any other
        parser = build_parser(argv)
        args, unknown = parser.parse_known_args(argv)
        if unknown:  # said by the (sub)command they were given to, with its --help
            given_to = argv[: argv.index(unknown[0])]  # the command before the first one
            _deepest(parser, given_to).error(f"unrecognized arguments: {' '.join(unknown)}")
    except KeyboardInterrupt:
        print("steerops: interrupted", file=sys.stderr)
        return 130
    if not getattr(args, "func", None):  # the help, then what went wrong: both on stderr
        parser.print_help(sys.stderr)
        print("steerops: error: no command given (one of those above)", file=sys.stderr)
        return 2
    twice = flag_given_twice(parser, argv)
    if twice:
        print(f"steerops {command_name(args)}: warning: {twice}", file=sys.stderr)
    try:
        with _terminated_as_interrupted() as terminated:
            args.func(args)
    except (SteeropsError, OSError) as exc:  # OSError: a path of the wrong kind, a full disk
        from steerops.config import name_the_flag

        line = name_the_flag(error_line(exc), flags_given(args))
        print(f"steerops {command_name(args)}: error: {line}", file=sys.stderr)
        _drop_if_empty(getattr(args, "scratch_folder", None))
        return 2
    except KeyboardInterrupt:
        print(
            f"steerops {command_name(args)}: interrupted; whatever finished before it is kept: "
            "run the same command again to resume",
            file=sys.stderr,
        )
        _drop_if_empty(getattr(args, "scratch_folder", None))
        return 128 + signal.SIGTERM if terminated else 130
    return 0


@contextlib.contextmanager
def _terminated_as_interrupted() -> Iterator[list[bool]]:
    """SIGTERM (a scheduler preempting the job, `timeout`, `kill`) stops a stage the way
    Ctrl-C does: finished work kept, rows in flight saved, its tracking runs ended as
    killed. Yields a list that holds True once a SIGTERM came."""
    came: list[bool] = []
    if threading.current_thread() is not threading.main_thread():  # signals go to main
        yield came
        return

    def interrupt(signum, frame):
        came.append(True)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield came
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
