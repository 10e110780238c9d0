"""The MLflow side of tracking: a companion process that sends what the stage recorded.

A stage records runs, params, metrics, tags, artifacts, tables and datasets as plain
operations (JSON-able dicts, below) and hands them to `Sink`, which passes them as JSON
lines to a process of its own (`steerops.tracking.worker`). That process imports
MLflow, opens the store, reconciles what earlier runs left behind and sends the operations
in order, each run's values in one `log_batch`: the import, the store and the requests cost
the stage no time on its own core and hold no lock the stage needs. The stage waits for it
only when it closes its run. When MLflow fails, the worker stops sending, says so in one
line and keeps every operation it could not send in a journal (`pending-*.json` in the
journal folder) that the next start sends. If the stage dies, the worker ends its open runs
(KILLED, or FINISHED when their outputs are complete: `completion`). A sink opened `held`
keeps every operation back until `release` (the stage found something to log) and drops
them at `close` if it never came: a rerun whose work was all done leaves no run.

Operations (`run` is a key local to this invocation; MLflow's id is known once created):
    {"op": "start", "run", "parent", "name", "tags", "time"}
    {"op": "log", "run", "params": {k: str}, "metrics": [[k, value, time, step]], "tags"}
    {"op": "artifact", "run", "path", "dir"}      {"op": "table", "run", "data", "file"}
    {"op": "input", "run", "name", "digest", "source", "context"}
    {"op": "lineage", "run", "root", "inputs": {name: path}}   (dvc.hash.<name> tags)
    {"op": "end", "run", "status", "time"}
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import steerops

MAX_PER_BATCH = 100  # MLflow's limit on params and on tags per log_batch
MAX_METRICS = 900  # and on entities per log_batch (1000), leaving room for the rest


# The worker's signals are set before anything imports: a Ctrl-C or SIGTERM sent to the
# process group while it starts (a second tracked run of one invocation starts its own)
# must not kill it before it can end the stage's runs (`worker.main` says how it handles
# them from then on).
_LAUNCH_WORKER = (
    "import signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "hasattr(signal, 'pthread_sigmask') and "
    "signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM}); "
    "from steerops.tracking.worker import main; sys.exit(main())"
)
_STOPS = {signal.SIGINT, signal.SIGTERM}


@contextlib.contextmanager
def _stops_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM blocked in this thread while it starts the worker, which inherits
    the mask and unblocks them once it ignores them: one sent before that is dropped, not
    fatal to it. The stage still gets them (another thread takes the signal, and Python
    runs its handler in the main thread once this one unblocks)."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    held = signal.pthread_sigmask(signal.SIG_BLOCK, _STOPS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def now_ms() -> int:
    """MLflow's clock: epoch milliseconds."""
    return int(time.time() * 1000)


class Sink:
    def __init__(
        self,
        uri: str,
        experiment: str,
        description: str,
        journal_dir: Path,
        held: bool = False,
        withheld: tuple[str, ...] = (),
    ):
        """`withheld`: environment variables the MLflow worker has no use for and must not
        hold (the judge's key)."""
        self.uri = uri
        self.experiment_id: str | None = None
        self.failure: str | None = None
        self.busy_s = 0.0  # seconds the worker spent on MLflow (import and store included)
        self.wait_s = 0.0  # seconds the stage waited for it
        self._ids: dict[str, str] = {}
        self._created: dict[str, threading.Event] = {}
        self._answers: dict[str, tuple[threading.Event, list[bool | None]]] = {}
        self._done = threading.Event()
        self._held: list[str] | None = [] if held else None  # operations kept back
        self._holding = threading.Lock()
        config = {
            "uri": uri,
            "experiment": experiment,
            "description": description,
            "journal_dir": str(journal_dir),
        }
        with _stops_held():
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _LAUNCH_WORKER],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=_worker_env(withheld),
            )
        self._out: queue.Queue[str | None] = queue.Queue()
        # the first line, not an argument: a URI's credentials are not on the command line
        # that `ps` shows every local user
        self._out.put(json.dumps(config))
        threading.Thread(target=self._write, name="steerops-tracking-out", daemon=True).start()
        threading.Thread(target=self._read, name="steerops-tracking-in", daemon=True).start()

    def put(self, op: dict[str, Any]) -> None:
        if op["op"] == "start":
            self._created.setdefault(op["run"], threading.Event())
        line = json.dumps(op)
        with self._holding:
            if self._held is not None:
                self._held.append(line)
                return
        self._out.put(line)

    @property
    def holding(self) -> bool:
        return self._held is not None

    def release(self) -> None:
        """Send the operations held back, in order, and every one from now on."""
        with self._holding:
            for line in self._held or []:
                self._out.put(line)
            self._held = None

    def run_id(self, key: str) -> str | None:
        """MLflow's id of run `key`, waiting for its creation (None if tracking failed, or
        while the run is held back)."""
        if self.holding:
            return None
        event = self._created.get(key)
        if event is not None and not event.is_set():
            start = time.perf_counter()
            event.wait()
            self.wait_s += time.perf_counter() - start
        return self._ids.get(key)

    def finished_run_tagged(self, tag: str, value: str) -> bool | None:
        """Whether the store holds a FINISHED run of this experiment tagged `tag`=`value`
        (None: tracking failed, or the store cannot say). Asked past the held operations:
        what this invocation records is not in the store yet."""
        key = f"q{len(self._answers)}"
        event, answer = threading.Event(), []
        self._answers[key] = (event, answer)
        self._out.put(json.dumps({"op": "ask", "id": key, "tag": tag, "value": value}))
        start = time.perf_counter()
        while not event.wait(0.5) and not self._done.is_set():  # a worker gone answers nothing
            pass
        self.wait_s += time.perf_counter() - start
        return answer[0] if answer else None

    def close(self) -> None:
        """Let the worker send everything recorded (the stage waits here); operations still
        held back are dropped."""
        start = time.perf_counter()
        self._out.put(json.dumps({"op": "close"}))
        self._out.put(None)
        self._done.wait()
        self._proc.wait()
        self.wait_s += time.perf_counter() - start

    # ---- the two pipe threads ---------------------------------------------------------------
    def _write(self) -> None:
        stdin = self._proc.stdin
        assert stdin is not None
        try:
            while (line := self._out.get()) is not None:
                stdin.write(line + "\n")
                stdin.flush()
            stdin.close()
        except (BrokenPipeError, OSError, ValueError):  # the worker is gone: _read says so
            pass

    def _read(self) -> None:
        stdout = self._proc.stdout
        assert stdout is not None
        for line in stdout:
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                continue  # not ours (a library printing to stdout)
            if "experiment_id" in message:
                self.experiment_id = message["experiment_id"]
            if "created" in message:
                self._ids[message["created"]] = message["run_id"]
                self._created.setdefault(message["created"], threading.Event()).set()
            if "answer" in message and message["answer"] in self._answers:
                event, answer = self._answers[message["answer"]]
                answer.append(message.get("found"))
                event.set()
            if "failure" in message:
                self.failure = message["failure"]
                self._release_waiters()
            if "busy_s" in message:
                self.busy_s = message["busy_s"]
        if self._proc.wait() != 0 and self.failure is None:
            self.failure = f"the tracking worker exited with status {self._proc.returncode}"
        self._release_waiters()
        self._done.set()

    def _release_waiters(self) -> None:
        for event in list(self._created.values()):
            event.set()  # nobody waits for a run id that will not come
        for event, _ in list(self._answers.values()):
            event.set()


def _worker_env(withheld: tuple[str, ...] = ()) -> dict[str, str]:
    """The stage's environment less `withheld`, with this steerops importable (it may run
    from a source tree the environment does not name)."""
    src = str(Path(steerops.__file__).resolve().parents[1])
    withheld = tuple(n for n in withheld if not n.startswith("MLFLOW_"))  # MLflow's own
    env = {k: v for k, v in os.environ.items() if k not in withheld}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    return env


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = f"{type(exc).__name__}: {text[0] if text else ''}"
    return line if len(line) <= 200 else line[:197] + "..."


def apply(client, experiment_id: str | None, ids: dict[str, str], op: dict[str, Any]) -> None:
    """Send one operation (also used to replay a journal)."""
    from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag

    kind, key = op["op"], op["run"]
    if kind == "start":
        if key in ids:
            return  # created before a failure; the journal knows its id
        tags = dict(op["tags"])
        if op.get("parent"):
            tags["mlflow.parentRunId"] = ids[op["parent"]]
        run = client.create_run(
            experiment_id, start_time=op["time"], tags=tags, run_name=op["name"]
        )
        ids[key] = run.info.run_id
        return
    run_id = ids[key]
    if kind == "log":
        params = [Param(k, v) for k, v in op["params"].items()]
        tags = [RunTag(k, v) for k, v in op["tags"].items()]
        metrics = [Metric(k, v, t, s or 0) for k, v, t, s in op["metrics"]]
        while params or tags or metrics:
            client.log_batch(
                run_id,
                metrics=metrics[:MAX_METRICS],
                params=params[:MAX_PER_BATCH],
                tags=tags[:MAX_PER_BATCH],
            )
            params, tags = params[MAX_PER_BATCH:], tags[MAX_PER_BATCH:]
            metrics = metrics[MAX_METRICS:]
    elif kind == "artifact":
        path = Path(op["path"])
        if path.is_dir():
            client.log_artifacts(run_id, str(path), op["dir"])
        elif path.is_file():
            client.log_artifact(run_id, str(path), op["dir"])
    elif kind == "lineage":
        from steerops.tracking.lineage import input_hash_tags

        hashes = input_hash_tags(Path(op["root"]), op["inputs"])
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in hashes.items()])
    elif kind == "table":
        client.log_table(run_id, op["data"], op["file"])
    elif kind == "input":
        dataset = Dataset(op["name"], op["digest"], "local", op["source"])
        context = [InputTag("mlflow.data.context", op["context"])]
        client.log_inputs(run_id, [DatasetInput(dataset, tags=context)])
    elif kind == "end":
        client.set_terminated(run_id, op["status"], end_time=op["time"])
    else:
        raise ValueError(f"unknown tracking operation {kind!r}")
