"""Every reader of a sqlite URL (the MLflow store, a study's storage and its workers'
lock) finds the same file, in sqlite's URI mode too."""

from __future__ import annotations

from pathlib import Path

import pytest

from steerops.sqlite_url import sqlite_file


@pytest.mark.parametrize(
    "url, file",
    [
        ("sqlite:///rel.db", "rel.db"),
        ("sqlite:////abs/m.db", "/abs/m.db"),
        ("sqlite:////abs/a%20b.db", "/abs/a b.db"),
        ("sqlite:////abs/m.db?timeout=5", "/abs/m.db"),
        ("sqlite+pysqlite:////abs/m.db", "/abs/m.db"),
        ("sqlitex:////abs/m.db", None),
        ("sqlite:///file:/abs/o.db?uri=true", "/abs/o.db"),
        ("sqlite:///file:o.db?mode=rw&uri=true", "o.db"),
        ("sqlite://", None),
        ("sqlite:///:memory:", None),
        ("postgresql://u:p@h/db", None),
    ],
)
def test_a_sqlite_url_names_its_file(url, file):
    assert sqlite_file(url) == (Path(file) if file else None)


def test_a_study_in_uri_mode_has_its_workers_lock_beside_it(tmp_path):
    from steerops.search.storage import study_lock

    plain = study_lock(f"sqlite:///{tmp_path}/optuna.db", None, "s")
    uri_mode = study_lock(f"sqlite:///file:{tmp_path}/optuna.db?uri=true", None, "s")
    driver = study_lock(f"sqlite+pysqlite:///{tmp_path}/optuna.db", None, "s")
    assert plain._path == uri_mode._path == driver._path == f"{tmp_path}/optuna.db.lock"
