"""Activations on disk, as `steerops extract` writes them and every consumer reads them.

    <out>/activations/<cat>/<trait>/<variant>/<position>/<component>/          trait mode
    <out>/tasks/<tasks>/<variant>/<position>/<component>/<condition>/          task-set mode

Each folder holds `activations.safetensors` (`layer_<L>`: [n_examples, hidden]) and
`metadata.json` (row order and provenance; contract in docs/internals.md), and while an
extraction runs, its resumable shards in `.partial/`. The metadata, written last, records
the tensors file's MD5 (`tensors_md5`): a finished extraction is skipped only when the file
still has that hash, and readers name a damaged file with the command that rebuilds it.

The final tensors file holds one [n_examples, hidden] matrix per layer, more than memory may
hold at once, so `write_streamed` writes it tensor by tensor: the header (names, dtypes,
shapes, byte offsets) is known up front, then each tensor's bytes are appended as it is
produced. The file is byte-compatible with the safetensors format (8-byte little-endian
header length, JSON header padded with spaces to 8 bytes, then the data) and is renamed
into place only when complete. Readers read one layer at a time for the same reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from steerops.errors import SteeropsError
from steerops.generate.store import responses_file
from steerops.io import (
    atomic_path,
    check_folder_name,
    check_trait_name,
    file_md5,
    read_json,
    text_md5,
    write_json,
)
from steerops.specs import Position, parse_position, position_slug
from steerops.traits import Trait, load_trait, trait_dir

TENSORS_FILE = "activations.safetensors"
METADATA_FILE = "metadata.json"
PARTIAL_DIR = ".partial"
_PREFIX = "layer_"

_DTYPE_CODES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.bfloat16: "BF16",
    torch.float16: "F16",
    torch.int64: "I64",
    torch.int32: "I32",
}

TensorSpec = tuple[str, tuple[int, ...], torch.dtype]  # name, shape, dtype


def activations_dir(
    out: Path, trait: str, variant: str, position: str | Position, component: str = "residual"
) -> Path:
    check_trait_name(trait)
    check_folder_name(variant, "variant")
    return Path(out) / "activations" / trait / variant / position_slug(position) / component


def task_activations_dir(
    out: Path, tasks: str, variant: str, position: str | Position, component: str, condition: str
) -> Path:
    check_folder_name(tasks, "probes.tasks_name")
    check_folder_name(variant, "variant")
    check_folder_name(condition, "condition id")
    return Path(out) / "tasks" / tasks / variant / position_slug(position) / component / condition


def is_complete(folder: Path) -> bool:
    return (folder / TENSORS_FILE).is_file() and (folder / METADATA_FILE).is_file()


def read_metadata(folder: Path, how: str | None = None) -> dict[str, Any]:
    path = Path(folder) / METADATA_FILE
    try:
        meta = read_json(path)
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        raise SteeropsError(f"{path}: damaged activations metadata; {rebuild_hint(folder, how)}")
    return meta


def layer_shapes(folder: Path) -> dict[int, list[int]]:
    """{layer: shape} of the stored tensors, without reading them."""
    with _open(folder) as f:
        return {
            int(k[len(_PREFIX) :]): list(f.get_slice(k).get_shape())
            for k in f.keys()
            if k.startswith(_PREFIX)
        }


def stored_layers(folder: Path) -> list[int]:
    return sorted(layer_shapes(folder))


def read_layer(folder: Path, layer: int) -> torch.Tensor:
    """[n_examples, hidden] float32 activations at `layer` (one layer in memory at a time)."""
    with _open(folder) as f:
        return f.get_tensor(f"{_PREFIX}{layer}").to(torch.float32)


def _open(folder: Path, how: str | None = None):
    """The tensors file opened lazily; a truncated, foreign or pickled file is one line
    naming it and the command that writes it again (never unpickled)."""
    path = Path(folder) / TENSORS_FILE
    try:
        return safe_open(str(path), framework="pt")
    except Exception as exc:  # safetensors' own error type, OSError
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SteeropsError(
            f"{path}: not a complete safetensors file ({reason}); {rebuild_hint(folder, how)}"
        ) from None


def damage(folder: Path) -> str | None:
    """Why the finished extraction in `folder` cannot be trusted, or None when it is intact:
    the metadata must be readable and the tensors file must still have the MD5 it records."""
    folder = Path(folder)
    try:
        meta = read_json(folder / METADATA_FILE)
    except (OSError, ValueError, SteeropsError):
        return f"{METADATA_FILE} is unreadable"
    if not isinstance(meta, dict):
        return f"{METADATA_FILE} is not a JSON object"
    recorded = meta.get("tensors_md5")
    if recorded is None:
        return f"{METADATA_FILE} records no tensors_md5 (written by an older steerops)"
    if file_md5(folder / TENSORS_FILE) != recorded:
        return f"{TENSORS_FILE} does not match the MD5 in {METADATA_FILE}"
    return None


def extract_command(
    trait: str,
    variant: str,
    position: Position | str,
    component: str,
    out_flag: str = "",
    layers: str | None = None,
) -> str:
    """The `steerops extract` command that writes these activations, with every flag that
    names their folder (`out_flag`: " --out DIR" of a run folder, "" for the pipeline's),
    and `layers` (a layer spec) when the layers extracted must change."""
    named = "" if component == "residual" else f" --component {component}"  # the default
    which = "" if layers is None else f" --layers '{layers}'"
    return (
        f"`steerops extract --trait {trait} --variant {variant} --position '{position}'"
        f"{named}{which}{out_flag}`"
    )


def rebuild_hint(folder: Path, how: str | None = None) -> str:
    """The command (`how`, else read from the metadata) that writes `folder` again."""
    if how:
        return f"run {how} again"
    try:
        meta = read_json(Path(folder) / METADATA_FILE)
        args = (
            f"--variant {meta['model']['variant']} --position '{meta['position']}' "
            f"--component {meta['component']}"
        )
        if meta.get("trait"):
            return f"run `steerops extract --trait {meta['trait']} {args}` again"
        return f"run `steerops extract --tasks FILE.jsonl {args}` again"
    except Exception:  # metadata gone too: the generic command
        return "run `steerops extract` for it again"


def write_streamed(
    path: str | os.PathLike,
    specs: Sequence[TensorSpec],
    produce: Callable[[str], torch.Tensor],
    metadata: dict[str, str] | None = None,
) -> str:
    """Write tensors named in `specs` (name, shape, dtype), in that order, calling
    `produce(name)` for each only when its turn comes; returns the file's MD5."""
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for name, shape, dtype in specs:
        size = _numel(shape) * torch.empty(0, dtype=dtype).element_size()
        header[name] = {
            "dtype": _DTYPE_CODES[dtype],
            "shape": list(shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    md5 = hashlib.md5()
    with atomic_path(path) as tmp, open(tmp, "wb") as f:

        def write(data) -> None:
            f.write(data)
            md5.update(data)

        write(len(text).to_bytes(8, "little"))
        write(text)
        for name, shape, dtype in specs:
            tensor = produce(name).detach().to("cpu").contiguous()
            if tuple(tensor.shape) != tuple(shape) or tensor.dtype != dtype:
                raise ValueError(
                    f"{name}: produced {tuple(tensor.shape)} {tensor.dtype}, "
                    f"declared {tuple(shape)} {dtype}"
                )
            if tensor.numel():
                write(memoryview(tensor.view(torch.uint8).numpy()))
    return md5.hexdigest()


def completed(folder: Path, expected_hash: str) -> dict | None:
    """The metadata of a finished, intact extraction with this settings hash in `folder`,
    else None (nothing there, other settings, or damaged: then a line says it is redone)."""
    if not is_complete(Path(folder)):
        return None
    problem = damage(folder)
    if problem is not None:
        print(f"{folder}: {problem}; extracting it again", file=sys.stderr)
        return None
    meta = read_json(Path(folder) / METADATA_FILE)
    if meta.get("settings_hash") != expected_hash:
        return None
    # shards left by a run killed between its last write and their removal
    shutil.rmtree(Path(folder) / PARTIAL_DIR, ignore_errors=True)
    return meta


def record_sources(folder: Path, meta: dict[str, Any], sources: dict[str, str]) -> dict:
    """`meta` of a finished extraction served again with what it was read from now: the
    same rows extracted the same way (its settings hash says so), from a responses file
    vetted again since or prompts that differ in what no row sees (whitespace a chat
    template trims), so later stages do not take it for stale (`changed_source`)."""
    if all(meta.get(key) == value for key, value in sources.items()):
        return meta
    meta = {**meta, **sources}
    write_json(Path(folder) / METADATA_FILE, meta)
    return meta


def prompts_md5(trait: Trait) -> str:
    """The trait's contrastive prompts as extraction reads them: the rest of its folder (the
    steering questions, the definition) does not change activations."""
    prompts = [[p.prompt, p.system_prompt] for p in (*trait.positive, *trait.negative)]
    return text_md5(json.dumps([len(trait.positive), prompts]))


def changed_source(
    meta: dict[str, Any], out: Path, traits_root: Path | None, trait: str, variant: str, position
) -> str | None:
    """What differs between the responses or prompts activations (`meta`) were extracted
    from and what the pipeline holds now (generated again, or the trait's prompts edited,
    extract not rerun), None when they match. A source that is gone cannot be compared, nor
    one the metadata does not record (older extractions record no prompts digest)."""
    if parse_position(position).needs_response:
        file = responses_file(out, trait, variant)
        recorded = meta.get("source_hash")
        if recorded and file.is_file() and file_md5(file) != recorded:
            return f"other responses than {file} now holds (generated again since?)"
        return None
    recorded = meta.get("prompts_md5")
    if not recorded or traits_root is None:
        return None
    if not trait_dir(traits_root, trait).is_dir():  # gone (moved): nothing to compare
        return None
    # a trait whose prompts do not load (emptied, removed, a malformed line) is the thing to
    # fix, which an extract would fail on too: its own error, not advice to extract again
    now = prompts_md5(load_trait(traits_root, trait))
    if now != recorded:
        return f"other prompts than trait {trait!r} has now in {traits_root} (edited since?)"
    return None


def other_model(meta: dict[str, Any], params, variant: str) -> str | None:
    """What differs when params now name another model for `variant` than activations
    (`meta`) were extracted from, None when the same or not recorded. Weights are told by
    their content, as extraction's settings hash tells them (a moved or copied model folder,
    however params spell it, is the same model; weights written over it are not); a hub id
    the cache does not hold whole (either side) by its id and revision; the dtype as
    params give it. The chat template, also in that hash, is not read here (it needs the
    tokenizer): `extract` compares it. Under `dvc repro` the models stage reruns
    extraction; by hand it may not."""
    from steerops.models.fingerprint import HUB, model_fingerprint

    model = meta.get("model") or {}
    spec = params.variant(variant)
    if model.get("dtype") and model["dtype"] != spec.dtype:  # in the settings hash too
        return f"model dtype {model['dtype']}, params name {spec.dtype} for {variant!r} now"
    recorded = model.get("weights")
    if recorded and recorded != HUB:
        local = params.path(spec.id)
        now = model_fingerprint(str(local) if local.exists() else spec.id, spec.revision)
        if now != HUB:
            if now == recorded:
                return None
            return (
                f"other weights (content {recorded[:12]}) than {spec.id} holds for "
                f"{variant!r} now ({now[:12]})"
            )
    if not recorded and params.path(spec.id).exists():
        # older activations (no fingerprint) of a local folder: a path is no identity; of
        # a hub id, now a local folder: another model
        if not model.get("id") or params.path(str(model["id"])).exists():
            return None
    if not model.get("id") or (model["id"], model.get("revision")) == (spec.id, spec.revision):
        return None

    def named(model_id: str, revision: str | None) -> str:
        return f"{model_id}@{revision}" if revision else f"{model_id} (no revision)"

    return (
        f"model {named(model['id'], model.get('revision'))}, params name "
        f"{named(spec.id, spec.revision)} for {variant!r} now"
    )


def require_complete(folder: Path, how: str) -> None:
    """Fail with one line naming the missing or unreadable file and the command (`how`)
    that writes it."""
    for name in (TENSORS_FILE, METADATA_FILE):
        if not (Path(folder) / name).is_file():
            raise SteeropsError(f"activations not found: {Path(folder) / name} (run {how} first)")
    read_metadata(folder, how)
    with _open(folder, how):
        pass


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for dim in shape:
        n *= int(dim)
    return n
