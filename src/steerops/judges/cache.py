"""On-disk cache of judge answers, so re-scoring a response costs no judge call.

One sqlite file (stdlib, transactional, safe with several processes writing at once in WAL
mode). A row is keyed by the sha256 of (judge id, score kind, question, response); the judge
id already names the judge model and hashes the prompt templates and rubric. The value is
the raw (mean, mass) of the answer, so the None threshold is applied on read and can change
without new calls. Nothing secret (no key, no header) is ever stored. A row that cannot be
read (a damaged file, a value that is not a number) is a miss, so a damaged cache costs
calls, never a crashed run.

A run of its own (steer or search by hand) writes a cache in its folder and also reads the
pipeline's (`also_reads`): it asks no answer the pipeline paid for, and writes nothing
there. Each lookup opens that file for itself and closes it, so a pipeline writing it
meanwhile never leaves this run a stale view: read-only while its write-ahead log holds
answers not yet in the file (a pipeline running, or killed before saving them), else
immutable, which takes no lock and makes no -wal or -shm file beside it (another user's
pipeline could not write past one of this user's) and reads from a read-only disk. A lookup
that fails there (the file caught mid-save) is a miss, said once, and asked again.
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from steerops.errors import SteeropsError

CACHE_FILE = "judge_cache.sqlite"
Entry = tuple[float | None, float]  # (probability-weighted mean, integer mass)


def cache_key(judge_id: str, kind: str, question: str, response: str) -> str:
    blob = json.dumps([judge_id, kind, question, response], ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _valid(mean, mass) -> bool:
    def number(x) -> bool:
        return isinstance(x, int | float) and math.isfinite(x)

    return number(mass) and mass >= 0 and (mean is None or number(mean))


def _chunks(keys: list[str], size: int = 500) -> Iterator[list[str]]:
    """`keys` without repeats, in lists short enough for sqlite's variable limit."""
    unique = list(dict.fromkeys(keys))
    for start in range(0, len(unique), size):
        yield unique[start : start + size]


def cache_folder(params) -> Path:
    """judge.cache_dir; in a temporary DVC experiment workspace, the repository's (the
    cache is no DVC output, and would be removed with the workspace)."""
    from steerops.workspace import lasting_folder

    return lasting_folder(params.path(params.judge.cache_dir))


def open_cache(params) -> JudgeCache:
    """The run's judge cache; a run of its own also reads the pipeline's."""
    below = params.pipeline_judge_cache
    return JudgeCache(cache_folder(params), also_reads=below)


class JudgeCache:
    def __init__(self, folder: str | Path, also_reads: str | Path | None = None):
        self.path = Path(folder) / CACHE_FILE
        self._lock = threading.Lock()
        self._warned: set[Path] = set()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Callers may score from worker threads; one lock serialises this connection.
            self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise SteeropsError(f"judge.cache_dir: cannot open {self.path}: {exc}") from None
        try:
            self._set_up(deadline=time.monotonic() + 60)
        except (OSError, sqlite3.Error) as exc:
            self._db.close()
            raise SteeropsError(f"judge.cache_dir: cannot open {self.path}: {exc}") from None
        below = None if also_reads is None else Path(also_reads) / CACHE_FILE
        if below is not None and below.resolve() == self.path.resolve():
            below = None
        self.below: Path | None = below  # the cache read beside this one, never written

    def _open_below(self, table: str) -> sqlite3.Connection | None:
        """A connection of its own to the cache below (see the module docstring), when it
        exists and holds `table` (an older steerops's cache lacks the tables added since);
        None otherwise. One that cannot be read is said once."""
        path = self.below
        if path is None or not path.is_file():
            return None
        wal = path.with_name(path.name + "-wal")
        unsaved = wal.is_file() and wal.stat().st_size > 0
        uri = f"{path.resolve().as_uri()}?{'mode=ro' if unsaved else 'immutable=1'}"
        db = None
        try:
            db = sqlite3.connect(uri, uri=True, timeout=60)
            found = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
            ).fetchone()
        except sqlite3.Error as exc:
            if db is not None:  # opened, but not a database
                db.close()
            self._warn(exc, path)
            return None
        if found is None:
            db.close()
            return None
        return db

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
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS unreadable (judge TEXT PRIMARY KEY, reason TEXT)"
                )
                # which model the endpoint says answered (an alias moves to new snapshots);
                # a table of its own, so a cache an older steerops also writes keeps its form,
                # with the answer's `created`: a row counts only beside the answer it names
                # (an older steerops replaces answers without touching this table)
                self._db.execute(
                    "CREATE TABLE IF NOT EXISTS answered_by "
                    "(key TEXT PRIMARY KEY, model TEXT, created REAL)"
                )
                self._db.execute("CREATE INDEX IF NOT EXISTS answers_judge ON answers (judge)")
                self._db.commit()
                return
            except sqlite3.OperationalError as exc:
                busy = "locked" in str(exc) or "busy" in str(exc)
                if not busy or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def get_many(self, keys: list[str]) -> dict[str, Entry]:
        """The cached (mean, mass) of each key that has a readable one; a row that cannot
        be read (a damaged file, a value that is not a number) is a miss, asked again."""
        found: dict[str, Entry] = {}
        for db, path in self._layers():
            for chunk in _chunks([k for k in keys if k not in found]):
                try:
                    rows = self._select(db, chunk)
                except sqlite3.DatabaseError:  # one damaged page: read what can still be read
                    rows = [row for key in chunk for row in self._select_or_warn(db, path, key)]
                found.update({k: (mean, mass) for k, mean, mass in rows if _valid(mean, mass)})
        return found

    def _layers(self, table: str = "answers") -> Iterator[tuple[sqlite3.Connection, Path]]:
        """This cache, then the one it also reads (where it has `table`), opened for this
        lookup alone."""
        yield self._db, self.path
        below = self._open_below(table)
        if below is None:
            return
        try:
            assert self.below is not None
            yield below, self.below
        finally:
            below.close()

    def _select(self, db: sqlite3.Connection, keys: list[str]) -> list[tuple]:
        marks = ",".join("?" * len(keys))
        with self._lock:
            return db.execute(
                f"SELECT key, mean, mass FROM answers WHERE key IN ({marks})", keys
            ).fetchall()

    def _select_or_warn(self, db: sqlite3.Connection, path: Path, key: str) -> list[tuple]:
        try:
            return self._select(db, [key])
        except sqlite3.DatabaseError as exc:
            self._warn(exc, path)
            return []

    def put(
        self, key: str, judge_id: str, kind: str, entry: Entry, served: str | None = None
    ) -> None:
        """Store an answer (and `served`, the model the endpoint says gave it); one the file
        cannot take (damaged, disk full) is said once and not cached: the run keeps it and
        goes on."""
        mean, mass = entry
        created = time.time()
        try:
            with self._lock, self._db:  # one transaction: the row lands whole or not at all
                self._db.execute(
                    "INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?)",
                    (key, judge_id, kind, mean, float(mass), created),
                )
                if served is None:
                    self._db.execute("DELETE FROM answered_by WHERE key = ?", (key,))
                else:
                    self._db.execute(
                        "INSERT OR REPLACE INTO answered_by VALUES (?, ?, ?)",
                        (key, served, created),
                    )
        except sqlite3.DatabaseError as exc:
            self._warn(exc)

    def served_by(self, keys: list[str]) -> dict[str, str]:
        """{key: the model the endpoint named} over the cached answers of `keys` that
        recorded one (answers cached before steerops kept it record none)."""
        found: dict[str, str] = {}
        for db, path in self._layers("answered_by"):
            # a key this cache holds is answered here, named or not; the layer below
            # speaks only for the answers it serves
            rest = [k for k in keys if k not in found]
            if db is not self._db:
                own = self._own_keys(rest)
                rest = [k for k in rest if k not in own]
            try:
                found.update(self._named(db, rest))
            except sqlite3.DatabaseError as exc:
                self._warn(exc, path)
        return found

    def _named(self, db: sqlite3.Connection, keys: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for chunk in _chunks(keys):
            marks = ",".join("?" * len(chunk))
            with self._lock:
                rows = db.execute(
                    "SELECT b.key, b.model FROM answered_by b JOIN answers a "
                    f"ON a.key = b.key AND a.created = b.created WHERE b.key IN ({marks})",
                    chunk,
                ).fetchall()
            found.update({str(key): str(model) for key, model in rows})
        return found

    def _own_keys(self, keys: list[str]) -> set[str]:
        try:
            return {row[0] for chunk in _chunks(keys) for row in self._select(self._db, chunk)}
        except sqlite3.DatabaseError:
            return set()

    def has_answers(self, judge_id: str) -> bool:
        """Whether any answer of this judge is cached: its endpoint has taken its request."""
        query = "SELECT 1 FROM answers WHERE judge = ? LIMIT 1"
        return self._first("answers", query, judge_id) is not None

    def _first(self, table: str, query: str, *args) -> tuple | None:
        """The first row `query` (of `table`) finds, in this cache or else the one below."""
        for db, path in self._layers(table):
            try:
                with self._lock:
                    row = db.execute(query, args).fetchone()
            except sqlite3.DatabaseError as exc:
                self._warn(exc, path)
                continue
            if row is not None:
                return row
        return None

    def drop_judge(self, judge_id: str, reason: str) -> None:
        """Forget every answer of a judge found unable to answer readably, and remember why,
        so a later run with it is refused before it asks anything (`unreadable`)."""
        try:
            with self._lock, self._db:
                self._db.execute(
                    "DELETE FROM answered_by WHERE key IN "
                    "(SELECT key FROM answers WHERE judge = ?)",
                    (judge_id,),
                )
                self._db.execute("DELETE FROM answers WHERE judge = ?", (judge_id,))
                self._db.execute(
                    "INSERT OR REPLACE INTO unreadable VALUES (?, ?)", (judge_id, reason)
                )
        except sqlite3.DatabaseError as exc:
            self._warn(exc)

    def drop(self, keys: list[str]) -> None:
        """Forget these answers."""
        try:
            with self._lock, self._db:
                self._db.executemany("DELETE FROM answers WHERE key = ?", [(k,) for k in keys])
                self._db.executemany("DELETE FROM answered_by WHERE key = ?", [(k,) for k in keys])
        except sqlite3.DatabaseError as exc:
            self._warn(exc)

    def unreadable(self, judge_id: str) -> str | None:
        """Why this judge's answers cannot be read, if a run found out (this one's or the
        cache below's); else None."""
        row = self._first("unreadable", "SELECT reason FROM unreadable WHERE judge = ?", judge_id)
        return None if row is None else str(row[0])

    def _warn(self, exc: Exception, path: Path | None = None) -> None:
        path = path or self.path
        if path in self._warned:
            return
        self._warned.add(path)
        if path == self.path:
            tail = "answers it cannot read or keep are asked again (move the file aside for "
            tail += "a fresh cache)"
        else:  # the pipeline's, which this run only reads
            tail = "this run asks again the answers it cannot read there"
        print(f"steerops: warning: judge cache {path}: {exc}; {tail}", file=sys.stderr)

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
