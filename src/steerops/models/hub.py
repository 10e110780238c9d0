"""A hub id that is not on this machine: one line before any run opens, not a download that
fails after a minute of retries (HF's own, per file) inside a run.

A model in the local Hugging Face cache loads as it is. One that is not needs the hub: when
the hub cannot be used (HF_HUB_OFFLINE, or its endpoint does not answer), the variant's id
is refused, naming the local folder it was not found at too (a mistyped local path such as
`data/smolm2` has the shape of a hub id).
"""

from __future__ import annotations

import functools
import urllib.error
import urllib.request
from pathlib import Path

from steerops.errors import SteeropsError

PROBE_TIMEOUT_S = 5.0


def check_hub_id(repo_id: str, revision: str | None, local: Path, variant: str) -> None:
    """Refuse `repo_id` (not a local folder) when it is neither cached nor downloadable."""
    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(repo_id, "config.json", revision=revision), str):
        return
    where = f"not a local folder ({local}) and not in the Hugging Face cache"
    if "/" in repo_id and local.parent.is_dir():
        # `data/smolm2` next to a `data/` folder: a mistyped path, not an organisation
        raise SteeropsError(f"models.{variant}.id: model not found: {local}")
    if constants.HF_HUB_OFFLINE:
        raise SteeropsError(
            f"models.{variant}.id: {repo_id!r} is {where}, and HF_HUB_OFFLINE is set"
        )
    reason = _unreachable(constants.ENDPOINT)
    if reason:
        raise SteeropsError(
            f"models.{variant}.id: {repo_id!r} is {where}, and the hub "
            f"{constants.ENDPOINT} is not reachable ({reason})"
        )


@functools.lru_cache(maxsize=8)  # once per process: a stage resolves its variants often
def _unreachable(endpoint: str) -> str | None:
    """Why `endpoint` does not answer (None: it answers, whatever the status)."""
    try:
        with urllib.request.urlopen(endpoint, timeout=PROBE_TIMEOUT_S):
            return None
    except urllib.error.HTTPError:
        return None  # it answered
    except (OSError, ValueError) as exc:
        return str(getattr(exc, "reason", exc))
