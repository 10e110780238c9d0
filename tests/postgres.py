"""A throwaway PostgreSQL server on loopback for the tests that share a study in one.

`postgres_server` (session scope) initialises a cluster in a temporary folder, starts it on a
free loopback port with trust authentication and removes it afterwards; `postgres_url` gives
each test a database of its own. Needs the server binaries (Debian: `apt-get install
postgresql`) and the psycopg2 driver (a dev dependency); without them the tests are skipped,
except under CI where that is a failure. As root, the server runs as the `postgres` user
(PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

USER = "steerops"
_databases = itertools.count()


def _missing(what: str):
    message = f"PostgreSQL tests need {what}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_server():
    """The base URL (without a database) of a running throwaway server."""
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    if not (initdb and pg_ctl):
        _missing("the server binaries (apt-get install postgresql)")
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        _missing("the psycopg2 driver (pip install psycopg2-binary)")
    folder = Path(tempfile.mkdtemp(prefix="steerops-pg-"))
    run_as = {}
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        run_as = {"user": "postgres"}
    data, port = folder / "data", _free_port()
    subprocess.run(
        [initdb, "-D", str(data), "-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync"],
        check=True,
        capture_output=True,
        **run_as,
    )
    options = (
        f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
    )
    subprocess.run(
        [pg_ctl, "-D", str(data), "-l", str(folder / "server.log"), "-w", "-o", options, "start"],
        check=True,
        capture_output=True,
        **run_as,
    )
    try:
        yield f"postgresql+psycopg2://{USER}@127.0.0.1:{port}"
    finally:
        subprocess.run(
            [pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True, **run_as
        )
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server):
    """The URL of a new, empty database on the throwaway server."""
    import psycopg2

    name = f"study_{os.getpid()}_{next(_databases)}"
    port = postgres_server.rsplit(":", 1)[1]
    conn = psycopg2.connect(host="127.0.0.1", port=port, user=USER, dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
    conn.close()
    return f"{postgres_server}/{name}"
