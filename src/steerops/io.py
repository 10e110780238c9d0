"""Atomic, pickle-free artifact I/O shared by every stage.

Every write goes to a temporary file in the destination directory and is renamed into
place, so an interrupted stage never leaves a truncated artifact over a good one. Files get
the permissions any new file gets under the process umask (a team can read them on a shared
machine), not the owner-only mode of a bare temporary file. JSON is standard JSON: a
non-finite number (NaN, infinity) is written as null.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import shutil
import tempfile
import threading
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steerops.errors import SteeropsError
from steerops.liveness import node_tag, tag_owner

if TYPE_CHECKING:  # torch loads only with the first tensor written (`steerops --help` stays light)
    import torch

_HOST = node_tag()  # a pid in a temporary's name is this node's


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it over `path` only on success.

    The temporary name carries this host and pid, so the leftover of a writer that was
    killed (SIGKILL skips every cleanup) is removed by the next write of the same file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(path)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.{_HOST}.{os.getpid()}.", suffix=".tmp", dir=path.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes the file 0600 (and some writers recreate it): set the mode last
        os.chmod(tmp_path, 0o666 & ~current_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def save_png(fig, path: str | os.PathLike, **savefig: Any) -> None:
    """Write a matplotlib figure as a PNG, atomically, and close it (a failed write too, so
    no figure is left open)."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100, **savefig)
    finally:
        plt.close(fig)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty folder next to `path`; on success it takes `path`'s place (an old
    folder is moved aside first and dropped only once the new one is in), on failure or
    interrupt it is removed and `path` is left as it was. Its name carries this host and
    pid, as `atomic_path`'s does, so one a killed writer left is removed by the next."""
    path = Path(path)
    if path.parent.is_dir():
        _settle_old(path)
    if path.exists() and not path.is_dir():  # never a file moved aside for a folder
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(path, "building")
    tmp = Path(
        tempfile.mkdtemp(
            prefix=f".{path.name}.{_HOST}.{os.getpid()}.", suffix=".building", dir=path.parent
        )
    )
    tmp.chmod(0o777 & ~current_umask())  # mkdtemp makes it private
    try:
        yield tmp
        if path.exists():
            old = Path(
                tempfile.mkdtemp(
                    prefix=f".{path.name}.{_HOST}.{os.getpid()}.", suffix=".old", dir=path.parent
                )
            )
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _settle_old(path: Path) -> None:
    """A folder a killed `atomic_folder` had moved aside: dropped when its replacement is in
    place, put back when the writer died between the two renames."""
    for old in _orphans(path, "old"):
        kept = old / path.name
        if not path.exists() and kept.is_dir():
            os.replace(kept, path)
        shutil.rmtree(old, ignore_errors=True)


def _dead_temporaries(folder: Path, suffix: str) -> list[tuple[str, Path]]:
    """(the name it was to take, its path) of each temporary file or folder in `folder`
    whose writer on this host is dead."""
    found = []
    for tmp in folder.glob(f".*.{suffix}"):
        parts = tmp.name[1:].rsplit(".", 4)  # name, node, pid, random, suffix
        if len(parts) != 5 or not parts[2].isdigit():
            continue
        owner = tag_owner(parts[1])  # an earlier boot's writer is dead whatever its pid
        if owner == "gone" or (owner == "here" and not _alive(int(parts[2]))):
            found.append((parts[0], tmp))
    return found


def _orphans(path: Path, suffix: str) -> list[Path]:
    """Temporary files (or folders) for `path` whose writer on this host is dead."""
    return [tmp for name, tmp in _dead_temporaries(path.parent, suffix) if name == path.name]


def _remove_orphans(path: Path, suffix: str = "tmp") -> None:
    """Delete temporary files (or folders) for `path` left by dead writers on this host."""
    _remove(_orphans(path, suffix))


def remove_orphans_in(folder: Path, suffix: str = "building") -> None:
    """Delete the temporary folders (or files) dead writers on this host left in `folder`,
    whatever they were to be named: a folder of runs, each written once under a new name,
    where the next write never has the same name to find them by."""
    if folder.is_dir():
        _remove([tmp for _, tmp in _dead_temporaries(folder, suffix)])


def _remove(paths: list[Path]) -> None:
    for tmp in paths:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask: from /proc on Linux; elsewhere reading it means setting it, which
    is done briefly and under a lock."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json_text(obj, indent=2) + "\n")


def json_text(obj: Any, indent: int | None = None) -> str:
    """Standard JSON (keys sorted): non-finite numbers become null, never NaN/Infinity."""
    return json.dumps(
        _finite(obj), indent=indent, sort_keys=True, default=_json_default, allow_nan=False
    )


class NotJSON(SteeropsError, ValueError):
    """A JSON file that does not parse (a ValueError, as json's own error is)."""


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file; a damaged one is one clear error naming it and the line."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise NotJSON(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None


def read_text(path: str | os.PathLike) -> str:
    """A user-supplied text file as UTF-8 (a leading byte-order mark, as spreadsheet exports
    write, dropped); anything else is one clear error naming it."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SteeropsError(f"{path}:{line}: not UTF-8 text (byte {exc.start})") from None


def write_jsonl(path: str | os.PathLike, rows: list[dict]) -> None:
    lines = [json_text(r) for r in rows]
    write_text(path, "\n".join(lines) + ("\n" if lines else ""))


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) for each non-blank line of a user-supplied JSONL file;
    a line that is not JSON is one clear error naming the file and line."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                # a byte-order mark (a spreadsheet's export) starts the first line only
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise SteeropsError(f"{path}:{lineno}: not UTF-8 text (byte {exc.start})") from None
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError:
                raise SteeropsError(f"{path}:{lineno}: malformed JSON line") from None


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Every row of a JSONL file; a damaged line is one clear error naming the file and line."""
    return [row for _, row in iter_jsonl(path)]


def save_tensors(
    path: str | os.PathLike,
    tensors: dict[str, torch.Tensor],
    metadata: dict[str, str] | None = None,
) -> None:
    """Save contiguous CPU tensors as safetensors, atomically."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def load_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def file_md5(path: str | os.PathLike) -> str:
    """MD5 of a file's bytes: the hash DVC records for a file."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_md5(path: str | os.PathLike) -> str:
    """Content hash of a file or a directory (relative paths + file hashes, sorted)."""
    path = Path(path)
    if path.is_file():
        return file_md5(path)
    entries = sorted(
        (p.relative_to(path).as_posix(), file_md5(p)) for p in path.rglob("*") if p.is_file()
    )
    return hashlib.md5(json.dumps(entries).encode()).hexdigest() + ".dir"


def text_md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def _finite(obj: Any) -> Any:
    """`obj` with every non-finite float (Python or numpy) replaced by None."""
    if isinstance(obj, float) or (hasattr(obj, "dtype") and getattr(obj, "ndim", 1) == 0):
        value = obj.item() if hasattr(obj, "item") else obj
        return None if isinstance(value, float) and not math.isfinite(value) else value
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if hasattr(obj, "tolist") and hasattr(obj, "dtype"):  # arrays and tensors
        return _finite(obj.tolist())
    return obj


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# What file browsers leave in a folder they showed: no loss when a build replaces it.
DESKTOP_FILES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})


def check_replaceable(
    folder: Path, makes: Collection[str], what: str, writer: str, foreign: Sequence[str] = ()
) -> None:
    """One error line, before any work, when a write that replaces `folder` whole would lose
    something: `folder` is a file, or holds entries other than `makes` (what `writer`
    writes there) or the `foreign` ones the caller found deeper."""
    if not folder.exists():
        return
    if not folder.is_dir():
        raise SteeropsError(f"{what}: {folder} is a file, not a folder")
    found = sorted(
        p.name for p in folder.iterdir() if p.name not in makes and p.name not in DESKTOP_FILES
    ) + list(foreign)
    if found:
        shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        raise SteeropsError(
            f"{what}: {folder} holds {shown}, which {writer} does not write; it replaces the "
            f"folder whole: give a new or empty folder, or one {writer} wrote"
        )


def check_file_target(path: Path, what: str) -> None:
    """One error line, before any work, when no file can be written at `path`: a folder is
    there, or the nearest part of its path that exists is a file."""
    if path.is_dir():
        raise SteeropsError(f"{what}: {path} is a folder, not a file")
    check_folder_target(path.parent, what)


def check_folder_target(folder: Path, what: str) -> None:
    """One error line when `folder`, or the nearest part of its path that exists, is a file
    or not writable (nothing can be created there)."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise SteeropsError(f"{what}: {existing} is a file, not a folder")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise SteeropsError(f"{what}: {existing} is not writable, so {folder} cannot be made")


# Names from params and the command line that become folders (traits, variants, task sets).


def check_folder_name(value: str, what: str) -> str:
    """`value` if it names one folder inside its parent (outputs never escape the out root)."""
    if (
        not isinstance(value, str)
        or value in ("", ".", "..")
        or any(c in value for c in "/\\\0")
        or value.startswith("~")
    ):
        raise SteeropsError(
            f"{what}: {value!r} is not a plain folder name (no '/', '\\', '~' or '..')"
        )
    return value


def check_trait_name(name: str) -> list[str]:
    """The two folder names of a trait `CATEGORY/NAME`; anything that could leave the
    dataset or outputs root (`..`, an absolute path) is one clear error."""
    if isinstance(name, str) and name.startswith(("/", "~")):
        raise SteeropsError(f"trait {name!r}: an absolute path, expected CATEGORY/NAME")
    parts = name.removesuffix("/").split("/") if isinstance(name, str) else []
    if len(parts) != 2 or not all(parts):
        raise SteeropsError(f"trait {name!r}: expected CATEGORY/NAME (e.g. toy/refusal)")
    for part in parts:
        check_folder_name(part, f"trait {name!r}")
    return parts
