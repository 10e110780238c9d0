"""The `steerops` command: one subcommand per pipeline stage.

Each stage module exposes `register(subparsers)`; a stage appears here only once its
module exists, so `--help` never lists a stage that cannot run. Flags that override params
are declared with `add_override`, which records the dotted params key they set.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from steerops import __version__
from steerops.errors import SteeropsError

# subcommand -> module defining register(subparsers); order is the pipeline's order.
STAGES: dict[str, str] = {
    "toy": "steerops.toy.command",
    "generate": "steerops.generate",
    "extract": "steerops.extract.command",
    "vectors": "steerops.vectors.command",
    "calibrate": "steerops.calibrate",
    "clean": "steerops.clean",
    "steer": "steerops.steering.command",
    "search": "steerops.search.command",
    "report": "steerops.report.command",
    "probe": "steerops.probes.command",
}

_OVERRIDE = "override:"


def add_override(parser: argparse.ArgumentParser, flag: str, key: str, **kwargs: Any) -> None:
    """A flag whose value, when given, replaces params key `key` (dotted)."""
    parser.add_argument(flag, dest=_OVERRIDE + key, default=None, **kwargs)


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default=None, metavar="FILE",
                        help="experiment params (default: ./params.yaml)")
    add_override(parser, "--out", "paths.out", metavar="DIR",
                 type=lambda s: str(Path(s).resolve()), help="root folder for outputs")


def csv_list(cast: Callable[[str], Any] = str) -> Callable[[str], list]:
    """argparse type for comma-separated lists (`--coefficients 0.5,1,2`)."""
    def parse(text: str) -> list:
        try:
            return [cast(t.strip()) for t in text.split(",") if t.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad list {text!r}") from None
    return parse


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    return {k[len(_OVERRIDE):]: v for k, v in vars(args).items()
            if k.startswith(_OVERRIDE) and v is not None}


def load_params_for(args: argparse.Namespace):
    from steerops.config import load_params

    return load_params(args.params, overrides_from(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="steerops",
        description="Experiment-tracked activation steering and probing for Hugging Face LMs.",
    )
    parser.add_argument("--version", action="version", version=f"steerops {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="STAGE")
    for module_name in STAGES.values():
        if _module_exists(module_name):
            importlib.import_module(module_name).register(sub)
    return parser


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
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
