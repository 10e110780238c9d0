"""The one place that talks to MLflow.

Stages open a run with `track(...)` and log through the returned `Tracker`; with tracking
disabled the same calls are no-ops, so stage code has no `if tracking` branches. What a
stage logs is recorded and sent in batches by a worker process (`sink`, `worker`), so tracking
costs the stage little time and a failing server costs it none (the records wait in a
journal for the next start, `reconcile`). Runs are tagged with the DVC hashes of their
inputs, computed as DVC computes them (`lineage`), so an MLflow run and a DVC revision join.

    tracker.py   track(), Tracker: runs, nested runs, params, metrics, tags, artifacts
    names.py     one naming scheme and value format for every stage
    store.py     tracking URI, reachability check, opening the store and the experiment
    sink.py      the stage's end of the worker process that sends operations
    worker.py    that process: sends them to MLflow, journals what could not be sent
    completion.py  whether a killed run's outputs are complete (FINISHED or KILLED)
    reconcile.py journals sent and killed runs ended, at the next start
    lineage.py   dvc.hash tags, git commit, dataset inputs
    links.py     the run's page in the MLflow UI
"""

from steerops.tracking.lineage import dvc_md5, files_tag, input_hash_tags, model_input
from steerops.tracking.store import check_reachable, tracking_uri
from steerops.tracking.tracker import Tracker, track

__all__ = [
    "Tracker",
    "track",
    "tracking_uri",
    "check_reachable",
    "input_hash_tags",
    "files_tag",
    "dvc_md5",
    "model_input",
]
