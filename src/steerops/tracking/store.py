"""Where runs are logged: the tracking URI, a reachability check that needs no MLflow import,
opening the store (safe when several processes open a fresh one together) and the
experiment (tagged so the MLflow UI opens on its runs; artifacts through the server).
"""

from __future__ import annotations

import contextlib
import glob
import os
import sqlite3
import sys
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

from steerops.errors import SteeropsError
from steerops.redact import shown_url
from steerops.sqlite_url import sqlite_file
from steerops.tracking.relocate import artifacts_uri, moved_from, relocate
from steerops.workspace import lasting_folder

try:
    import fcntl
except ImportError:  # Windows: no file lock; open a fresh store from one process first
    fcntl = None  # type: ignore[assignment]

EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
HTTP = ("http", "https")
DATABASES = ("postgresql", "mysql", "mssql")
OTHER_SCHEMES = ("file", "databricks", "databricks-uc", "uc")  # MLflow's other stores
# A server that stops answering fails a request in seconds, not minutes (user settings win).
HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}


def tracking_uri(params) -> str:
    """MLFLOW_TRACKING_URI, else tracking.uri, else sqlite mlflow.db next to the params file
    (in the run folder for a run given --out; for a temporary DVC experiment workspace, in
    the repository's own folder: `workspace`)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    if params.tracking.uri:
        return params.tracking.uri
    folder = lasting_folder(params.store_root)
    return f"sqlite:///{folder / 'mlflow.db'}"


def scheme(uri: str) -> str:
    return urlparse(uri).scheme.split("+")[0] or "file"


def local_folder(uri: str) -> Path | None:
    """The folder a local store keeps its files in (sqlite file's folder, file store)."""
    db = sqlite_file(uri)
    if db is not None:
        return db.parent
    if scheme(uri) == "file":
        return Path(unquote(urlparse(uri).path or uri))
    return None


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """One `SteeropsError` line now (before any model loads) when runs cannot be logged."""
    kind = scheme(uri)
    if kind in HTTP:
        try:
            # asked without the URI's user and password: urllib cannot send them from the
            # host part (it reads "user:pw@host" as a host), and a 401 is reachable enough
            health = shown_url(uri).rstrip("/") + "/health"
            with urllib.request.urlopen(health, timeout=timeout_s) as r:
                if r.status >= 400:
                    raise OSError(f"HTTP {r.status}")
        except urllib.error.HTTPError as exc:
            if exc.code not in (401, 403):  # auth is the client's business, not reachability
                raise _unreachable(uri, f"HTTP {exc.code}") from None
        except (OSError, ValueError) as exc:
            raise _unreachable(uri, str(getattr(exc, "reason", exc))) from None
    elif kind in DATABASES:
        _check_database(uri, timeout_s)
    else:
        _check_form(uri, kind)
        folder = local_folder(uri)
        if folder is not None:
            existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
            if existing is None or not os.access(existing, os.W_OK):
                raise SteeropsError(f"tracking: cannot write the MLflow store in {folder}")


def _check_form(uri: str, kind: str) -> None:
    """A URI no MLflow store opens (a sqlite URI without its file, an unknown scheme) is
    bad input: refused now, not warned about by the tracking worker after the stage began,
    with every run of every start journalled for a store that never comes."""
    if kind == "sqlite" and sqlite_file(uri) is None:
        raise _unusable(uri, "a sqlite store is sqlite:///PATH")
    if kind not in ("sqlite", *OTHER_SCHEMES) and len(kind) > 1 and kind not in _plugins():
        raise _unusable(uri, f"MLflow has no tracking store for the scheme {kind!r}")
    if kind == "file" and not _file_store_allowed():
        # MLflow 3 opens a folder store only on request: every run would fail to log
        raise _unusable(
            uri, "a folder store, which MLflow opens only with MLFLOW_ALLOW_FILE_STORE=true"
        )


def _file_store_allowed() -> bool:
    from mlflow.environment_variables import MLFLOW_ALLOW_FILE_STORE

    return bool(MLFLOW_ALLOW_FILE_STORE.get())


def _plugins() -> set[str]:
    """Schemes of the tracking stores installed MLflow plugins add."""
    from importlib.metadata import entry_points

    return {e.name for e in entry_points(group="mlflow.tracking_store")}


def _unusable(uri: str, reason: str) -> SteeropsError:
    return SteeropsError(
        f"tracking: {shown_url(uri)!r} is not a tracking URI MLflow can log to ({reason}); "
        "set tracking.uri / MLFLOW_TRACKING_URI to sqlite:///PATH, http(s)://HOST:PORT or a "
        "database URL, or unset both to log to mlflow.db next to the params file"
    )


def _check_database(uri: str, timeout_s: float) -> None:
    from sqlalchemy import create_engine

    try:
        engine = create_engine(uri, connect_args={"connect_timeout": int(timeout_s)})
        with engine.connect():
            pass
    except Exception as exc:  # a missing driver or a refused connection: say which
        raise _unreachable(uri, str(exc).splitlines()[0]) from None


def _unreachable(uri: str, reason: str) -> SteeropsError:
    return SteeropsError(
        f"tracking: MLflow tracking server {shown_url(uri)} is not reachable ({reason}); start it, "
        "or log locally (unset MLFLOW_TRACKING_URI / tracking.uri) or not at all "
        "(tracking.enabled: false)"
    )


# ---- opening the store (in the tracking thread) ------------------------------------------

_pragma_files: set[str] = set()
_listening = threading.Lock()


def open_client(uri: str):
    """An MlflowClient on `uri`, with the store created or upgraded under a file lock for
    sqlite (several processes on a fresh store would race in MLflow's schema migration)."""
    import logging

    for key, value in HTTP_LIMITS.items():
        os.environ.setdefault(key, value)
    from mlflow import MlflowClient

    # after the import: importing mlflow sets its own levels
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)

    db = sqlite_file(uri)
    if db is None:
        client = MlflowClient(uri)
        client.search_experiments(max_results=1)  # fail here, on the store, not mid-run
        return client
    db.parent.mkdir(parents=True, exist_ok=True)
    _fast_sqlite(db)
    with file_lock(db.with_name(db.name + ".lock")):
        if not db.exists():
            _create_sqlite_store(db)
        client = MlflowClient(uri)
        client.search_experiments(max_results=1)
    return client


def _create_sqlite_store(db: Path) -> None:
    """A new store built whole beside `db` and renamed into place: MLflow creates its
    schema in some 30 migrations, and a process killed among them would leave a store no
    later run could open. Called under the store's lock, so a file left from an earlier
    creation is a killed one's."""
    from mlflow import MlflowClient

    for left in db.parent.glob(f".{glob.escape(db.name)}.*.creating*"):
        left.unlink(missing_ok=True)
    # a new name each time: MLflow keeps a store per URI for the life of the process
    building = db.with_name(f".{db.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.creating")
    try:
        # not in _pragma_files: the default rollback journal keeps every commit in the
        # file itself, so the rename moves all of it
        store = MlflowClient(f"sqlite:///{building}")._tracking_client.store
        store.search_experiments(max_results=1)
        engine = getattr(store, "engine", None)
        if engine is not None:
            engine.dispose()  # no connection left on the file that becomes the store
        os.replace(building, db)
    finally:
        for left in db.parent.glob(f"{glob.escape(building.name)}*"):
            left.unlink(missing_ok=True)


def _fast_sqlite(db: Path) -> None:
    """Write-ahead log and no fsync per commit on the MLflow sqlite file: a run's writes
    cost a fraction (a crash loses at most the last commits, never the file), and readers
    (the MLflow UI) do not block the writers."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    with _listening:
        if not _pragma_files:
            event.listen(Engine, "connect", _pragmas)
        _pragma_files.add(str(db.resolve()))


def _pragmas(connection, _record) -> None:
    if not isinstance(connection, sqlite3.Connection):
        return
    try:
        files = {row[2] for row in connection.execute("PRAGMA database_list")}
        if files & _pragma_files:
            connection.execute("PRAGMA busy_timeout=30000")
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
    except sqlite3.Error:  # another process holds it in another mode: keep its settings
        pass


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    if fcntl is None:
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def experiment_id(client, name: str, uri: str, description: str) -> str:
    """The experiment's id, created when missing: tagged as a model-development experiment
    (the UI opens on its runs, not on GenAI traces) and, on a server, with the server's
    artifact store (no client-local file:// location other machines cannot read); a sqlite
    store's experiment moved with its project reads and writes the artifacts beside it
    (`relocate`)."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is None:
        folder = local_folder(uri)
        location = artifacts_uri(folder) if folder is not None else None
        tags = {EXPERIMENT_KIND[0]: EXPERIMENT_KIND[1], "mlflow.note.content": description}
        try:
            return client.create_experiment(name, artifact_location=location, tags=tags)
        except MlflowException:  # another process created it meanwhile
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
    if found.tags.get(EXPERIMENT_KIND[0]) != EXPERIMENT_KIND[1]:
        client.set_experiment_tag(found.experiment_id, *EXPERIMENT_KIND)
    db = sqlite_file(uri)
    if db is not None and (old := moved_from(found.artifact_location, db)):
        relocate(db, found.experiment_id, old, name)
    if scheme(uri) in HTTP and found.artifact_location.startswith("file:"):
        print(
            f"steerops: warning: MLflow experiment {name!r} keeps its artifacts at "
            f"{found.artifact_location}, on one machine only; give tracking.experiment a new "
            "name so the server stores them",
            file=sys.stderr,
        )
    return found.experiment_id
