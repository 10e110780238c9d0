"""How a run its process left open is ended: FINISHED when its work had finished.

A process killed (SIGKILL, a lost node) after writing its outputs but before closing its
MLflow run leaves the run RUNNING, and its outputs complete: the next run serves them. So a
stage may say, when it opens a run, which files its work writes last and the settings hash
each records (`done_when`; an extraction's metadata.json). When the run is found open with
its process gone (`worker` at once, `reconcile` at a later start), it is ended FINISHED at the
time of the last of those writes if every file records its hash and was written after the
run opened, else KILLED.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path

from steerops.tracking.names import MAX_TAG

DONE_WHEN = "steerops.done_when"  # tag: {"key": ..., "files": {path: hash}}
ENDED = "steerops.ended"  # tag: why a run was ended by reconciliation, not by its process
CLOCK_SLACK_S = 0.1
FINISHED_NOTE = (
    "its process was killed after its outputs were complete, before it closed this run "
    "(metrics it logs at the end are missing)"
)


def done_when(outputs: Mapping[str | Path, str], key: str = "settings_hash") -> dict[str, str]:
    """The tag of a run whose work is finished once each JSON file in `outputs` records its
    hash under `key` in a write after the run opened (a forced or repairing rerun with the
    same settings finds the earlier run's files holding that hash already). Paths are
    absolute (only this node's processes settle the run), under their common folder; a tag
    too long for MLflow is left out (such a run ends KILLED, as one without it)."""
    files = [Path(path).resolve() for path in outputs]
    root = Path(os.path.commonpath(files)) if files else Path("/")
    if len(files) == 1:
        root = root.parent
    spec = {
        "key": key,
        "root": str(root),
        "files": {
            str(p.relative_to(root)): v for p, v in zip(files, outputs.values(), strict=True)
        },
        # file times come from the kernel's coarse clock, up to a tick behind this one
        "since": time.time() - CLOCK_SLACK_S,
    }
    tag = json.dumps(spec, sort_keys=True)
    return {DONE_WHEN: tag} if len(tag) <= MAX_TAG else {}


def finished_at(tags: Mapping[str, str]) -> float | None:
    """When the work of a run with `tags` finished (epoch seconds of its last output
    write); None when it did not, or the run named no outputs."""
    try:
        spec = json.loads(tags[DONE_WHEN])
        root, since = Path(spec["root"]), float(spec["since"])
        times = []
        for name, value in spec["files"].items():
            path = root / name
            if json.loads(path.read_text()).get(spec["key"]) != value:
                return None
            times.append(path.stat().st_mtime)
    except (KeyError, TypeError, ValueError, AttributeError, OSError):
        return None
    if not times or min(times) < since:  # a file the run did not write (yet)
        return None
    return max(times)


def left_open(tags: Mapping[str, str], now_ms: int) -> tuple[str, int, dict[str, str]]:
    """(status, end time in ms, tags to add) for a run whose process is gone."""
    done = finished_at(tags)
    if done is None:
        return "KILLED", now_ms, {}
    return "FINISHED", int(done * 1000), {ENDED: FINISHED_NOTE}
