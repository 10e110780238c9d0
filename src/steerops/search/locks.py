"""One lock per study, shared by every worker process on it, on every supported storage.

Asking trials, enqueueing the design, importing known results and claiming the study's
finalisation happen under it, so two workers never draw from the same study state or both
take the same decision. The lock dies with its holder: a file lock (sqlite, journal file)
is dropped by the kernel, a PostgreSQL advisory lock or a MySQL named lock with the
database session.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from pathlib import Path
from types import ModuleType

from sqlalchemy import text

from steerops.errors import SteeropsError

fcntl: ModuleType | None
try:
    import fcntl
except ImportError:  # Windows: no file locks; run one worker per study file there
    fcntl = None


class StudyLock:
    """Re-entrant within a thread; exclusive across threads and processes."""

    def __init__(self, kind: str, name: str, path: str | None = None, engine=None):
        self.kind, self._path, self._engine = kind, path, engine
        digest = hashlib.sha256(f"steerops:{name}".encode()).digest()
        self._key = int.from_bytes(digest[:8], "big", signed=True)  # a PostgreSQL bigint
        self._mysql_name = "steerops-" + digest.hex()[:40]  # MySQL caps names at 64 chars
        self._local = threading.RLock()
        self._depth = 0
        self._held = None

    def __enter__(self) -> StudyLock:
        self._local.acquire()
        if self._depth == 0:
            try:
                self._held = self._acquire()
            except BaseException:
                self._local.release()
                raise
        self._depth += 1
        return self

    def __exit__(self, *exc) -> None:
        self._depth -= 1
        try:
            if self._depth == 0:
                held, self._held = self._held, None
                self._release(held)
        finally:
            self._local.release()

    def _acquire(self):
        if self.kind == "file":
            if self._path is None or fcntl is None:
                return None
            handle = open(self._path, "a")  # noqa: SIM115 - held until _release
            try:
                fcntl.flock(handle, fcntl.LOCK_EX)  # Ctrl-C while queued: closed below
            except BaseException:
                handle.close()
                raise
            return handle
        conn = self._engine.connect()
        try:
            if self.kind == "postgresql":
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": self._key})
            else:
                got = conn.execute(
                    text("SELECT GET_LOCK(:n, -1)"), {"n": self._mysql_name}
                ).scalar()
                if got != 1:
                    raise SteeropsError("search.storage: could not take the study lock")
            conn.commit()  # the lock is the session's; no transaction is left open
        except BaseException:
            conn.close()
            raise
        return conn

    def _release(self, held) -> None:
        if held is None:
            return
        if self.kind == "file":
            assert fcntl is not None  # a file lock is only taken where fcntl exists
            try:
                fcntl.flock(held, fcntl.LOCK_UN)
            finally:
                held.close()  # which unlocks it too
            return
        try:
            if self.kind == "postgresql":
                held.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
            else:
                held.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": self._mysql_name})
        except Exception:
            # a broken session holds no lock; never hand it back to the pool
            with contextlib.suppress(Exception):
                held.invalidate()
        finally:
            held.close()


def file_lock_path(database: str | Path | None, suffix: str = ".lock") -> str | None:
    """The lock file beside a study file (None for in-memory or a missing folder)."""
    if not database or str(database) == ":memory:" or not Path(database).parent.is_dir():
        return None
    return str(database) + suffix
