"""Run a `steerops` command in a subprocess that kills itself with SIGKILL at a chosen point.

    STEEROPS_KILL=before:N   SIGKILL just before the N-th atomic rename into the outputs
                             folder (the new file is complete on disk, not yet in place)
    STEEROPS_KILL=after:N    just after the N-th such rename
    STEEROPS_KILL=call:N     at the N-th generation or extraction batch (mid-computation;
                             for the engine's decode loop, its N-th prefill)
    STEEROPS_KILL=term:N     SIGTERM (a scheduler's stop, which the stage handles) at the
                             N-th such call
    STEEROPS_KILL=group:N    the same SIGTERM to the whole process group (the stage and its
                             tracking process), as a scheduler sends it
    STEEROPS_KILL=count      no kill; write the number of renames and calls to
                             $STEEROPS_KILL_COUNTS at exit

Renames are counted only into $STEEROPS_KILL_UNDER (the outputs), so caches elsewhere do
not shift the points. The kill is SIGKILL, as from the OOM killer or a preempted node: no
Python cleanup, no `finally`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

HARNESS = r"""
import atexit, json, os, signal, sys
import torch
torch.set_num_threads(1)
spec = os.environ.get("STEEROPS_KILL", "")
under = os.path.realpath(os.environ["STEEROPS_KILL_UNDER"])
mode, _, n = spec.partition(":")
n = int(n or 0)
counts = {"renames": 0, "calls": 0, "renamed": []}

def die():
    os.kill(os.getpid(), signal.SIGKILL)

real_replace = os.replace
def replace(src, dst, *args, **kwargs):
    inside = os.path.realpath(dst).startswith(under + os.sep)
    if inside:
        counts["renames"] += 1
        counts["renamed"].append(os.path.relpath(os.path.realpath(dst), under))
        if mode == "before" and counts["renames"] == n:
            die()
    out = real_replace(src, dst, *args, **kwargs)
    if inside and mode == "after" and counts["renames"] == n:
        die()
    return out
os.replace = replace

import steerops.extract.engine as extraction
import steerops.models.decode_prefill as prefill
import steerops.models.generation as generation

def counted(module, name):
    real = getattr(module, name)
    def call(*args, **kwargs):
        counts["calls"] += 1
        if mode == "call" and counts["calls"] == n:
            die()
        if mode == "term" and counts["calls"] == n:
            os.kill(os.getpid(), signal.SIGTERM)
        if mode == "group" and counts["calls"] == n:
            os.killpg(os.getpgid(0), signal.SIGTERM)
        return real(*args, **kwargs)
    setattr(module, name, call)

counted(generation, "generate_batch")
counted(prefill.Prefiller, "read")  # every prefill, the loop's and the judge's
counted(extraction, "pool_batch")

if mode == "count":
    atexit.register(
        lambda: open(os.environ["STEEROPS_KILL_COUNTS"], "w").write(json.dumps(counts))
    )
from steerops.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run(argv: list[str], cwd: Path, under: Path, kill: str = "") -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "STEEROPS_KILL": kill,
        "STEEROPS_KILL_UNDER": str(under),
        "STEEROPS_KILL_COUNTS": str(cwd / "kill_counts.json"),
        "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
    }
    return subprocess.run(
        [sys.executable, "-c", HARNESS, *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        start_new_session=True,  # its own process group: `group` signals only it
    )


def killed(result: subprocess.CompletedProcess) -> bool:
    return result.returncode == -signal.SIGKILL


def terminated(result: subprocess.CompletedProcess) -> bool:
    """Stopped by SIGTERM through the stage's own handling (exit 128 + 15)."""
    return result.returncode == 128 + signal.SIGTERM
