"""Rows generated but not yet judged and logged: kept on disk, so that a rerun after an
interrupt generates only what it does not have.

Steering generates and judges configs a chunk at a time, and logs results per chunk. Each
chunk's rows are appended to `rows_in_flight.jsonl` beside the results they belong to as
soon as they are generated, and removed once the chunk is logged; an interrupt (Ctrl-C, a
scheduler's SIGTERM) in the middle of a generation adds the rows that had finished. A row
is filed under a key of what its tokens depend on, as the results logs see it (the
evaluation's settings hash, the config's vectors and weights, the prompt's token ids;
like a logged score, not the loop, device or batch it was generated in). Evaluations that
share the folder (a search's selection and held-out halves, a study's workers) share the
file; each removes only its own keys, and the file goes when it is empty. Writers lock the
folder itself (no lock file joins the outputs) and, within a process, one mutex.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from steerops.io import text_md5, write_text
from steerops.steering.store import drop_torn_tail

try:
    import fcntl
except ImportError:  # Windows: one process at a time
    fcntl = None  # type: ignore[assignment]

IN_FLIGHT_FILE = "rows_in_flight.jsonl"
_IN_PROCESS = threading.Lock()  # a folder lock on NFS may not exclude threads of one process


def row_key(settings_hash: str, content: str, prompt: list[int]) -> str:
    """What a generated row's tokens depend on, as one key: `content` is the config's
    vectors and weights (the evaluator's content key), or "baseline"."""
    return text_md5(json.dumps([settings_hash, content, prompt]))


@contextlib.contextmanager
def _folder_locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on `folder` across processes and threads (flock on the folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    with _IN_PROCESS:
        handle = os.open(folder, os.O_RDONLY)
        try:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_EX)
            yield
        finally:
            os.close(handle)  # releases the flock


class RowsInFlight:
    """The rows file at `path`."""

    def __init__(self, path: Path):
        self.path = path

    def load(self) -> dict[str, list[int]]:
        """{row key: new tokens}; a line torn by a kill is skipped."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        rows = {}
        for line in text.splitlines():
            try:
                entry = json.loads(line)
                rows[str(entry["key"])] = [int(t) for t in entry["tokens"]]
            except (ValueError, KeyError, TypeError):
                continue  # only ever a hint: a row not found is generated again
        return rows

    def keep(self, rows: dict[str, list[int]]) -> None:
        if not rows:
            return
        text = "".join(json.dumps({"key": k, "tokens": v}) + "\n" for k, v in rows.items())
        with _folder_locked(self.path.parent), open(self.path, "a+b") as f:
            drop_torn_tail(f)  # a line cut by a kill must not swallow the next one
            f.write(text.encode("utf-8"))

    def discard(self, keys: Iterable[str]) -> None:
        """Drop `keys` (their rows are logged now); the file goes when nothing is left."""
        drop = set(keys)
        if not drop or not self.path.exists():
            return
        with _folder_locked(self.path.parent):
            rest = {k: v for k, v in self.load().items() if k not in drop}
            if rest:
                write_text(
                    self.path,
                    "".join(json.dumps({"key": k, "tokens": v}) + "\n" for k, v in rest.items()),
                )
            else:
                self.path.unlink(missing_ok=True)
