"""Runs as MLflow stores them: nested runs with the stage's tags, one batch per run, spans that
cover the work; runs of a killed process ended as KILLED; a fresh store opened by several
processes at once."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

import steerops
from steerops.config import load_params
from steerops.tracking import track

SRC = str(Path(steerops.__file__).resolve().parents[1])  # the steerops under test


def _params(folder: Path, **tracking):
    (folder / "params.yaml").write_text(
        yaml.safe_dump({"experiment": "t", "tracking": {"uri": _uri(folder), **tracking}})
    )
    return load_params(folder / "params.yaml")


def _uri(folder: Path) -> str:
    return f"sqlite:///{folder / 'mlflow.db'}"


def _runs(folder: Path, query: str = "") -> list:
    client = MlflowClient(_uri(folder))
    experiment = client.get_experiment_by_name("t")
    return client.search_runs([experiment.experiment_id], filter_string=query, max_results=500)


def test_nested_runs_carry_the_stage_tags_and_the_span_of_their_work(tmp_path):
    params = _params(tmp_path)
    (tmp_path / "questions.json").write_text('{"questions": ["q"]}')
    work_start = time.time()
    with track(
        params,
        "steer",
        "steer mean_diff prompt[-1] toy/refusal",
        tags={"steerops.trait": "toy/refusal"},
        datasets={"questions": (tmp_path / "questions.json", "questions")},
        description="what this run is for",
    ) as tracker:
        tracker.log_params({"layers": [1, 2], "model": "m", "subset": None})
        with tracker.child("mean_diff prompt[-1]", tags={"steerops.method": "mean_diff"}) as cell:
            time.sleep(1.2)  # the cell's work
            for layer in range(3):
                cell.add_child(
                    f"L{layer} c1 mean_diff",
                    params={"layer": layer, "coefficient": 1.0},
                    metrics={"trait_mean": 10.0 * layer, "coherence": 90.0},
                    tags={"steerops.cached": layer == 0},
                    start=work_start,
                    end=work_start + 2.0,
                )
            cell.log_table([{"question": "q", "response": "r"}], "responses.json")
    (top,) = _runs(tmp_path, "attributes.run_name = 'steer mean_diff prompt[-1] toy/refusal'")
    assert top.info.status == "FINISHED"
    assert top.data.params == {"layers": "1,2", "model_id": "m"}
    assert top.data.tags["mlflow.note.content"] == "what this run is for"
    assert top.inputs.dataset_inputs[0].dataset.source == '{"uri": "questions.json"}'
    (cell,) = _runs(tmp_path, f"tags.`mlflow.parentRunId` = '{top.info.run_id}'")
    assert cell.info.end_time - cell.info.start_time >= 1200
    configs = _runs(tmp_path, f"tags.`mlflow.parentRunId` = '{cell.info.run_id}'")
    assert sorted(r.info.run_name for r in configs) == [f"L{i} c1 mean_diff" for i in range(3)]
    for run in configs:
        assert run.data.tags["steerops.stage"] == "steer"
        assert run.data.tags["steerops.trait"] == "toy/refusal"
        assert run.data.tags["steerops.method"] == "mean_diff"
        assert run.data.metrics["coherence_mean"] == 90.0
        assert run.info.end_time - run.info.start_time == pytest.approx(2000, abs=1)
    cached = _runs(tmp_path, "tags.`steerops.cached` = 'true'")
    assert [r.info.run_name for r in cached] == ["L0 c1 mean_diff"]
    experiment = MlflowClient(_uri(tmp_path)).get_experiment_by_name("t")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert experiment.artifact_location == (tmp_path / "mlartifacts").as_uri()
    assert (tmp_path / "mlartifacts" / cell.info.run_id / "artifacts" / "responses.json").exists()
    assert tracker.link().startswith(
        f"http://127.0.0.1:5000/#/experiments/{experiment.experiment_id}/runs/{top.info.run_id}"
    )


def test_runs_of_a_dvc_experiment_carry_its_name_and_baseline(tmp_path, monkeypatch):
    """`dvc exp run` names the experiment in its stages' environment: every run (nested
    ones too) is found by it in MLflow; outside an experiment no such tag is set."""
    params = _params(tmp_path)
    monkeypatch.setenv("DVC_EXP_NAME", "hardy-vans")
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", "a" * 40)
    with track(params, "steer", "inside") as tracker:
        tracker.add_child("L1 c1", params={"layer": 1})
    monkeypatch.delenv("DVC_EXP_NAME")
    monkeypatch.delenv("DVC_EXP_BASELINE_REV")
    with track(params, "steer", "outside"):
        pass
    found = _runs(tmp_path, "tags.`steerops.dvc_experiment` = 'hardy-vans'")
    assert sorted(r.info.run_name for r in found) == ["L1 c1", "inside"]
    assert {r.data.tags["steerops.dvc_baseline_rev"] for r in found} == {"a" * 40}
    (outside,) = _runs(tmp_path, "attributes.run_name = 'outside'")
    assert "steerops.dvc_experiment" not in outside.data.tags


def test_every_run_names_the_params_file_it_was_read_from_and_its_md5(tmp_path):
    """An untracked or edited params file is not the commit's: the runs say which file and
    which bytes, so a run is reproducible from what it records."""
    from steerops.io import file_md5

    params = _params(tmp_path)
    with track(params, "steer", "first") as tracker:
        tracker.add_child("L1 c1", params={"layer": 1})
    text = (tmp_path / "params.yaml").read_text()
    (tmp_path / "params.yaml").write_text(text + "seed: 3\n")
    with track(load_params(tmp_path / "params.yaml"), "steer", "edited"):
        pass
    runs = {r.info.run_name: r.data.tags for r in _runs(tmp_path)}
    assert {tags["steerops.params_file"] for tags in runs.values()} == {"params.yaml"}
    assert runs["first"]["steerops.params_md5"] == runs["L1 c1"]["steerops.params_md5"]
    assert runs["edited"]["steerops.params_md5"] == file_md5(tmp_path / "params.yaml")
    assert runs["first"]["steerops.params_md5"] != runs["edited"]["steerops.params_md5"]


@pytest.mark.parametrize(
    "uri, shown",
    [
        ("https://alice:tok-123@mlflow.example/", "https://mlflow.example/#/experiments/1/runs/r"),
        ("postgresql://alice:pw-123@db:5432/mlflow", "postgresql://db:5432/mlflow"),
    ],
)
def test_the_printed_run_link_holds_no_credentials(uri, shown):
    """A stage prints its run's link on the terminal (and so in DVC's or a CI's log): the
    user and token of the tracking URI stay out of it, as they do of every error line."""
    from steerops.tracking.links import run_link

    link = run_link(uri, "1", "r")
    assert shown in link and "123" not in link and "alice" not in link


def test_a_failing_stage_ends_its_run_failed(tmp_path):
    params = _params(tmp_path)
    with pytest.raises(RuntimeError), track(params, "steer", "doomed") as tracker:
        tracker.log_metrics({"x": 1})
        raise RuntimeError("boom")
    (run,) = _runs(tmp_path)
    assert run.info.status == "FAILED" and run.data.metrics == {"x": 1.0}


@pytest.mark.parametrize(
    "uri, reason",
    [
        ("sqlite:/mlflow.db", "a sqlite store is sqlite:///PATH"),
        ("sqlite://mlflow.db", "a sqlite store is sqlite:///PATH"),
        ("mlfow://localhost:5000", "MLflow has no tracking store for the scheme 'mlfow'"),
    ],
)
def test_a_tracking_uri_no_store_opens_is_one_line_before_the_stage(tmp_path, uri, reason):
    """Bad input, refused before the stage's work: it used to run to the end untracked,
    after a warning from the tracking worker, its runs journalled for a store never opened."""
    from steerops.errors import SteeropsError

    params = _params(tmp_path)
    params.tracking.uri = uri
    with pytest.raises(SteeropsError, match=rf"^tracking: '{re.escape(uri)}' .*\({reason}\)"):
        with track(params, "steer", "never"):
            pytest.fail("the stage ran")
    assert not (tmp_path / ".steerops").exists() and not (tmp_path / "mlflow.db").exists()


def test_an_interrupt_ends_the_nested_run_killed_as_its_parent(tmp_path):
    """Ctrl-C inside a nested run (a cell, a trial) ends it KILLED, as its parent: an
    interrupted config is not a failed one when runs are filtered by status."""
    params = _params(tmp_path)
    with pytest.raises(KeyboardInterrupt), track(params, "steer", "stopped") as tracker:
        with tracker.child("cell"):
            raise KeyboardInterrupt
    statuses = {r.info.run_name: r.info.status for r in _runs(tmp_path)}
    assert statuses == {"stopped": "KILLED", "cell": "KILLED"}


def test_a_held_run_is_logged_only_when_kept_or_when_it_fails(tmp_path):
    params = _params(tmp_path)
    with track(params, "steer", "nothing new", held=True) as tracker:
        with tracker.child("cell") as cell:
            cell.log_metrics({"m": 1})
    assert not tracker.kept and tracker.run_id is None and _runs(tmp_path) == []
    opened = time.time()
    with track(params, "steer", "something new", held=True) as tracker:
        time.sleep(1.1)
        with tracker.child("cell") as cell:
            cell.log_metrics({"m": 1})
        tracker.keep()  # what was held is sent, stamped with its own times
    (top,) = _runs(tmp_path, "attributes.run_name = 'something new'")
    assert top.info.start_time <= opened * 1000 + 500 and top.info.status == "FINISHED"
    (cell,) = _runs(tmp_path, f"tags.`mlflow.parentRunId` = '{top.info.run_id}'")
    assert cell.data.metrics == {"m": 1.0}
    with pytest.raises(RuntimeError), track(params, "steer", "failed", held=True):
        raise RuntimeError("boom")
    (failed,) = _runs(tmp_path, "attributes.run_name = 'failed'")
    assert failed.info.status == "FAILED"


def test_disabled_tracking_is_a_no_op(tmp_path):
    params = _params(tmp_path, enabled=False)
    with track(params, "steer", "nothing") as tracker:
        tracker.log_params({"a": 1})
        with tracker.child("c") as child:
            child.log_metrics({"m": 1})
    assert tracker.run_id is None and tracker.link() is None
    assert not (tmp_path / "mlflow.db").exists()


HOLDER = """
import sys, time
sys.path.insert(0, {src!r})
from steerops.config import load_params
from steerops.tracking import track
params = load_params({params!r})
with track(params, "search", "held") as tracker:
    with tracker.child("trial") as trial:
        print(tracker.run_id, trial.run_id, flush=True)
        time.sleep(600)
"""


def _holder(folder: Path, **popen) -> tuple[subprocess.Popen, list[str]]:
    code = HOLDER.format(src=SRC, params=str(folder / "params.yaml"))
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, **popen
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().split()


def _status(folder: Path, run_id: str) -> str:
    return MlflowClient(_uri(folder)).get_run(run_id).info.status


def test_a_killed_stage_has_its_runs_ended_killed(tmp_path):
    """Killed alone, the stage's tracking process ends its runs at once; killed together
    (the whole process group), the next start finds them RUNNING and ends them."""
    _params(tmp_path)
    proc, ids = _holder(tmp_path)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 120
    while any(_status(tmp_path, i) == "RUNNING" for i in ids) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert [_status(tmp_path, i) for i in ids] == ["KILLED", "KILLED"]

    proc, ids = _holder(tmp_path, start_new_session=True)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(1)
    assert [_status(tmp_path, i) for i in ids] == ["RUNNING", "RUNNING"]
    with track(load_params(tmp_path / "params.yaml"), "report", "next start"):
        pass
    assert [_status(tmp_path, i) for i in ids] == ["KILLED", "KILLED"]


DONE_WHEN = """
import json, sys, time
sys.path.insert(0, {src!r})
from pathlib import Path
from steerops.config import load_params
from steerops.tracking import track
out, written = Path({out!r}), {written!r}
with track(load_params({params!r}), "extract", "held", done_when={{out: "h1"}}) as tracker:
    if written is not None:  # the work's last write, before its run could end
        out.write_text(json.dumps({{"settings_hash": written, "tensors_md5": "m"}}))
    print(tracker.run_id, flush=True)
    time.sleep(600)
"""


@pytest.mark.parametrize("group", [False, True], ids=["stage-alone", "stage-and-worker"])
def test_a_run_killed_after_its_outputs_were_complete_ends_finished(tmp_path, group):
    """A stage killed between its last output write and closing its run (SIGKILL, no
    cleanup): the run ends FINISHED, at the time of that write, when its outputs record the
    settings it was opened for; KILLED when they are missing or another run's, or hold
    its settings from before it opened (a forced rerun killed before its last write)."""
    _params(tmp_path)
    ended = {}
    for written in ("h1", None, "h0", "before"):
        out = tmp_path / f"metadata-{written}.json"
        if written == "before":  # an earlier run's complete output, same settings
            out.write_text(json.dumps({"settings_hash": "h1", "tensors_md5": "m"}))
            os.utime(out, (time.time() - 60, time.time() - 60))
        code = DONE_WHEN.format(
            src=SRC,
            params=str(tmp_path / "params.yaml"),
            out=str(out),
            written=None if written == "before" else written,
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", code],
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=group,
        )
        assert proc.stdout is not None
        (run_id,) = proc.stdout.readline().split()
        os.killpg(proc.pid, signal.SIGKILL) if group else proc.kill()
        proc.wait()
        ended[written] = (run_id, out)
    if group:  # the tracking worker died too: the next start settles the runs
        with track(load_params(tmp_path / "params.yaml"), "report", "next start"):
            pass
    client = MlflowClient(_uri(tmp_path))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and any(
        _status(tmp_path, run_id) == "RUNNING" for run_id, _ in ended.values()
    ):
        time.sleep(0.5)
    statuses = {w: _status(tmp_path, run_id) for w, (run_id, _) in ended.items()}
    assert statuses == {"h1": "FINISHED", None: "KILLED", "h0": "KILLED", "before": "KILLED"}
    run_id, out = ended["h1"]
    done = client.get_run(run_id)
    assert done.info.end_time == int(out.stat().st_mtime * 1000)
    assert "outputs were complete" in done.data.tags["steerops.ended"]
    assert "steerops.ended" not in client.get_run(ended[None][0]).data.tags


FIRST_USE = """
import sys
sys.path.insert(0, {src!r})
from steerops.config import load_params
from steerops.tracking import track
with track(load_params({params!r}), "search", "worker") as tracker:
    tracker.log_metrics({{"x": 1}})
"""


def test_processes_opening_a_fresh_store_together_all_log(tmp_path):
    _params(tmp_path)
    code = FIRST_USE.format(src=SRC, params=str(tmp_path / "params.yaml"))
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    errors = [p.communicate()[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    assert not any("warning" in e for e in errors), errors
    runs = _runs(tmp_path)
    assert len(runs) == 3 and all(r.info.status == "FINISHED" for r in runs)
    assert len(MlflowClient(_uri(tmp_path)).search_experiments()) == 2  # Default and "t"


def test_a_journal_left_by_a_failed_run_is_sent_on_the_next_start(tmp_path):
    params = _params(tmp_path)
    with track(params, "steer", "first"):
        pass  # the store and experiment exist
    journal = tmp_path / ".steerops" / "tracking" / "pending-1-1.json"
    journal.parent.mkdir(parents=True, exist_ok=True)
    now = int(time.time() * 1000)
    ops = [
        {"op": "start", "run": "r0", "parent": None, "name": "late", "tags": {}, "time": now},
        {
            "op": "log",
            "run": "r0",
            "params": {"a": "1"},
            "metrics": [["m", 2.0, now, 0]],
            "tags": {},
        },
        {"op": "end", "run": "r0", "status": "FINISHED", "time": now + 5},
    ]
    body = {"uri": _uri(tmp_path), "experiment": "t", "description": "", "ids": {}, "ops": ops}
    journal.write_text(json.dumps(body))
    with track(params, "steer", "second"):
        pass
    (late,) = _runs(tmp_path, "attributes.run_name = 'late'")
    assert late.info.status == "FINISHED" and late.data.params == {"a": "1"}
    assert late.data.metrics == {"m": 2.0}
    assert not list(journal.parent.glob("pending-*"))


def test_a_journal_logs_the_files_and_input_hashes_the_run_had_not_those_of_replay(tmp_path):
    """A run journalled while MLflow was down is sent at a later start, when a later run
    may have written over its result file: the journal keeps the file and its hash."""
    import hashlib

    from steerops.tracking.worker import Worker

    params = _params(tmp_path)
    with track(params, "steer", "first"):
        pass  # the store and experiment exist
    journal_dir = tmp_path / ".steerops" / "tracking"
    worker = Worker(
        {
            "uri": _uri(tmp_path),
            "experiment": "t",
            "description": "",
            "journal_dir": str(journal_dir),
        }
    )
    worker._fail(RuntimeError("server gone"))
    result, folder = tmp_path / "result.json", tmp_path / "plots"
    result.write_text('{"v": 1}')
    folder.mkdir()
    (folder / "a.csv").write_text("x\n1\n")
    now = int(time.time() * 1000)
    for op in (
        {"op": "start", "run": "r0", "parent": None, "name": "late", "tags": {}, "time": now},
        {"op": "artifact", "run": "r0", "path": str(result), "dir": "out"},
        {"op": "artifact", "run": "r0", "path": str(folder), "dir": "plots"},
        {"op": "lineage", "run": "r0", "root": str(tmp_path), "inputs": {"result": str(result)}},
        {"op": "end", "run": "r0", "status": "FINISHED", "time": now + 5},
    ):
        worker.handle(op)
    worker._write_journal()
    result.write_text('{"v": 2}')  # a later run writes over them before the next start
    (folder / "a.csv").write_text("x\n2\n")
    with track(params, "steer", "second"):
        pass
    (late,) = _runs(tmp_path, "attributes.run_name = 'late'")
    assert late.data.tags["dvc.hash.result"] == hashlib.md5(b'{"v": 1}').hexdigest()
    client = MlflowClient(_uri(tmp_path))
    got = Path(client.download_artifacts(late.info.run_id, "out/result.json", str(tmp_path)))
    assert got.read_text() == '{"v": 1}'
    got = Path(client.download_artifacts(late.info.run_id, "plots/a.csv", str(tmp_path)))
    assert got.read_text() == "x\n1\n"
    assert not list(journal_dir.glob("pending-*"))  # the journal and its copies are gone


def test_copies_a_killed_worker_left_without_a_journal_are_removed_at_the_next_start(tmp_path):
    """A worker copies an artifact when the run logs it and writes the journal when it ends:
    killed in between, its copies are named by no journal. The next start removes them, and
    leaves a journal's copies and a live worker's."""
    from steerops.liveness import this_worker
    from steerops.tracking.reconcile import remove_orphaned_copies
    from steerops.tracking.worker import Worker

    params = _params(tmp_path)
    with track(params, "steer", "first"):
        pass
    journal_dir = tmp_path / ".steerops" / "tracking"
    result = tmp_path / "result.json"
    result.write_text('{"v": 1}')
    uri, folder = _uri(tmp_path), str(journal_dir)  # strings: written into the script below
    config = {"uri": uri, "experiment": "t", "description": "", "journal_dir": folder}
    killed = f"""
import os, sys
sys.path.insert(0, {SRC!r})
from steerops.tracking.worker import Worker
worker = Worker({config!r})
worker._fail(RuntimeError("server gone"))
worker.handle({{"op": "artifact", "run": "r0", "path": {str(result)!r}, "dir": "out"}})
os.kill(os.getpid(), 9)
"""
    proc = subprocess.run([sys.executable, "-c", killed], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    (orphan,) = journal_dir.glob("pending-*.files")
    assert (orphan / "0" / "result.json").read_text() == '{"v": 1}'
    alive = Worker(config)  # this process's worker, still running: its copies stay
    alive._fail(RuntimeError("server gone"))
    alive.journal = journal_dir / "pending-alive-1.json"
    alive.handle({"op": "artifact", "run": "r1", "path": str(result), "dir": "out"})
    with track(params, "steer", "second"):
        pass
    assert not orphan.exists()
    assert (journal_dir / "pending-alive-1.files" / "0" / "result.json").is_file()
    # a journal's copies wait for its replay, whoever copied them
    journalled = journal_dir / "pending-other-2.files"
    journalled.mkdir()
    gone = {**this_worker(), "pid": 999_999_999}  # no such process
    (journalled / "owner.json").write_text(json.dumps(gone))
    (journal_dir / "pending-other-2.replaying-999999999").write_text("{}")
    assert remove_orphaned_copies(journal_dir) == []
    (journal_dir / "pending-other-2.replaying-999999999").unlink()
    assert remove_orphaned_copies(journal_dir) == [journalled]


def test_the_finished_check_names_many_outputs_in_one_tag_or_none(tmp_path):
    """Outputs are named under their common folder, so a task set's conditions fit MLflow's
    tag limit; a list too long for it is left out (the run then ends KILLED if killed)."""
    from steerops.tracking.completion import DONE_WHEN, done_when, finished_at
    from steerops.tracking.names import MAX_TAG

    folder = tmp_path / ("deep-" * 20) / "activations"
    outputs = {folder / f"condition-{k:03d}" / "metadata.json": f"h{k}" for k in range(60)}
    tag = done_when(outputs)[DONE_WHEN]
    assert len(tag) <= MAX_TAG and str(folder) in tag
    for path, value in outputs.items():
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"settings_hash": value}))
    assert finished_at({DONE_WHEN: tag}) == max(p.stat().st_mtime for p in outputs)
    next(iter(outputs)).write_text(json.dumps({"settings_hash": "other"}))
    assert finished_at({DONE_WHEN: tag}) is None
    many = {folder / f"condition-{k:04d}" / "metadata.json": "h" * 64 for k in range(200)}
    assert done_when(many) == {}


def test_a_journal_keeps_no_credentials_and_is_still_sent_to_its_store(tmp_path, capsys):
    """A journal (left next to the params file, in the project) records the tracking URI
    without its user and token, and the next start with the full URI still sends it."""
    from types import SimpleNamespace

    from steerops.tracking.reconcile import replay_journals
    from steerops.tracking.store import EXPERIMENT_KIND
    from steerops.tracking.worker import Worker

    uri = "https://alice:tok-123@mlflow.example"
    worker = Worker(
        {"uri": uri, "experiment": "t", "description": "", "journal_dir": str(tmp_path)}
    )
    worker._fail(RuntimeError("server gone"))
    now = int(time.time() * 1000)
    worker.pending = [
        {"op": "start", "run": "r0", "parent": None, "name": "late", "tags": {}, "time": now}
    ]
    worker._write_journal()
    (journal,) = tmp_path.glob("pending-*.json")
    assert "tok-123" not in journal.read_text() and "alice" not in journal.read_text()

    class Client:
        created: list[str] = []

        def get_experiment_by_name(self, name):
            tags = dict([EXPERIMENT_KIND])
            return SimpleNamespace(
                experiment_id="1", tags=tags, artifact_location="mlflow-artifacts:/1"
            )

        def create_run(self, experiment_id, start_time, tags, run_name):
            self.created.append(run_name)
            return SimpleNamespace(info=SimpleNamespace(run_id="id0"))

    client = Client()
    replay_journals(client, uri, tmp_path)
    assert client.created == ["late"] and not journal.exists()


def test_the_logged_command_line_holds_no_url_credentials(tmp_path, monkeypatch):
    """The run's description is the command line: a `--storage postgresql://u:pw@h/db`
    (the README's multi-GPU recipe passes one) is logged without its user and password, in
    every spelling, a password holding an unencoded `/` too; nothing else is changed."""
    from steerops import cli

    argv = [
        "search",
        "--storage",
        "postgresql://u:SECRET@h/db",
        "--storage=mysql+pymysql://u:pa/SECRET@h:3306/db",
        "--judge-url",
        "https://tok-SECRET@host:8443/v1",
        "--trait",
        "a@b",
        "--storage",
        "sqlite:////runs/proj@2/optuna.db",
        "--known-results",
        "journal:///data/run@3/journal.log",
    ]
    monkeypatch.setattr(cli, "_invocation", argv)
    params = _params(tmp_path)
    with track(params, "search", "search x"):
        pass
    (run,) = _runs(tmp_path)
    assert run.data.tags["mlflow.note.content"] == (
        "steerops search --storage postgresql://h/db --storage=mysql+pymysql://h:3306/db "
        "--judge-url https://host:8443/v1 --trait a@b --storage sqlite:////runs/proj@2/optuna.db "
        "--known-results journal:///data/run@3/journal.log"
    )
    logged = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "params.yaml"]
    assert logged and not [p for p in logged if b"SECRET" in p.read_bytes()]


def test_the_tracking_worker_outlives_one_sigterm_and_ends_at_the_second(tmp_path):
    """A scheduler's SIGTERM reaches the stage and its tracking process together: the
    worker, started as the sink starts it, stays to end the stage's runs; a second SIGTERM
    (or its input closing) ends it."""
    from steerops.tracking.sink import _LAUNCH_WORKER, _worker_env

    config = {"uri": f"sqlite:///{tmp_path / 'm.db'}", "experiment": "e", "description": ""}
    config["journal_dir"] = str(tmp_path / "journal")
    worker = subprocess.Popen(
        [sys.executable, "-c", _LAUNCH_WORKER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=_worker_env(),
    )
    assert worker.stdin is not None
    worker.stdin.write(json.dumps(config).encode() + b"\n")
    worker.stdin.flush()

    def catches_sigterm() -> bool:  # its own handler is set (Linux: the caught-signal mask)
        status = Path(f"/proc/{worker.pid}/status").read_text()
        caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
        return bool(int(caught.split()[1], 16) & (1 << (signal.SIGTERM - 1)))

    try:
        deadline = time.monotonic() + 60
        while not catches_sigterm():
            assert time.monotonic() < deadline and worker.poll() is None
            time.sleep(0.1)
        worker.send_signal(signal.SIGTERM)
        time.sleep(1)
        assert worker.poll() is None  # still there
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == -signal.SIGTERM
    finally:
        worker.kill()
        worker.wait()


def test_a_question_the_store_cannot_answer_leaves_the_runs_tracking_alone(tmp_path):
    """Whether a FINISHED run holds some files: found, not found, or (the store failing on
    the question) unknown, which neither fails the run's tracking nor sends it to a journal."""
    from steerops.tracking.worker import Worker

    worker = Worker(
        {"uri": f"sqlite:///{tmp_path / 'm.db'}", "experiment": "e", "description": ""}
        | {"journal_dir": str(tmp_path / "journal")}
    )
    worker._open()
    run = worker.client.create_run(worker.experiment_id, tags={"steerops.cell_files": "abc"})
    assert worker._finished_run_tagged("steerops.cell_files", "abc") is False  # RUNNING
    worker.client.set_terminated(run.info.run_id, "FINISHED")
    assert worker._finished_run_tagged("steerops.cell_files", "abc") is True
    assert worker._finished_run_tagged("steerops.cell_files", "it's other") is False

    class Broken:
        def search_runs(self, *args, **kwargs):
            raise RuntimeError("database is locked")

    worker.client = Broken()
    assert worker._finished_run_tagged("steerops.cell_files", "abc") is None
    assert worker.failure is None and worker.pending == []


def test_the_tracking_worker_holds_no_judge_key(tmp_path, monkeypatch):
    """The MLflow worker gets the stage's environment but the variable holding the judge's
    key: it has no use for it, and what it holds could reach a tracking server's logs."""
    from steerops.tracking import sink

    monkeypatch.setenv("JUDGE_KEY_TEST", "sk-canary")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "t")
    started: list[dict] = []
    real = subprocess.Popen

    def watching(*args, **kwargs):
        started.append(kwargs.get("env") or {})
        return real(*args, **kwargs)

    monkeypatch.setattr(sink.subprocess, "Popen", watching)
    params = _params(tmp_path)
    params.judge.api_key_env = "JUDGE_KEY_TEST"
    with track(params, "report", "keyless"):
        pass
    assert started and "JUDGE_KEY_TEST" not in started[0]
    assert started[0]["MLFLOW_TRACKING_TOKEN"] == "t"  # MLflow's own are kept
    assert "JUDGE_KEY_TEST" not in sink._worker_env(("JUDGE_KEY_TEST",))
    assert "MLFLOW_TRACKING_TOKEN" in sink._worker_env(("MLFLOW_TRACKING_TOKEN",))


def test_the_tracking_worker_command_line_holds_no_tracking_uri(tmp_path):
    """A tracking URI may hold a user and password: the worker reads it from its input,
    so `ps` (every local user's) never shows it; the worker still logs to that store."""
    from steerops.tracking.sink import Sink

    uri = f"sqlite:///{tmp_path / 'user:s3cret-token' / 'm.db'}"
    (tmp_path / "user:s3cret-token").mkdir()
    sink = Sink(uri, "e", "", tmp_path / "journal")
    try:
        cmdline = Path(f"/proc/{sink._proc.pid}/cmdline").read_bytes()
        assert b"s3cret-token" not in cmdline and b"tracking.worker" in cmdline
    finally:
        sink.close()
    assert sink.failure is None and (tmp_path / "user:s3cret-token" / "m.db").is_file()
