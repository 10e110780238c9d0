"""Tracking through an MLflow server on loopback: artifacts land in the server's store; a
server that is down at the start is one error line before any model loads; a server lost
in the middle of a run costs no local result, and the runs reach it on the next start."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

from steer_world import SMALL, steer_params
from steerops.cli import main
from steerops.config import load_params
from steerops.tracking import track


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`mlflow server` with its own backend store and artifact root (restartable)."""

    def __init__(self, folder: Path):
        self.folder, self.port = folder, _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.artifacts = folder / "server-artifacts"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Server:
        command = [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{self.folder / 'server.db'}",
            "--artifacts-destination", str(self.artifacts),
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
        ]  # fmt: skip
        log = open(self.folder / "server.log", "a")  # noqa: SIM115 - closed with the server
        self.proc = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.uri + "/health", timeout=2):
                    return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        pytest.fail("the MLflow server did not start: " + (self.folder / "server.log").read_text())

    def stop(self) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None


@pytest.fixture
def server(tmp_path):
    running = Server(tmp_path).start()
    yield running
    running.stop()


def test_artifacts_land_in_the_server_store(server, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    project = tmp_path / "project"
    project.mkdir()
    (project / "params.yaml").write_text("experiment: served\n")
    (project / "notes.txt").write_text("hello\n")
    with track(load_params(project / "params.yaml"), "report", "report") as tracker:
        tracker.log_artifact(project / "notes.txt", "report")
        tracker.log_table([{"question": "q", "response": "r"}], "responses.json")
    client = MlflowClient(server.uri)
    experiment = client.get_experiment_by_name("served")
    assert experiment.artifact_location.startswith("mlflow-artifacts:")
    stored = {p.relative_to(server.artifacts).as_posix() for p in server.artifacts.rglob("*.*")}
    run = f"{experiment.experiment_id}/{tracker.run_id}/artifacts"
    assert {f"{run}/report/notes.txt", f"{run}/responses.json"} <= stored
    assert not (project / "mlartifacts").exists()
    assert (
        tracker.link()
        == f"{server.uri}/#/experiments/{experiment.experiment_id}/runs/{tracker.run_id}"
    )


def test_a_server_down_at_the_start_is_one_line_before_the_model_loads(
    toy_world, tmp_path, capsys, monkeypatch
):
    from steerops.models import loading
    from steerops.steering import session

    def no_model(*args, **kwargs):
        raise AssertionError("the model loaded before the server was checked")

    monkeypatch.setattr(loading, "load_model", no_model)
    monkeypatch.setattr(session, "load_model", no_model)  # the name the stage calls
    port = _free_port()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    params = steer_params(tmp_path, toy_world)
    start = time.monotonic()
    assert main(["steer", "--params", str(params), *SMALL]) == 2
    assert time.monotonic() - start < 60
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        f"steerops steer: error: tracking: MLflow tracking server http://127.0.0.1:{port} is "
        "not reachable ([Errno 111] Connection refused); start it, or log locally (unset "
        "MLFLOW_TRACKING_URI / tracking.uri) or not at all (tracking.enabled: false)"
    )
    assert not (tmp_path / "runs").exists()


def test_a_server_lost_mid_run_costs_no_results_and_the_runs_follow(
    server, toy_world, tmp_path, capfd, monkeypatch
):
    from steerops.steering import session

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    params = steer_params(tmp_path, toy_world)
    real = session.generate_steered

    def losing_the_server(*args, **kwargs):
        # the tracking server goes away while the stage generates, its run already open
        client, deadline = MlflowClient(server.uri), time.monotonic() + 120
        while server.proc is not None and time.monotonic() < deadline:
            experiment = client.get_experiment_by_name("toy-refusal")
            if experiment and client.search_runs([experiment.experiment_id]):
                server.stop()
            time.sleep(0.5)
        assert server.proc is None, "the stage's run never reached the server"
        return real(*args, **kwargs)

    monkeypatch.setattr(session, "generate_steered", losing_the_server)
    assert main(["steer", "--pipeline", "--params", str(params), *SMALL]) == 0
    err = capfd.readouterr().err  # (the tracking process writes to the same stderr)
    warnings = [line for line in err.splitlines() if "warning: MLflow tracking" in line]
    assert len(warnings) == 1 and "the runs are logged on the next start" in warnings[0]
    cell = tmp_path / "outputs/steering/toy/refusal/instruct/prompt_m1/residual/mean_diff"
    for name in ("results.jsonl", "results.csv", "metrics.json", "curve.png"):
        assert (cell / name).is_file(), name
    assert (cell / "responses" / "baseline.json").is_file()
    assert (tmp_path / "metrics" / "steer.json").is_file()
    (journal,) = (tmp_path / ".steerops" / "tracking").glob("pending-*.json")

    server.start()
    monkeypatch.undo()  # the next start: real generation, same server address
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    with track(load_params(params), "report", "the next start"):
        pass
    assert not journal.exists()
    client = MlflowClient(server.uri)
    experiment = client.get_experiment_by_name("toy-refusal").experiment_id
    runs = client.search_runs([experiment], max_results=100)
    (steer,) = [r for r in runs if r.info.run_name == "steer mean_diff prompt[-1] toy/refusal"]
    (cell_run,) = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == steer.info.run_id]
    configs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == cell_run.info.run_id]
    assert steer.info.status == cell_run.info.status == "FINISHED" and len(configs) == 4
    assert cell_run.data.metrics["n_configs"] == 4
    assert "curve.png" in {a.path for a in client.list_artifacts(cell_run.info.run_id)}
