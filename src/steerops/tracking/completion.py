"""How a run its process left open is ended: FINISHED when its work had finished.

A process killed (SIGKILL, a lost node) after writing its outputs but before closing its
MLflow run leaves the run RUNNING, and its outputs complete: the next run serves them. So a
stage may say, when it opens a run, which files its work writes last and the settings hash
each records (`done_when`; an extraction's metadata.json). When the run is found open with
its process gone (`worker` at once, `reconcile` at a later start), it is ended FINISHED at the
time of the last of those writes if every file records its hash, else KILLED.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

DONE_WHEN = "steerops.done_when"  # tag: {"key": ..., "files": {path: hash}}
ENDED = "steerops.ended"  # tag: why a run was ended by reconciliation, not by its process
FINISHED_NOTE = (
    "its process was killed after its outputs were complete, before it closed this run "
    "(metrics it logs at the end are missing)"
)


def done_when(outputs: Mapping[str | Path, str], key: str = "settings_hash") -> dict[str, str]:
    """The tag of a run whose work is finished once each JSON file in `outputs` records its
    hash under `key` (absolute paths: only this node's processes settle the run)."""
    files = {str(Path(path).resolve()): value for path, value in outputs.items()}
    return {DONE_WHEN: json.dumps({"key": key, "files": files}, sort_keys=True)}


def finished_at(tags: Mapping[str, str]) -> float | None:
    """When the work of a run with `tags` finished (epoch seconds of its last output
    write); None when it did not, or the run named no outputs."""
    try:
        spec = json.loads(tags[DONE_WHEN])
        times = []
        for path, value in spec["files"].items():
            if json.loads(Path(path).read_text()).get(spec["key"]) != value:
                return None
            times.append(Path(path).stat().st_mtime)
    except (KeyError, TypeError, ValueError, AttributeError, OSError):
        return None
    return max(times, default=None)


def left_open(tags: Mapping[str, str], now_ms: int) -> tuple[str, int, dict[str, str]]:
    """(status, end time in ms, tags to add) for a run whose process is gone."""
    done = finished_at(tags)
    if done is None:
        return "KILLED", now_ms, {}
    return "FINISHED", int(done * 1000), {ENDED: FINISHED_NOTE}
