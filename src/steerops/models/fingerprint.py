"""Content fingerprints of local model folders, so settings hashes survive a copied project.

A fingerprint depends on the files' relative names and bytes only: not on the folder's
absolute path, nor on modification times (a copy changes both), nor on hidden or lock
files (download bookkeeping that changes when the model does not). Reading every byte of a
large model on each load would cost a minute, so the hash of a large file is remembered in
a small cache keyed by (real path, size, mtime, inode): a file is read once per machine and
copy. Files of a Hugging Face hub cache are links to blobs named by their SHA-256, which is
used as is: a hub id whose snapshot the cache holds whole is fingerprinted by that snapshot's
files, so a `refs/main` moved to new weights (a later download) changes the fingerprint and
with it every settings hash and judge cache key that names the model.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from steerops.io import file_md5, text_md5, write_json

HUB = "hub"  # a hub id the cache does not hold whole: identified by id and revision instead
_BLOB = re.compile(r"^[0-9a-f]{40}$|^[0-9a-f]{64}$")
_CACHE_ABOVE = 64 << 20  # files larger than this go through the cache


def cache_file() -> Path:
    """`$STEEROPS_CACHE_DIR/fingerprints.json` (default: the user's cache folder)."""
    root = os.environ.get("STEEROPS_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "steerops"
    )
    return Path(root) / "fingerprints.json"


def model_fingerprint(source: str, revision: str | None = None) -> str:
    """The content fingerprint of a local model folder, or of the snapshot of hub id
    `source` at `revision` (None: the one `refs/main` names) when the Hugging Face cache
    holds it whole; `HUB` for a hub id it does not."""
    path = Path(source)
    if not path.is_dir():
        from steerops.models.hub import cached_snapshot

        try:
            snapshot = cached_snapshot(source, revision)
        except ValueError:  # not a hub id's shape either: nothing to read
            snapshot = None
        if snapshot is None:
            return HUB
        path = snapshot
    cache = _load_cache()
    before = dict(cache)
    files = sorted(p for p in path.rglob("*") if p.is_file() and not _bookkeeping(p, path))
    listing = [(p.relative_to(path).as_posix(), _file_hash(p, cache)) for p in files]
    if cache != before:
        _save_cache(cache)
    return text_md5(json.dumps(listing))


def _bookkeeping(file: Path, folder: Path) -> bool:
    """Files no load reads that tools rewrite without a change in the model: hidden ones
    (`.cache/huggingface/download/*.metadata`, which `hf download --local-dir` stamps with
    the time on every run, `.git`) and lock files."""
    parts = file.relative_to(folder).parts
    return any(part.startswith(".") for part in parts) or file.suffix == ".lock"


def _file_hash(path: Path, cache: dict[str, str]) -> str:
    if path.is_symlink():
        target = Path(os.path.realpath(path))
        if target.parent.name == "blobs" and _BLOB.match(target.name):
            return target.name
    stat = path.stat()
    if stat.st_size <= _CACHE_ABOVE:
        return file_md5(path)
    key = f"{os.path.realpath(path)}|{stat.st_size}|{stat.st_mtime_ns}|{stat.st_ino}"
    if key not in cache:
        cache[key] = file_md5(path)
    return cache[key]


def _load_cache() -> dict[str, str]:
    try:
        data = json.loads(cache_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save_cache(cache: dict[str, str]) -> None:
    try:
        write_json(cache_file(), cache)
    except OSError:  # a read-only home: the hash is just computed again next time
        pass


def model_label(source: str, revision: str | None) -> str:
    """How a judge names its model in its id and cache keys: the hub id (with its cached
    snapshot's content when the cache holds it whole, whichever revision named it; with
    the revision when it does not), or `local-<content>` for a folder; never a path, so a
    copied project keeps its scores and caches."""
    fingerprint = model_fingerprint(source, revision)
    if fingerprint == HUB:
        name = source
    elif Path(source).is_dir():
        name = f"local-{fingerprint[:12]}"
    else:
        name = f"{source}-{fingerprint[:12]}"
    # a hub id the cache lacks is known by name only: its revision says which weights
    return name + (f"@{revision}" if revision and fingerprint == HUB else "")
