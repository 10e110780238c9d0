"""`steerops models`: each model variant's identity as a small file DVC depends on.

A hub id (`google/gemma-3-4b-it`) is not a path, so stages cannot list the model among
their DVC dependencies. They depend on `outputs/models/<variant>.json` instead: the id and
revision as params give them, the content fingerprint of what the variant loads (a
local folder's files, or the snapshot the Hugging Face cache holds; `hub` for an id the
cache does not hold whole), and the md5 of a chat template file params name. DVC runs
this stage on every `dvc repro` (`always_changed`); a file that comes out the same leaves
the stages after it as they were, and new weights under an unchanged name run them again.
"""

from __future__ import annotations

import argparse

from steerops.cli import load_params_for, params_flag, stage_parser

MODELS_DIR = "models"


def register(subparsers) -> None:
    parser = stage_parser(
        subparsers,
        "models",
        "Write outputs/models/<variant>.json for every variant in params: id, revision and "
        "the content fingerprint of the model it loads (nothing is loaded or downloaded).",
        common=False,
    )
    params_flag(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from steerops.io import read_json, write_json
    from steerops.models.identity import variant_identity
    from steerops.models.loading import check_model_folder

    params = load_params_for(args)
    records = {}
    for variant, spec in params.models.items():  # every source checked before a write
        # no identity for what never loads (generate refuses it the same way)
        check_model_folder(params.path(spec.id), variant)
        records[variant] = variant_identity(params, variant)
    folder = params.out / MODELS_DIR
    # the folder is kept between runs (a failing run leaves it): a variant params no
    # longer name leaves no file behind
    for stale in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        if stale.stem not in records:
            stale.unlink()
    for variant, record in records.items():
        path = folder / f"{variant}.json"
        if not (path.is_file() and read_json(path) == record):  # unchanged: not rewritten
            write_json(path, record)
        print(f"models.{variant}: {record['id']} ({record['fingerprint'][:12]}) -> {path}")
