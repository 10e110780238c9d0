"""Where a run opens in the MLflow UI, printed on the terminal at the end of a stage."""

from __future__ import annotations

import os
from pathlib import Path

from steerops.redact import shown_url
from steerops.sqlite_url import sqlite_file
from steerops.tracking.store import HTTP, scheme

LOCAL_UI = "http://127.0.0.1:5000"


def run_link(uri: str, experiment_id: str, run_id: str, root: Path | None = None) -> str:
    """The run's page: on the tracking server, or, for a local store, the `mlflow ui`
    command that serves it (the store path relative to the working directory) and the page.
    Credentials in `uri` (user:token@, a database password) are left out: it is printed."""
    page = f"#/experiments/{experiment_id}/runs/{run_id}"
    if scheme(uri) in HTTP:
        return f"{shown_url(uri).rstrip('/')}/{page}"
    db = sqlite_file(uri)
    store = shown_url(uri) if db is None else f"sqlite:///{_from_cwd(db)}"
    return f"{LOCAL_UI}/{page} (serve it with: mlflow ui --backend-store-uri {store})"


def _from_cwd(path: Path) -> str:
    try:
        shown = os.path.relpath(path, Path.cwd())
    except ValueError:  # another drive
        return str(path)
    return str(path) if shown.startswith("..") else shown
