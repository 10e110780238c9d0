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
file; each removes only its own keys, and the file goes when it is empty.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from steerops.io import text_md5, write_text
from steerops.steering.store import locked

IN_FLIGHT_FILE = "rows_in_flight.jsonl"


def row_key(settings_hash: str, content: str, prompt: list[int]) -> str:
    """What a generated row's tokens depend on, as one key: `content` is the config's
    vectors and weights (the evaluator's content key), or "baseline"."""
    return text_md5(json.dumps([settings_hash, content, prompt]))


class RowsInFlight:
    """The rows file at `path`; writers serialize on the folder's lock file `lock` (the
    baselines log's, so the outputs gain no file of their own)."""

    def __init__(self, path: Path, lock: Path):
        self.path, self.lock = path, lock

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
        with locked(self.lock), open(self.path, "a", encoding="utf-8") as f:
            f.write(text)

    def discard(self, keys: Iterable[str]) -> None:
        """Drop `keys` (their rows are logged now); the file goes when nothing is left."""
        drop = set(keys)
        if not drop or not self.path.exists():
            return
        with locked(self.lock):
            rest = {k: v for k, v in self.load().items() if k not in drop}
            if rest:
                write_text(
                    self.path,
                    "".join(json.dumps({"key": k, "tokens": v}) + "\n" for k, v in rest.items()),
                )
            else:
                self.path.unlink(missing_ok=True)
