"""Generations an interrupted run finished, kept so its rerun decodes only the rest.

    <file>   {"key": ..., "jobs": [[prompt index, rollout, new token ids], ...], "jobs_md5": ...}

`generate_responses` rewrites the file (atomically: a kill leaves the last whole one) after
every batch, and on a rerun under the same `key` (the hash of everything the tokens depend
on) computes only the jobs it lacks. Batches finish in their planned order and a batch's
missing jobs are decoded together, seeded as that batch was, so the rerun's tokens are the
uninterrupted run's. A file of other settings, or one that no longer matches its MD5, is
ignored (and replaced by the rerun's).
"""

from __future__ import annotations

import json
from pathlib import Path

from steerops.errors import SteeropsError
from steerops.io import read_json, text_md5, write_json

Job = tuple[int, int]  # (prompt index, rollout)


class KeptJobs:
    def __init__(self, path: Path, key: str, fresh: bool = False):
        """`fresh`: ignore what the file holds (it is replaced after the first batch)."""
        self.path, self.key = Path(path), key
        self.jobs: dict[Job, list[int]] = {} if fresh else self._read()
        self.served = 0  # jobs a run took from the file instead of decoding them

    def _read(self) -> dict[Job, list[int]]:
        try:
            kept = read_json(self.path)
        except (OSError, ValueError, SteeropsError):
            return {}
        if not isinstance(kept, dict) or kept.get("key") != self.key:
            return {}
        jobs = kept.get("jobs")
        if not isinstance(jobs, list) or _md5(jobs) != kept.get("jobs_md5"):
            return {}
        return {(int(i), int(r)): list(ids) for i, r, ids in jobs}

    def add(self, done: dict[Job, list[int]]) -> None:
        """Keep newly decoded jobs (the file is rewritten whole)."""
        if not done:
            return
        self.jobs.update(done)
        jobs = [[i, r, ids] for (i, r), ids in sorted(self.jobs.items())]
        write_json(self.path, {"key": self.key, "jobs": jobs, "jobs_md5": _md5(jobs)})

    def drop(self) -> None:
        """Forget the file once what it kept is written whole elsewhere."""
        self.path.unlink(missing_ok=True)


def _md5(jobs: list) -> str:
    return text_md5(json.dumps(jobs, sort_keys=True))
