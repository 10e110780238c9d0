"""A local MLflow store that moved with its project (a copy, an rsync to a cluster, a renamed
folder) keeps pointing at the old folder's `mlartifacts`: MLflow records absolute artifact
locations, so the copy's new runs would write their artifacts into the original checkout
(or into a path that no longer exists there). When an experiment's artifact folder is not
the one beside its sqlite file, the experiment and its runs are pointed at the one beside
it, where the copy holds them.
"""

from __future__ import annotations

import contextlib
import sqlite3
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

ARTIFACTS_DIR = "mlartifacts"  # beside the sqlite file: where steerops creates experiments'


def artifacts_uri(folder: Path) -> str:
    return (Path(folder) / ARTIFACTS_DIR).resolve().as_uri()


def moved_from(location: str, db: Path) -> str | None:
    """The experiment's artifact location when the store `db` visibly moved away from it:
    it is another folder's `mlartifacts` whose folder is gone (a move) or holds another
    store file of the same name (a copy). Else None: where it belongs, the same store seen
    through another path, or a location chosen by hand (`/bigdisk/mlartifacts`)."""
    if not location.startswith("file:"):
        return None
    path = Path(unquote(urlparse(location).path))
    if path.name != ARTIFACTS_DIR or location == artifacts_uri(db.parent):
        return None
    original = path.parent / db.name
    if not path.parent.exists():
        return location  # moved
    if original.is_file() and not _same_file(original, db):
        return location  # copied: the original store stays beside its own artifacts
    return None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


def relocate(db: Path, experiment_id: str, old: str, name: str) -> None:
    """Point the experiment and its runs from `old` to the `mlartifacts` beside `db`, in one
    transaction (a second process doing the same finds nothing left to change)."""
    new = artifacts_uri(db.parent)
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as con, con:
        con.execute(
            "UPDATE experiments SET artifact_location = ? "
            "WHERE experiment_id = ? AND artifact_location = ?",
            (new, int(experiment_id), old),
        )
        con.execute(
            "UPDATE runs SET artifact_uri = ? || substr(artifact_uri, ?) "
            "WHERE experiment_id = ? AND substr(artifact_uri, 1, ?) = ?",
            (new, len(old) + 1, int(experiment_id), len(old) + 1, old + "/"),
        )
    print(
        f"steerops: MLflow experiment {name!r} moved with its store: its artifacts are now "
        f"read and written at {new} (they were at {old})",
        file=sys.stderr,
    )
