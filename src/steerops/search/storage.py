"""Optuna RDB storage shared by several processes: opening it, heartbeats, sqlite locking.

Optuna takes a row lock (SELECT ... FOR UPDATE) to pop a queued trial or to fail a stale
one; SQLite ignores that clause, so two workers on one sqlite file could pop the same
trial. `sqlite_lock` restores the guarantee with a lock file beside the database (sqlite is
local anyway); PostgreSQL and MySQL need nothing extra.
"""

from __future__ import annotations

import contextlib
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import optuna
from sqlalchemy.engine import make_url

from steerops.errors import SteeropsError

try:
    import fcntl
except ImportError:  # Windows: no file locks; run one worker per sqlite file there
    fcntl = None


def storage_label(url: str) -> str:
    """The storage URL with any password masked (safe for logs and best.json)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not an SQLAlchemy URL: say nothing secret
        return url.split("@")[-1]


def url_is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def open_storage(url: str, heartbeat_s: int, grace_s: int, retry, attempts: int = 5):
    """An RDBStorage with heartbeats; a stale trial is passed to `retry` (re-queued)."""
    kwargs = {"connect_args": {"timeout": 30}} if url_is_sqlite(url) else {}
    for attempt in range(attempts):
        try:
            with quiet():
                return optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=kwargs,
                    heartbeat_interval=heartbeat_s,
                    grace_period=grace_s,
                    heartbeat_stale_trial_callback=retry,
                )
        except Exception as exc:  # bad URL, missing driver, unreachable server
            # Workers starting together on a new database race to create its tables.
            if "already exists" in str(exc) and attempt + 1 < attempts:
                time.sleep(0.2 * (attempt + 1))
                continue
            raise SteeropsError(
                f"search.storage: cannot open {storage_label(url)}: {str(exc).splitlines()[0]}"
            ) from None


@contextlib.contextmanager
def heartbeats(storage, trial_ids: list[int], interval_s: float) -> Iterator[None]:
    """Keep recording heartbeats for `trial_ids` (trials being evaluated) in a thread."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval_s):
            for trial_id in trial_ids:
                with contextlib.suppress(Exception):  # a missed beat is retried next time
                    storage.record_heartbeat(trial_id)

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextlib.contextmanager
def sqlite_lock(url: str) -> Iterator[None]:
    """Hold an exclusive lock shared by every process using this sqlite database."""
    database = make_url(url).database if url_is_sqlite(url) else None
    if (
        not database
        or database == ":memory:"
        or fcntl is None
        or not Path(database).parent.is_dir()
    ):
        yield
        return
    with open(database + ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence Optuna's experimental-feature and ask-with-heartbeat warnings: the heartbeat is
    driven by `keep_alive` here, not by `Study.optimize`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage")
        yield
