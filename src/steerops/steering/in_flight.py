"""Rows generated before an interrupt whose chunk was never judged: kept, so that the rerun
generates only the rest of the chunk.

Steering generates and judges configs a chunk at a time; results are logged per chunk. An
interrupt (Ctrl-C, or a scheduler's SIGTERM) in the middle of a chunk's generation used to
lose every row the chunk had finished. Those rows are appended to `rows_in_flight.jsonl`
beside the results they belong to, each under a key of everything its tokens depend on
(the evaluation's settings hash, the config's vectors and weights, the prompt's token
ids), and taken from there by the next run. The file is removed once an evaluation has
logged everything it generated.
"""

from __future__ import annotations

import json
from pathlib import Path

from steerops.io import text_md5

IN_FLIGHT_FILE = "rows_in_flight.jsonl"


def row_key(settings_hash: str, content: str, prompt: list[int]) -> str:
    """What a generated row's tokens depend on, as one key: `content` is the config's
    vectors and weights (the evaluator's content key), or "baseline"."""
    return text_md5(json.dumps([settings_hash, content, prompt]))


class RowsInFlight:
    def __init__(self, path: Path):
        self.path = path

    def load(self) -> dict[str, list[int]]:
        """{row key: new tokens}; a line torn by a kill is skipped."""
        if not self.path.exists():
            return {}
        rows = {}
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
                rows[str(entry["key"])] = [int(t) for t in entry["tokens"]]
            except (ValueError, KeyError, TypeError):
                continue  # only ever a hint: a row not found is generated again
        return rows

    def add(self, rows: dict[str, list[int]]) -> None:
        """Append `rows` in one write (a second writer's lines stay whole beside them)."""
        if not rows:
            return
        text = "".join(json.dumps({"key": k, "tokens": v}) + "\n" for k, v in rows.items())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(text)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
