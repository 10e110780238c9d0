"""The `steerops` command: one subcommand per pipeline stage.

Each stage's `command` module exposes `register(subparsers)`; only the module of the stage
named on the command line is imported (see `build_parser`). Flags that override params are
declared with `add_override` / `flags`, which record the dotted params key they set
and take type, choices and help from its field (`steerops.config.flags`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

from steerops import __version__
from steerops.errors import SteeropsError

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


def stage_parser(
    subparsers, name: str, description: str, common: bool = True
) -> argparse.ArgumentParser:
    """The subparser of stage `name`: its help line from STAGES, `description` (a module
    docstring keeps its layout) and, with `common`, --params and --out."""
    formatter = (
        argparse.RawDescriptionHelpFormatter if "\n" in description else argparse.HelpFormatter
    )
    parser = subparsers.add_parser(
        name, help=STAGES[name][1], description=description, formatter_class=formatter
    )
    if common:
        add_common(parser)
    return parser


def add_override(parser: argparse.ArgumentParser, flag: str, key: str, **kwargs: Any) -> None:
    """A flag whose value, when given, replaces params key `key` (dotted). Type, choices,
    metavar and help come from the params field; `kwargs` replace them (an explicit `action`
    drops the derived type)."""
    from steerops.config.flags import flag_kwargs

    derived = flag_kwargs(key, flag)
    if "action" in kwargs:
        derived = {k: v for k, v in derived.items() if k == "help"}
    parser.add_argument(flag, dest=_OVERRIDE + key, default=None, **{**derived, **kwargs})


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


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--params", default=None, metavar="FILE", help="experiment params (default: ./params.yaml)"
    )
    add_override(parser, "--out", "paths.out", metavar="DIR", type=abs_path)


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    return {
        k[len(_OVERRIDE) :]: v
        for k, v in vars(args).items()
        if k.startswith(_OVERRIDE) and v is not None
    }


def load_params_for(args: argparse.Namespace):
    from steerops.config import load_params

    return load_params(args.params, overrides_from(args))


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The CLI parser. Given `argv`, only the stage it names is imported: stage modules pull
    in torch, transformers and scikit-learn, so `steerops --help` and one-line errors come
    back at once. Without `argv`, every stage is registered (tests, documentation)."""
    parser = argparse.ArgumentParser(
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        args.func(args)
    except SteeropsError as exc:
        print(f"steerops {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"steerops {args.command}: interrupted; finished work is kept", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
