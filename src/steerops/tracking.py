"""The one place that talks to MLflow.

Stages open a run with `track(...)` and log through the returned `Tracker`; with tracking
disabled the same calls are no-ops, so stage code has no `if tracking` branches. Runs are
tagged with the DVC hashes of their inputs (from dvc.lock when DVC recorded them, else the
same MD5 computed here) so an MLflow run and a DVC revision can be joined.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from steerops.io import tree_md5

_MAX_PARAM = 500  # MLflow rejects longer param values


class Tracker:
    def __init__(self, mlflow_module=None, run=None):
        self._mlflow = mlflow_module
        self.run = run

    @property
    def active(self) -> bool:
        return self._mlflow is not None

    @property
    def run_id(self) -> str | None:
        return self.run.info.run_id if self.run else None

    def log_params(self, params: dict[str, Any]) -> None:
        if self.active:
            clean = {k: _short(v) for k, v in _flatten(params).items()}
            self._mlflow.log_params(clean, run_id=self.run_id)

    def log_metrics(self, metrics: dict[str, float | None], step: int | None = None) -> None:
        if self.active:
            finite = {k: float(v) for k, v in metrics.items() if v is not None}
            self._mlflow.log_metrics(finite, step=step, run_id=self.run_id)

    def set_tags(self, tags: dict[str, Any]) -> None:
        if self.active:
            for k, v in tags.items():
                self._mlflow.MlflowClient().set_tag(self.run_id, k, _short(v))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if self.active and Path(path).exists():
            self._mlflow.log_artifact(str(path), artifact_path=artifact_path, run_id=self.run_id)

    @contextlib.contextmanager
    def child(self, name: str, params: dict[str, Any] | None = None) -> Iterator[Tracker]:
        """A nested run (one per config or trial) under this one."""
        if not self.active:
            yield self
            return
        with self._mlflow.start_run(run_name=name, nested=True, parent_run_id=self.run_id) as run:
            child = Tracker(self._mlflow, run)
            if params:
                child.log_params(params)
            yield child


def tracking_uri(params) -> str:
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    if params.tracking.uri:
        return params.tracking.uri
    return f"sqlite:///{(params.root / 'mlflow.db').resolve()}"


@contextlib.contextmanager
def track(
    params,
    stage: str,
    run_name: str,
    inputs: Mapping[str, str | Path] | None = None,
    tags: dict[str, Any] | None = None,
) -> Iterator[Tracker]:
    """Open an MLflow run for one stage invocation (no-op if tracking is disabled)."""
    if not params.tracking.enabled:
        yield Tracker()
        return
    import logging

    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    _set_uri_without_exporting(mlflow, tracking_uri(params))
    name = params.tracking.experiment or params.experiment
    if mlflow.get_experiment_by_name(name) is None:
        mlflow.create_experiment(name, artifact_location=(params.root / "mlartifacts").as_uri())
    mlflow.set_experiment(name)
    all_tags = {"steerops.stage": stage, "steerops.experiment": params.experiment}
    all_tags.update(input_hash_tags(params, inputs or {}))
    all_tags.update(tags or {})
    clean_tags = {k: _short(v) for k, v in all_tags.items()}
    with mlflow.start_run(run_name=run_name, tags=clean_tags) as run:
        yield Tracker(mlflow, run)


def _set_uri_without_exporting(mlflow, uri: str) -> None:
    # mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI, which would make the next
    # params file in this process (tests, sweeps) log into this one's store.
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


def input_hash_tags(params, inputs: Mapping[str, str | Path]) -> dict[str, str]:
    """`dvc.hash.<name>` tags: DVC's recorded MD5 of each input where dvc.lock has it."""
    locked = _dvc_lock_hashes(params.root)
    tags = {}
    for name, path in inputs.items():
        path = Path(path)
        if not path.exists():
            continue
        try:
            rel = path.resolve().relative_to(params.root.resolve()).as_posix()
        except ValueError:
            rel = None
        tags[f"dvc.hash.{name}"] = locked.get(rel) or tree_md5(path)
    return tags


def _dvc_lock_hashes(root: Path) -> dict[str, str]:
    lock = root / "dvc.lock"
    if not lock.exists():
        return {}
    try:
        data = yaml.safe_load(lock.read_text()) or {}
    except yaml.YAMLError:
        return {}
    hashes = {}
    for stage in (data.get("stages") or {}).values():
        for entry in (stage.get("deps") or []) + (stage.get("outs") or []):
            if "md5" in entry:
                hashes[entry["path"].rstrip("/")] = entry["md5"]
    return hashes


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= _MAX_PARAM else text[: _MAX_PARAM - 3] + "..."
