"""The tracking store's reachability check against a loopback HTTP server: credentials in
the URI are never part of the health request, nor of an error line."""

from __future__ import annotations

import http.server
import threading

import pytest

from steerops.errors import SteeropsError
from steerops.redact import shown_url
from steerops.tracking.store import check_reachable


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200
    seen: list[tuple[str, str | None]] = []

    def do_GET(self):  # noqa: N802 - the handler's name is http.server's
        self.seen.append((self.path, self.headers.get("Authorization")))
        self.send_response(self.status)
        self.end_headers()

    def log_message(self, *args):  # quiet
        pass


@pytest.fixture
def server():
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _Health.seen.clear()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("status", [200, 401])
def test_a_server_uri_with_a_user_and_password_is_reachable(server, status):
    _Health.status = status
    port = server.server_address[1]
    check_reachable(f"http://alice:s3cret@127.0.0.1:{port}/", timeout_s=5)
    check_reachable(f"http://127.0.0.1:{port}", timeout_s=5)
    assert _Health.seen == [("/health", None), ("/health", None)]


def test_an_unreachable_server_is_named_without_its_password(server):
    _Health.status = 500
    port = server.server_address[1]
    with pytest.raises(SteeropsError) as err:
        check_reachable(f"http://alice:s3cret@127.0.0.1:{port}", timeout_s=5)
    assert f"http://127.0.0.1:{port} is not reachable (HTTP 500)" in str(err.value)
    assert "s3cret" not in str(err.value) and "alice" not in str(err.value)
    assert shown_url("https://u:p@host:5000/x?y=1") == "https://host:5000/x"


def test_a_store_killed_while_it_is_created_is_created_again_at_the_next_open(tmp_path):
    """MLflow builds a new sqlite store in some 30 migrations: a process killed among them
    must not leave a store that no later run can open (it is built beside and renamed)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from steerops.tracking.store import open_client

    db = tmp_path / "mlflow.db"
    code = "import sys; from steerops.tracking.store import open_client; open_client(sys.argv[1])"
    child = subprocess.Popen([sys.executable, "-c", code, f"sqlite:///{db}"])
    deadline = time.monotonic() + 60
    while not [p for p in tmp_path.iterdir() if "mlflow.db" in p.name and "lock" not in p.name]:
        assert child.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(child.pid, signal.SIGKILL)  # the schema's first tables are being written
    child.wait()
    assert not db.exists()  # only the file being built, never a half-made store
    client = open_client(f"sqlite:///{db}")
    assert [e.name for e in client.search_experiments()] == ["Default"]
    assert list(tmp_path.glob(".mlflow.db.*")) == []  # the killed one's file is removed


def test_a_store_copied_with_its_project_keeps_its_artifacts_in_the_copy(tmp_path, capsys):
    """MLflow records absolute artifact locations: a copied project's store pointed at the
    original's `mlartifacts`, so the copy's new runs wrote their artifacts there. The copy
    reads its old runs' artifacts and writes new ones beside its own sqlite file; the
    original is left as it was."""
    import shutil

    from steerops.tracking.store import experiment_id, open_client

    original, copy = tmp_path / "project", tmp_path / "copy"
    original.mkdir()
    uri = f"sqlite:///{original / 'mlflow.db'}"
    client = open_client(uri)
    exp = experiment_id(client, "exp", uri, "")
    run = client.create_run(exp).info.run_id
    (tmp_path / "note.txt").write_text("logged before the copy")
    client.log_artifact(run, str(tmp_path / "note.txt"))
    client.set_terminated(run)
    before = sorted(p.relative_to(original) for p in original.rglob("*"))
    shutil.copytree(original, copy)

    copied_uri = f"sqlite:///{copy / 'mlflow.db'}"
    moved = open_client(copied_uri)
    assert experiment_id(moved, "exp", copied_uri, "") == exp
    assert "moved with its store" in capsys.readouterr().err
    assert moved.get_experiment(exp).artifact_location == (copy / "mlartifacts").as_uri()
    old = moved.get_run(run).info.artifact_uri
    assert old.startswith((copy / "mlartifacts").as_uri() + "/")
    fetched = moved.download_artifacts(run, "note.txt", str(tmp_path))
    assert open(fetched).read() == "logged before the copy"
    new = moved.create_run(exp).info.run_id
    moved.log_artifact(new, str(tmp_path / "note.txt"))
    assert (copy / "mlartifacts" / new / "artifacts" / "note.txt").is_file()
    assert sorted(p.relative_to(original) for p in original.rglob("*")) == before
    assert client.get_experiment(exp).artifact_location == (original / "mlartifacts").as_uri()
    # opened again: nothing left to move, nothing said
    experiment_id(moved, "exp", copied_uri, "")
    assert "moved" not in capsys.readouterr().err


def test_an_artifact_folder_chosen_by_hand_or_the_same_store_by_another_path_stays(tmp_path):
    """Only a store that visibly moved is re-pointed: an experiment whose artifacts were put
    elsewhere on purpose, or the same store opened through a link, keeps its location."""
    from steerops.tracking.store import experiment_id, open_client

    project, disk = tmp_path / "project", tmp_path / "bigdisk"
    project.mkdir()
    disk.mkdir()
    uri = f"sqlite:///{project / 'mlflow.db'}"
    client = open_client(uri)
    chosen = (disk / "mlartifacts").as_uri()
    exp = client.create_experiment("by-hand", artifact_location=chosen)
    assert experiment_id(client, "by-hand", uri, "") == exp
    assert client.get_experiment(exp).artifact_location == chosen
    own = experiment_id(client, "own", uri, "")
    (tmp_path / "link").symlink_to(project)
    linked = f"sqlite:///{tmp_path / 'link' / 'mlflow.db'}"
    experiment_id(open_client(linked), "own", linked, "")
    assert client.get_experiment(own).artifact_location == (project / "mlartifacts").as_uri()


def test_a_store_moved_with_its_project_follows_it(tmp_path):
    from steerops.tracking.store import experiment_id, open_client

    before, after = tmp_path / "old-name", tmp_path / "new-name"
    before.mkdir()
    uri = f"sqlite:///{before / 'mlflow.db'}"
    exp = experiment_id(open_client(uri), "exp", uri, "")
    before.rename(after)
    moved = f"sqlite:///{after / 'mlflow.db'}"
    client = open_client(moved)
    assert experiment_id(client, "exp", moved, "") == exp
    assert client.get_experiment(exp).artifact_location == (after / "mlartifacts").as_uri()
