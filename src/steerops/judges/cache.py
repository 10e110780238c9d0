"""On-disk cache of judge answers, so re-scoring a response costs no judge call.

One sqlite file (stdlib, transactional, safe with several processes writing at once in WAL
mode). A row is keyed by the sha256 of (judge id, score kind, question, response); the judge
id already names the judge model and hashes the prompt templates and rubric. The value is
the raw (mean, mass) of the answer, so the None threshold is applied on read and can change
without new calls. Nothing secret (no key, no header) is ever stored.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path

from steerops.errors import SteeropsError

CACHE_FILE = "judge_cache.sqlite"
Entry = tuple[float | None, float]  # (probability-weighted mean, integer mass)


def cache_key(judge_id: str, kind: str, question: str, response: str) -> str:
    blob = json.dumps([judge_id, kind, question, response], ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class JudgeCache:
    def __init__(self, folder: str | Path):
        self.path = Path(folder) / CACHE_FILE
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Callers may score from worker threads; one lock serialises this connection.
            self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
            self._set_up(deadline=time.monotonic() + 60)
        except (OSError, sqlite3.Error) as exc:
            raise SteeropsError(f"judge.cache_dir: cannot open {self.path}: {exc}") from None

    def _set_up(self, deadline: float) -> None:
        # Switching a new file to WAL takes an exclusive lock and sqlite answers "locked" at
        # once, without its busy timeout, when another process opens the file at that moment.
        while True:
            try:
                if self._db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")  # WAL: still safe on a crash
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, judge TEXT, "
                    "kind TEXT, mean REAL, mass REAL NOT NULL, created REAL)"
                )
                self._db.commit()
                return
            except sqlite3.OperationalError as exc:
                busy = "locked" in str(exc) or "busy" in str(exc)
                if not busy or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def get_many(self, keys: list[str]) -> dict[str, Entry]:
        found: dict[str, Entry] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):  # stay under sqlite's variable limit
            chunk = unique[start : start + 500]
            marks = ",".join("?" * len(chunk))
            with self._lock:
                rows = self._db.execute(
                    f"SELECT key, mean, mass FROM answers WHERE key IN ({marks})", chunk
                ).fetchall()
            found.update({key: (mean, mass) for key, mean, mass in rows})
        return found

    def put(self, key: str, judge_id: str, kind: str, entry: Entry) -> None:
        mean, mass = entry
        with self._lock, self._db:  # one transaction: the row lands whole or not at all
            self._db.execute(
                "INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?)",
                (key, judge_id, kind, mean, float(mass), time.time()),
            )

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
