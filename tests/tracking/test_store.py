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
