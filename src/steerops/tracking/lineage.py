"""How an MLflow run joins the rest of the record: the DVC hashes of its inputs (what
dvc.lock says, computed the way DVC computes them), the git commit of the project, and
its inputs as MLflow datasets (name, content digest, project-relative source).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Mapping
from functools import cache
from pathlib import Path

import yaml

from steerops.io import file_md5, text_md5
from steerops.tracking.names import relative


def files_tag(folder: str | Path, digest: str) -> str:
    """A run's tag value for the files in `folder` of content hash `digest` (`io.tree_md5`),
    so a rerun that writes the same bytes can ask whether a FINISHED run holds them (two
    folders of equal bytes are other records)."""
    return text_md5(f"{Path(folder).resolve()}\n{digest}")


def dvc_md5(path: str | Path) -> str:
    """The MD5 DVC 3 records for `path`: a file's MD5, or for a folder the MD5 of its sorted
    [{"md5", "relpath"}] list as JSON, with ".dir" appended."""
    path = Path(path)
    if path.is_file():
        return file_md5(path)
    entries = sorted(
        (
            {"md5": file_md5(p), "relpath": p.relative_to(path).as_posix()}
            for p in path.rglob("*")
            if p.is_file()
        ),
        key=lambda e: e["relpath"],
    )
    digest = hashlib.md5(json.dumps(entries, sort_keys=True).encode("utf-8")).hexdigest()
    return digest + ".dir"


# Hashing local weights costs a full read; above this size only hub id/revision identify them.
MODEL_HASH_LIMIT = 2 << 30


def model_input(source: str | Path) -> dict[str, Path]:
    """{"model": folder} for a local model folder small enough to hash, else {}."""
    path = Path(source)
    if not path.is_dir():
        return {}
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return {"model": path} if size <= MODEL_HASH_LIMIT else {}


def input_hash_tags(project, inputs: Mapping[str, str | Path]) -> dict[str, str]:
    """`dvc.hash.<name>` for each existing input: dvc.lock's MD5 where it records the path
    (relative or absolute) and nothing in it changed since dvc.lock was written, else the
    same MD5 computed here (an input edited and read by a hand run is not tagged with the
    content it had). `project`: the params (or the folder of dvc.lock)."""
    root = Path(project if isinstance(project, str | Path) else project.root)
    locked = dvc_lock_hashes(root)
    tags = {}
    for name, path in inputs.items():
        path = Path(path)
        if not path.exists():
            continue
        recorded = locked.get(relative(path, root)) or locked.get(str(path.resolve()))
        if recorded and _changed_since(path, (root / "dvc.lock").stat().st_mtime):
            recorded = None
        tags[f"dvc.hash.{name}"] = recorded or dvc_md5(path)
    return tags


def _changed_since(path: Path, when: float) -> bool:
    """Whether `path` (a file, or a folder and anything in it) was modified after `when`."""
    entries = [path, *path.rglob("*")] if path.is_dir() else [path]
    return any(p.stat().st_mtime > when for p in entries)


def dvc_lock_hashes(root: Path) -> dict[str, str]:
    lock = Path(root) / "dvc.lock"
    if not lock.exists():
        return {}
    try:
        data = yaml.safe_load(lock.read_text()) or {}
    except yaml.YAMLError:
        return {}
    hashes = {}
    for stage in (data.get("stages") or {}).values():
        for entry in (stage.get("deps") or []) + (stage.get("outs") or []):
            if "md5" in entry:
                hashes[entry["path"].rstrip("/")] = entry["md5"]
    return hashes


@cache
def git_commit(root: Path) -> tuple[str | None, bool]:
    """(HEAD commit, whether tracked files differ from it) of the repository holding root."""
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if head.returncode != 0:
            return None, False
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None, False
    return head.stdout.strip(), bool(status.stdout.strip())


def dataset(name: str, path: str | Path, context: str, root: Path) -> dict[str, str] | None:
    """A dataset input of a run: name, DVC content digest and project-relative source."""
    path = Path(path)
    if not path.exists():
        return None
    source = json.dumps({"uri": relative(path, root)})
    return {"name": name, "digest": dvc_md5(path)[:32], "source": source, "context": context}
