"""The process that sends a stage's tracking operations to MLflow (see `sink`, which starts
it with its signals already set). It reads operations as JSON lines on stdin and answers
on stdout: {"experiment_id"}, {"created", "run_id"} per run, {"failure"} once, {"busy_s"}
at the end. It ignores Ctrl-C and outlives a first SIGTERM (the stage ends its runs
itself); when its input ends without
{"op": "close"}, the stage died, and it ends the stage's open runs: FINISHED when the outputs
a run named are complete (`completion`), else KILLED.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

from steerops.io import write_json
from steerops.liveness import this_worker
from steerops.redact import shown_url
from steerops.tracking.completion import left_open
from steerops.tracking.reconcile import OWNER_FILE
from steerops.tracking.sink import apply, now_ms, one_line


class Worker:
    def __init__(self, config: dict[str, Any]):
        self.uri, self.experiment = config["uri"], config["experiment"]
        self.description = config["description"]
        self.journal_dir = Path(config["journal_dir"])
        self.client: Any = None
        self.experiment_id: str | None = None
        self.ids: dict[str, str] = {}
        self.open_runs: list[str] = []
        self.run_tags: dict[str, dict[str, str]] = {}  # what each run was opened with
        self.pending: list[dict[str, Any]] = []
        self.failure: str | None = None
        self.busy_s = 0.0

    def serve(self, lines) -> None:
        self._timed(self._open)
        closed = False
        for line in lines:
            op = json.loads(line)
            if op["op"] == "close":
                closed = True
                break
            self.handle(op)
        if not closed:  # the stage is gone without closing its runs
            for key in reversed(self.open_runs):
                status, end, tags = left_open(self.run_tags.get(key, {}), now_ms())
                if tags:
                    self.handle(
                        {"op": "log", "run": key, "params": {}, "metrics": [], "tags": tags}
                    )
                self.handle({"op": "end", "run": key, "status": status, "time": end})
        if self.pending:
            self._write_journal()
        say(busy_s=round(self.busy_s, 3))

    def handle(self, op: dict[str, Any]) -> None:
        if op["op"] == "ask":  # a question, not a record: answered, never journalled
            say(answer=op["id"], found=self._finished_run_tagged(op["tag"], op["value"]))
            return
        if self.failure is not None:
            self.pending.append(self._frozen(op))
            return
        if not self._timed(apply, self.client, self.experiment_id, self.ids, op):
            self.pending.append(self._frozen(op))
            return
        if op["op"] == "start":
            self.open_runs.append(op["run"])
            self.run_tags[op["run"]] = op["tags"]
            say(created=op["run"], run_id=self.ids[op["run"]])
        elif op["op"] == "end" and op["run"] in self.open_runs:
            self.open_runs.remove(op["run"])

    def _finished_run_tagged(self, tag: str, value: str) -> bool | None:
        """Whether the experiment holds a FINISHED run tagged `tag`=`value` (None: the store
        cannot say)."""
        if self.failure is not None or self.client is None or self.experiment_id is None:
            return None
        quoted = value.replace("'", "\\'")
        query = f"tags.`{tag}` = '{quoted}' and attributes.status = 'FINISHED'"
        start = time.perf_counter()
        try:
            return bool(self.client.search_runs([self.experiment_id], query, max_results=1))
        except Exception:  # noqa: BLE001 - a question unanswered; the run's logging goes on
            return None
        finally:
            self.busy_s += time.perf_counter() - start

    def _open(self) -> None:
        from steerops.tracking.reconcile import reconcile
        from steerops.tracking.store import experiment_id, open_client

        self.client = open_client(self.uri)
        self.experiment_id = experiment_id(self.client, self.experiment, self.uri, self.description)
        say(experiment_id=self.experiment_id)
        reconcile(self.client, self.uri, self.journal_dir)

    def _timed(self, fn, *args) -> bool:
        """Run `fn`; False (and the failure said, once) when MLflow failed."""
        start = time.perf_counter()
        try:
            fn(*args)
            return True
        except Exception as exc:  # noqa: BLE001 - any MLflow failure: journal it, one line
            self._fail(exc)
            return False
        finally:
            self.busy_s += time.perf_counter() - start

    def _fail(self, exc: Exception) -> None:
        self.failure = one_line(exc)
        self.journal = self.journal_dir / (
            f"pending-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.json"
        )
        print(
            f"steerops: warning: MLflow tracking at {shown_url(self.uri)} failed "
            f"({self.failure}); local results are unaffected and the runs are logged on the "
            f"next start (kept in {self.journal})",
            file=sys.stderr,
            flush=True,
        )
        say(failure=self.failure)

    def _frozen(self, op: dict[str, Any]) -> dict[str, Any]:
        """`op` as the journal must keep it: sent at the next start, it must log what the
        run had now, not what is there then (a later run may write over the file, or
        change an input): an artifact is copied beside the journal, input hashes are
        taken now."""
        if op["op"] == "artifact":
            source = Path(op["path"])
            files = self.journal.with_suffix(".files")
            copy = files / str(len(self.pending)) / source.name
            try:
                if not files.exists():  # whose copies: swept if this worker dies unjournalled
                    files.mkdir(parents=True)
                    write_json(files / OWNER_FILE, this_worker())
                if source.is_dir():
                    shutil.copytree(source, copy)
                elif source.is_file():
                    copy.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(source, copy)
                else:
                    return op
            except OSError:  # kept as a path: logged as it is then rather than lost
                return op
            return {**op, "path": str(copy)}
        if op["op"] == "lineage":
            from steerops.tracking.lineage import input_hash_tags

            try:
                tags = input_hash_tags(Path(op["root"]), op["inputs"])
            except OSError:
                return op
            return {"op": "log", "run": op["run"], "params": {}, "metrics": [], "tags": tags}
        return op

    def _write_journal(self) -> None:
        write_json(
            self.journal,
            {
                "uri": shown_url(self.uri),  # no credentials on disk: matched without them
                "experiment": self.experiment,
                "description": self.description,
                "ids": self.ids,
                "ops": self.pending,
            },
        )


def say(**message: Any) -> None:
    try:
        print(json.dumps(message), flush=True)
    except (BrokenPipeError, OSError):  # the stage is gone; nobody listens
        pass


def _outlive_once(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def main() -> int:
    # Ctrl-C and a scheduler's SIGTERM reach the whole process group: the stage handles
    # them and still sends its last runs' ends here, so this process outlives the first
    # SIGTERM and ends when its stdin closes (a second SIGTERM ends it at once).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _outlive_once)
    # its settings are its input's first line (the URI may hold credentials: not in argv)
    Worker(json.loads(sys.stdin.readline())).serve(sys.stdin)
    return 0


if __name__ == "__main__":
    sys.exit(main())
