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
file; each removes only its own keys, and the file goes when it is empty (a stale one,
whose settings never come back, stays: the project's .dvcignore keeps it out of the
output's hash). Writers take a lock file kept out of the outputs (`.steerops/locks/`
beside the params file) and, within a process, one mutex (a file lock on NFS may not
exclude threads).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from steerops.io import text_md5, write_text
from steerops.steering.store import drop_torn_tail, locked
from steerops.workspace import lasting_folder

IN_FLIGHT_FILE = "rows_in_flight.jsonl"
LOCKS_DIR = ".steerops/locks"  # next to the params file (`workspace.lasting_folder`)
_IN_PROCESS = threading.Lock()


def row_key(settings_hash: str, content: str, prompt: list[int]) -> str:
    """What a generated row's tokens depend on, as one key: `content` is the config's
    vectors and weights (the evaluator's content key), or "baseline"."""
    return text_md5(json.dumps([settings_hash, content, prompt]))


def _lines(rows: dict[str, list[int]]) -> str:
    return "".join(json.dumps({"key": k, "tokens": v}) + "\n" for k, v in rows.items())


class RowsInFlight:
    """The rows file at `path`, for a project whose params file is in `root`."""

    def __init__(self, path: Path, root: Path):
        self.path = path
        self.lock = lasting_folder(root) / LOCKS_DIR / text_md5(str(path.resolve()))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with _IN_PROCESS, locked(self.lock):
            yield

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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked(), open(self.path, "a+b") as f:
            drop_torn_tail(f)  # a line cut by a kill must not swallow the next one
            f.write(_lines(rows).encode("utf-8"))

    def discard(self, keys: Iterable[str]) -> None:
        """Drop `keys` (their rows are logged now); the file goes when nothing is left."""
        drop = set(keys)
        if not drop or not self.path.exists():
            return
        with self._locked():
            rest = {k: v for k, v in self.load().items() if k not in drop}
            if rest:
                write_text(self.path, _lines(rest))
            else:
                self.path.unlink(missing_ok=True)
