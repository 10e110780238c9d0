"""Flags: the ones every stage shares, and the ones that override a params key (each
records the key it sets, for error messages and `--help`)."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path
from typing import Any

from steerops.cli.stages import STAGES

_OVERRIDE = "override:"
# `-1`, `-0.5`, `-1e-3`, `-1,1` (no flag of steerops looks like a negative number)
_NEGATIVE_VALUE = re.compile(r"^-\.?\d")
# a command's {params key: the flag that sets it} (for error messages), kept per command
# (a parser default): two commands may set one key with differently named flags
_FLAG_OF = "flag_of"


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


def given_flags_text(args: argparse.Namespace, keys: tuple[str, ...]) -> str:
    """ " --flag VALUE" for each of the params `keys` this command line set, as typed: what a
    command an error suggests needs to select what this one did."""
    flag_of = getattr(args, _FLAG_OF, None) or {}
    values = overrides_from(args)
    return "".join(
        f" {flag_of[key]} {shlex.quote(str(values[key]))}"
        for key in keys
        if key in values and key in flag_of
    )


def command_name(args: argparse.Namespace) -> str:
    """The command as typed: `clean`, `probe train`."""
    return " ".join(filter(None, (args.command, getattr(args, "probe_command", None))))
