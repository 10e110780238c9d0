"""Where a hub id loads from: the local Hugging Face cache when its snapshot is complete
there, the hub otherwise; an id the machine cannot load is one line before any run opens.

A complete snapshot (config, tokenizer, every safetensors shard) is read from its folder
alone: given the id, transformers and huggingface_hub query the hub for the revision's
latest files first and, on a machine without network, wait minutes on retries (forever on
an endpoint that accepts and never answers) before they fall back to the cache. The
revision read is the one the cache's refs name (`refs/main` unless params give `revision`).
A snapshot with files missing loads by its id as before (the hub sends the rest), and so
needs the hub, as does an id with nothing in the cache: when the hub cannot be used
(HF_HUB_OFFLINE, or its endpoint does not answer), the variant's id is refused, naming what
is missing or the local folder it was not found at (a mistyped local path such as
`data/smolm2` has the shape of a hub id).
"""

from __future__ import annotations

import functools
import json
import re
import urllib.error
import urllib.request
from pathlib import Path

from steerops.errors import SteeropsError

PROBE_TIMEOUT_S = 5.0
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def hub_snapshot(repo_id: str, revision: str | None, local: Path, variant: str) -> Path | None:
    """The complete snapshot of `repo_id` (not a local folder) in the cache; None: it loads
    by its id, and is refused when the hub cannot be used."""
    config = _cached_config(repo_id, revision)
    if config is not None:
        complete = _complete(config.parent)
        if complete is not None:
            return complete
        # files missing: it loads by its id as before, the hub sending the rest
        where = f"only partly in the Hugging Face cache ({_missing(config.parent)} missing)"
    else:
        where = f"not a local folder ({local}) and not in the Hugging Face cache"
        if revision is not None and _cached_somewhere(repo_id):
            # the cache holds the model, at another revision: say which one is missing
            where = (
                f"not in the Hugging Face cache at revision {revision!r} (models.{variant}"
                ".revision; the cache holds another revision of it)"
            )
        if "/" in repo_id and local.parent.is_dir():
            # `data/smolm2` next to a `data/` folder: a mistyped path, not an organisation
            raise SteeropsError(f"models.{variant}.id: model not found: {local}")
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise SteeropsError(
            f"models.{variant}.id: {repo_id!r} is {where}, and HF_HUB_OFFLINE is set"
        )
    reason = _unreachable(constants.ENDPOINT)
    if reason:
        raise SteeropsError(
            f"models.{variant}.id: {repo_id!r} is {where}, and the hub "
            f"{constants.ENDPOINT} is not reachable ({reason})"
        )
    return None


def _cached_somewhere(repo_id: str) -> bool:
    """Whether the cache holds any snapshot of `repo_id` (at whatever revision)."""
    folder = _cache_folder(repo_id) / "snapshots"
    return folder.is_dir() and any(p.is_dir() for p in folder.iterdir())


def _cache_folder(repo_id: str) -> Path:
    """The Hugging Face cache's folder of the model `repo_id` (refs/, snapshots/, blobs/)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"


def cached_snapshot(repo_id: str, revision: str | None) -> Path | None:
    """The cache's snapshot folder of `repo_id` at `revision` (None: `refs/main`) when it
    holds a config, a tokenizer and every safetensors shard; None otherwise (a download cut
    short, or a repo whose config alone was read)."""
    config = _cached_config(repo_id, revision)
    return None if config is None else _complete(config.parent)


def _cached_config(repo_id: str, revision: str | None) -> Path | None:
    """config.json in the snapshot the cache's refs name for `revision` (or that commit)."""
    return cached_file(repo_id, "config.json", revision)


def cached_file(repo_id: str, name: str, revision: str | None) -> Path | None:
    """The file `name` of `repo_id` in the Hugging Face cache, at the snapshot its refs name
    for `revision` (or that commit); None when the cache does not hold it. Never downloads."""
    from huggingface_hub import try_to_load_from_cache

    path = try_to_load_from_cache(repo_id, name, revision=_cache_revision(repo_id, revision))
    return Path(path) if isinstance(path, str) else None


def _cache_revision(repo_id: str, revision: str | None) -> str | None:
    """`revision` as the cache names it: a short commit hash (`3b1c0e2`, as `git log
    --oneline` and the hub's pages print it) is the one snapshot whose commit starts with
    it, which the cache finds by full hashes only; anything else as given."""
    if revision is None or not re.fullmatch(r"[0-9a-f]{7,39}", revision):
        return revision
    repo = _cache_folder(repo_id)
    if (repo / "refs" / revision).is_file() or not (repo / "snapshots").is_dir():
        return revision  # a branch or tag spelled in hex digits, or nothing cached
    commits = [p.name for p in (repo / "snapshots").iterdir() if p.name.startswith(revision)]
    return commits[0] if len(commits) == 1 else revision


def _complete(snapshot: Path) -> Path | None:
    if not any((snapshot / name).is_file() for name in _TOKENIZER_FILES):
        return None
    return snapshot if _weights_cached(snapshot) else None


def _missing(snapshot: Path) -> str:
    """What a snapshot `_complete` refuses lacks, for a message."""
    if not any((snapshot / name).is_file() for name in _TOKENIZER_FILES):
        return "the tokenizer"
    return "weights"


def _weights_cached(snapshot: Path) -> bool:
    """Every safetensors file a load reads (the shards an index names, or the single file)
    is there; is_file follows the cache's links, so one to a missing blob is missing."""
    index = snapshot / "model.safetensors.index.json"
    if not index.is_file():
        return (snapshot / "model.safetensors").is_file()
    try:
        shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        return False  # a damaged index: the hub's copy decides, as before
    return bool(shards) and all((snapshot / name).is_file() for name in shards)


@functools.lru_cache(maxsize=8)  # once per process: a stage resolves its variants often
def _unreachable(endpoint: str) -> str | None:
    """Why `endpoint` does not answer (None: it answers, whatever the status)."""
    try:
        with urllib.request.urlopen(endpoint, timeout=PROBE_TIMEOUT_S):
            return None
    except urllib.error.HTTPError:
        return None  # it answered
    except (OSError, ValueError) as exc:
        return str(getattr(exc, "reason", exc))
