"""`steerops toy`: build the embedded toy world (model, traits, calibration, probe tasks)."""

from __future__ import annotations

import argparse
from pathlib import Path

from steerops.cli import abs_path, flags, load_params_for, params_flag, stage_parser
from steerops.io import atomic_folder, check_replaceable


def register(subparsers) -> None:
    parser = stage_parser(
        subparsers,
        "toy",
        "Build the toy world from a seed: a word-level chat model trained on "
        "CPU, the toy/refusal trait dataset, calibration prompts and probe tasks.",
        common=False,
    )
    params_flag(parser)
    flags(parser, "--out=paths.toy", metavar="DIR", type=abs_path)
    flags(parser, "seed")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from steerops.toy.build import build_toy_world

    params = load_params_for(args)
    out = params.path(params.paths.toy)
    _check_replaceable(out)
    # built beside `out` and swapped in whole: an interrupted build leaves the old world
    with atomic_folder(out) as building:
        summary = build_toy_world(building, seed=params.seed, progress=True)
        _write_probe_data(building, params.seed)
    print(f"toy world written to {out}")
    for key in ("build_seconds", "heldout"):
        if key in summary:
            print(f"  {key}: {summary[key]}")


def _write_probe_data(out: Path, seed: int) -> None:
    from steerops.probes.toy_data import write_toy_probe_data

    write_toy_probe_data(out, seed=seed)


# what a toy world folder holds (`build_toy_world` and the probe data): the build replaces
# the folder whole, so anything else in it would be lost
WORLD_ENTRIES = {"model", "traits", "calibration.jsonl", "world.json", "probes"}


def _check_replaceable(out: Path) -> None:
    traits = out / "traits"
    other_traits = [
        str(p.relative_to(out))
        for p in (sorted(traits.glob("*/*")) if traits.is_dir() else [])
        if p.relative_to(traits).as_posix() != "toy/refusal"
    ]
    check_replaceable(out, WORLD_ENTRIES, "--out", "the toy world build", other_traits)
