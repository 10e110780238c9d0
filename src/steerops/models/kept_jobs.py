"""Generations an interrupted run finished, kept so its rerun decodes only the rest.

    <file>   {"key": ..., "jobs": [[prompt index, rollout, new token ids], ...], "jobs_md5": ...,
              "max_rows": the row limit the last batch was decoded under}

`generate_responses` rewrites the file (atomically: a kill leaves the last whole one) after
every batch, and on a rerun under the same `key` (the hash of everything the tokens depend
on) computes only the jobs it lacks. Batches finish in their planned order; the rerun plans
them as the run did and splits them at the row limit the run had lowered itself to after
running out of memory, so its batches, and the seeds they are sampled with, are the run's
from where it stopped: the rerun's tokens are the uninterrupted run's. A file of other
settings, or one that no longer matches its MD5, is ignored (and replaced by the rerun's).
"""

from __future__ import annotations

import json
from pathlib import Path

from steerops.errors import SteeropsError
from steerops.io import read_json, text_md5, write_json

Job = tuple[int, int]  # (prompt index, rollout)


class KeptJobs:
    def __init__(self, path: Path, key: str, fresh: bool = False):
        """`fresh` (--force): forget what the file holds."""
        self.path, self.key = Path(path), key
        self.jobs: dict[Job, list[int]] = {}
        self.max_rows: int | None = None  # the row limit the run had lowered itself to
        self.served = 0  # jobs a run took from the file instead of decoding them
        if fresh:
            self.drop()
        else:
            self._read()

    def _read(self) -> None:
        try:
            kept = read_json(self.path)
        except (OSError, ValueError, SteeropsError):
            return
        if not isinstance(kept, dict) or kept.get("key") != self.key:
            return
        jobs, limit = kept.get("jobs"), kept.get("max_rows")
        if not isinstance(jobs, list) or _md5(jobs, limit) != kept.get("jobs_md5"):
            return
        self.jobs = {(int(i), int(r)): list(ids) for i, r, ids in jobs}
        self.max_rows = limit if isinstance(limit, int) and limit > 0 else None

    def add(self, done: dict[Job, list[int]], max_rows: int | None) -> None:
        """Keep newly decoded jobs, decoded under the row limit `max_rows` (the file is
        rewritten whole)."""
        if not done:
            return
        self.jobs.update(done)
        self.max_rows = max_rows
        jobs = [[i, r, ids] for (i, r), ids in sorted(self.jobs.items())]
        write_json(
            self.path,
            {"key": self.key, "jobs": jobs, "max_rows": max_rows, "jobs_md5": _md5(jobs, max_rows)},
        )

    def drop(self) -> None:
        """Forget the file once what it kept is written whole elsewhere."""
        self.path.unlink(missing_ok=True)


def _md5(jobs: list, max_rows: int | None) -> str:
    return text_md5(json.dumps([jobs, max_rows], sort_keys=True))
