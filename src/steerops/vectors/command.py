"""`steerops vectors`: one steering vector per layer, per trait, position and method.

    steerops vectors --trait toy/refusal --position 'prompt[-1]' --methods mean_diff,probe

Reads the activations written by `steerops extract` and writes
`<out>/vectors/<trait>/<variant>/<position>/<component>/<method>/`. Any method name of
`steerops.vectors.names` works, cleaned ones included (they read calibration.json).
"""

from __future__ import annotations

import argparse

from steerops.cli import add_override, csv_list, load_params_for, stage_parser
from steerops.vectors.stage import add_selection_flags, run_stage


def register(subparsers) -> None:
    parser = stage_parser(
        subparsers, "vectors",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_selection_flags(parser)
    add_override(parser, "--methods", "vectors.methods", type=csv_list(), metavar="M1,M2",
                 help="methods, e.g. mean_diff,probe,mean_diff_top1 (default: vectors.methods)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    params = load_params_for(args)
    for directory in run_stage(params, "vectors", params.vectors.methods):
        print(directory)
