"""Several `steerops search` processes on one study: shared work, killed workers retried.

Each worker is a real subprocess with its own storage connection to one sqlite database,
driving the real study and loop with the synthetic evaluator of synthetic.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from synthetic import SOURCE, SyntheticEvaluator, open_study

from steerops.search.loop import run_search

TESTS = Path(__file__).parent


class SlowEvaluator(SyntheticEvaluator):
    def __init__(self, questions, sleep_s: float):
        super().__init__(questions)
        self.sleep_s = sleep_s

    def evaluate(self, configs):
        time.sleep(self.sleep_s)
        return super().evaluate(configs)


def worker(
    folder: str,
    target: int,
    batch: int,
    sleep_s: float,
    n_workers: int,
    heartbeat_s: int = 30,
    grace_s: int = 120,
) -> None:
    """Subprocess entry: wait until every worker has opened the study, then search."""
    folder = Path(folder)
    study = open_study(
        folder, sampler="tpe", startup_trials=2, heartbeat_s=heartbeat_s, grace_s=grace_s
    )
    (folder / f"ready-{os.getpid()}").touch()
    while len(list(folder.glob("ready-*"))) < n_workers:
        time.sleep(0.05)
    evaluator = SlowEvaluator(["q1", "q2"], sleep_s)
    stats = run_search(
        study, evaluator, SOURCE, target, batch, "positive", progress=False, poll_s=0.2
    )
    print(json.dumps({"evaluated": stats.evaluated}), flush=True)


def start_worker(folder: Path, *args) -> subprocess.Popen:
    code = (
        f"import sys; sys.path.insert(0, {str(TESTS)!r}); "
        f"from test_workers import worker; worker({str(folder)!r}, *{args!r})"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_two_concurrent_workers_share_one_study(tmp_path):
    procs = [start_worker(tmp_path, 12, 2, 0.4, 2) for _ in range(2)]
    evaluated = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        evaluated.append(json.loads(out.strip().splitlines()[-1])["evaluated"])
    a, b = map(set, evaluated)
    assert a and b  # both did work
    assert not a & b  # no trial evaluated twice
    study = open_study(tmp_path)
    records = study.records()
    complete = [r.number for r in records if r.state == "complete"]
    assert sorted(a | b) == sorted(complete)  # none lost
    assert len(complete) == len(a) + len(b) == 12 == study.n_done()  # and not more
    assert len({r.number for r in records}) == len(records)


def test_killed_worker_trials_are_failed_by_heartbeat_and_retried(tmp_path):
    proc = start_worker(tmp_path, 4, 2, 600.0, 1, 1, 2)  # never finishes its first batch
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if (tmp_path / "optuna.db").exists() and list(tmp_path.glob("ready-*")):
                watcher = open_study(tmp_path, heartbeat_s=1, grace_s=2)
                if watcher.n_running() == 2:
                    break
            time.sleep(0.2)
        else:
            pytest.fail("the worker never started its first batch")
        killed = sorted(r.coefficient for r in watcher.records() if r.state == "running")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    time.sleep(3.5)  # longer than the grace period: the dead worker's trials are now stale
    resumed = open_study(tmp_path, heartbeat_s=1, grace_s=2)
    evaluator = SyntheticEvaluator(["q1", "q2"])
    run_search(resumed, evaluator, SOURCE, 4, 2, "positive", progress=False, poll_s=0.2)
    records = resumed.records()
    failed = sorted(r.coefficient for r in records if r.state == "fail")
    assert failed == pytest.approx(killed)  # the dead worker's trials were failed ...
    first_batch = sorted(c for _, c, _ in evaluator.calls[0])
    assert first_batch == pytest.approx(killed)  # ... and retried first, with the same params
    assert resumed.n_done() == 4 and resumed.n_running() == 0
