"""`track(...)` opens a stage's MLflow run; the `Tracker` it yields records what the stage
logs, and a worker process (`sink.Sink`, `worker`) sends it.

A run is opened before the stage's work (its duration covers the work) and after the
stage has checked its inputs (a failing command opens no run). Params, metrics and tags are
kept per run and sent in one batch when the run ends; nested runs (`child`, `add_child`)
carry the stage's tags too, so filtering by stage, trait or method finds them.
"""

from __future__ import annotations

import contextlib
import getpass
import itertools
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from steerops.tracking import completion, names
from steerops.tracking.sink import Sink, now_ms

JOURNAL_DIR = ".steerops/tracking"  # next to the params file (`workspace.lasting_folder`)
_keys = itertools.count()


class Tracker:
    """One MLflow run (a no-op without a sink: tracking disabled)."""

    def __init__(
        self,
        sink: Sink | None = None,
        root: Path | None = None,
        inherited: Mapping[str, str] | None = None,
    ):
        self._sink, self._root = sink, root
        self.key = f"r{next(_keys)}"
        self._inherited = dict(inherited or {})  # the tags every nested run carries too
        self._params: dict[str, str] = {}
        self._tags: dict[str, str] = {}
        self._metrics: list[list[Any]] = []
        self._ended = False
        self.failure: str | None = None

    def fail(self, reason: str) -> None:
        """End this invocation's run FAILED although its block completes: the stage kept its
        outputs for a look but will exit with an error (`steerops.failure` says why)."""
        self.failure = reason
        self.set_tags({"steerops.failure": reason})

    @property
    def active(self) -> bool:
        return self._sink is not None

    @property
    def kept(self) -> bool:
        """Whether this run reaches MLflow (False: disabled, or held back and not kept)."""
        return self._sink is not None and not self._sink.holding

    def keep(self) -> None:
        """Log the invocation's run after all (see `track(..., held=True)`): its operations
        so far, stamped with their own times, and every one after."""
        if self._sink is not None:
            self._sink.release()

    def finished_run_tagged(self, tag: str, value: str) -> bool | None:
        """Whether an earlier run, FINISHED, carries `tag`=`value` in this store (None:
        tracking is off or failed, or the store cannot say)."""
        return self._sink.finished_run_tagged(tag, value) if self._sink is not None else None

    @property
    def run_id(self) -> str | None:
        """MLflow's id of this run (waits until the run exists; None if tracking failed)."""
        return self._sink.run_id(self.key) if self._sink else None

    def link(self) -> str | None:
        """Where to open this run in the MLflow UI (see `links.run_link`)."""
        from steerops.tracking.links import run_link

        run_id = self.run_id
        if self._sink is None or run_id is None or self._sink.experiment_id is None:
            return None
        return run_link(self._sink.uri, self._sink.experiment_id, run_id, self._root)

    # ---- recording ------------------------------------------------------------------------
    def log_params(self, params: Mapping[str, Any]) -> None:
        if self.active:
            self._params.update(names.params(params, self._root))

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        if self.active:
            now = now_ms()
            self._metrics += [[k, v, now, step] for k, v in names.metrics(metrics).items()]

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if self.active:
            self._tags.update(names.tags(tags, self._root))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.active and Path(path).exists():
            op = {"path": str(Path(path).resolve()), "dir": artifact_path}
            self._put("artifact", **op)

    def log_table(self, rows: list[Mapping[str, Any]], artifact_file: str) -> None:
        """Rows (dicts with the same keys) as a table the MLflow UI browses."""
        if self.active and rows:
            columns = list(rows[0])
            data = {c: [_cell(r.get(c)) for r in rows] for c in columns}
            self._put("table", data=data, file=artifact_file)

    def log_input(self, name: str, path: str | Path, context: str) -> None:
        """A dataset the run read (trait prompts, questions), by content digest."""
        from steerops.tracking.lineage import dataset

        if self.active:
            found = dataset(name, path, context, self._root or Path.cwd())
            if found is not None:
                self._put("input", **found)

    # ---- nested runs ----------------------------------------------------------------------
    @contextlib.contextmanager
    def child(
        self,
        name: str,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        start: float | None = None,
    ) -> Iterator[Tracker]:
        """A nested run (one per config, trial or cell) under this one, from `start` (epoch
        seconds; default now) to the end of the block."""
        if not self.active:
            yield self
            return
        child = self._nested(name, tags, int((start or time.time()) * 1000))
        if params:
            child.log_params(params)
        status = "FINISHED"
        try:
            yield child
        except KeyboardInterrupt:  # as its parent ends: interrupted, not failed
            status = "KILLED"
            raise
        except BaseException:
            status = "FAILED"
            raise
        finally:
            child.end(status)

    def add_child(
        self,
        name: str,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
        start: float | None = None,
        end: float | None = None,
    ) -> Tracker:
        """A finished nested run in one call; `start`/`end` (epoch seconds) give the span of
        the work it stands for (e.g. the batched generation its config was part of)."""
        now = time.time()
        if not self.active:
            return self
        child = self._nested(name, tags, int((start or now) * 1000))
        child.log_params(params or {})
        child.log_metrics(metrics or {})
        child.end("FINISHED", end or now)
        return child

    def _nested(self, name: str, tags: Mapping[str, Any] | None, start_ms: int) -> Tracker:
        child = Tracker(self._sink, self._root, self._inherited | names.tags(tags or {}))
        child._start(name, start_ms, parent=self)
        return child

    # ---- life -----------------------------------------------------------------------------
    def _start(self, name: str, start_ms: int, parent: Tracker | None = None) -> None:
        self._put(
            "start",
            parent=parent.key if parent else None,
            name=name,
            tags=self._inherited,
            time=start_ms,
        )

    def end(self, status: str = "FINISHED", at: float | None = None) -> None:
        if not self.active or self._ended:
            return
        self._ended = True
        if self._params or self._metrics or self._tags:
            self._put("log", params=self._params, metrics=self._metrics, tags=self._tags)
        end_ms = int(at * 1000) if at is not None else now_ms()
        self._put("end", status=status, time=end_ms)

    def _put(self, op: str, **fields: Any) -> None:
        assert self._sink is not None
        self._sink.put({"op": op, "run": self.key, **fields})

    def stats(self) -> dict[str, float]:
        """Seconds MLflow work took in the tracking process and the stage waited for it."""
        if self._sink is None:
            return {"busy_s": 0.0, "wait_s": 0.0}
        return {"busy_s": self._sink.busy_s, "wait_s": self._sink.wait_s}


def _cell(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return names.text(value)


def base_tags(params, stage: str, extra: Mapping[str, Any] | None) -> dict[str, str]:
    """What every run of this invocation carries (nested runs too)."""
    from steerops.liveness import this_worker
    from steerops.tracking.lineage import git_commit
    from steerops.tracking.reconcile import NODE, PID, PID_START

    holder = this_worker()
    commit, dirty = git_commit(params.root)
    folder = params.run_folder
    tags = {
        "steerops.stage": stage,
        "steerops.experiment": params.experiment,
        "steerops.run_folder": None if folder is None else names.relative(folder, params.root),
        NODE: holder["node"],
        PID: holder["pid"],
        PID_START: holder["start"],
        "mlflow.source.name": f"steerops {stage}",
        "mlflow.source.type": "LOCAL",
        "mlflow.source.git.commit": commit,
        "steerops.git_dirty": dirty if commit else None,
        # the params file as read: an untracked or edited one is not the commit's
        "steerops.params_file": params.file,  # project-relative, as every path tag
        "steerops.params_md5": params.file_md5,
        "mlflow.user": _user(),
        # `dvc exp run` names the experiment a stage runs in: its runs are found by it
        "steerops.dvc_experiment": os.environ.get("DVC_EXP_NAME"),
        "steerops.dvc_baseline_rev": os.environ.get("DVC_EXP_BASELINE_REV"),
        **(extra or {}),
    }
    return names.tags(tags, params.root)


def _user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


@contextlib.contextmanager
def track(
    params,
    stage: str,
    run_name: str,
    inputs: Mapping[str, str | Path] | None = None,
    tags: Mapping[str, Any] | None = None,
    description: str | None = None,
    datasets: Mapping[str, tuple[str | Path, str]] | None = None,
    done_when: Mapping[str | Path, str] | None = None,
    held: bool = False,
) -> Iterator[Tracker]:
    """Open an MLflow run for one stage invocation (a no-op if tracking is disabled).

    `inputs` ({name: path}) become `dvc.hash.<name>` tags; `datasets` ({name: (path,
    context)}) dataset inputs; `description` the run's note (default: the command line);
    `done_when` ({output file: settings hash}) the files whose hashes say the work finished,
    should the process die before the run is closed (`completion`). `held`: nothing reaches
    MLflow until `tracker.keep()`, for a stage that may find its work already done: a block
    left without it logs no run, unless it failed or was interrupted.
    The tracking store is checked first: an unreachable server is one error line, before
    the stage loads a model."""
    params.inputs_checked()  # e.g. say where a scratch run writes, now that its inputs passed
    if not params.tracking.enabled:
        yield Tracker()
        return
    from steerops.tracking.store import check_reachable, tracking_uri
    from steerops.workspace import lasting_folder

    uri = tracking_uri(params)
    check_reachable(uri)
    experiment = params.tracking.experiment or params.experiment
    sink = Sink(
        uri,
        experiment,
        f"steerops experiment {experiment!r}: one run per stage invocation (tag "
        "steerops.stage), nested runs per cell, config or trial",
        lasting_folder(params.root) / JOURNAL_DIR,
        held=held,
        withheld=(params.judge.api_key_env,),  # the judge's key: never sent to MLflow
    )
    status, started = "FINISHED", False
    try:  # the worker is running: whatever fails from here on still ends it
        shared = base_tags(params, stage, tags)
        tracker = Tracker(sink, params.root, shared)
        own = {"mlflow.note.content": description or command_line(stage)}
        if done_when:  # the run's own, not inherited by its nested runs
            own.update(completion.done_when(done_when))
        if os.environ.get("MLFLOW_RUN_ID"):  # inside `mlflow run`: nest under the project's run
            own["mlflow.parentRunId"] = os.environ["MLFLOW_RUN_ID"]
        tracker._inherited = shared
        sink.put(
            {
                "op": "start",
                "run": tracker.key,
                "parent": None,
                "name": run_name,
                "tags": shared | names.tags(own, params.root),
                "time": now_ms(),
            }
        )
        started = True
        if inputs:  # hashed in the tracking process: a model folder can take a while
            tracker._put(
                "lineage", root=str(params.root), inputs={k: str(v) for k, v in inputs.items()}
            )
        for name, (path, context) in (datasets or {}).items():
            tracker.log_input(name, path, context)
        yield tracker
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except BaseException:
        status = "FAILED"
        raise
    finally:
        if started:
            if status == "FINISHED" and tracker.failure is not None:
                status = "FAILED"
            if status != "FINISHED":
                tracker.keep()  # a failed or interrupted run is always on record
            tracker.end(status)
        sink.close()


def command_line(stage: str) -> str:
    from steerops.cli import invocation

    return invocation() or f"steerops {stage}"
