"""Which process holds a search trial or an MLflow run, and whether that process still runs.

A trial (or a run) records its process as (node, pid, start): `node` names one kernel boot
and process-id namespace, so two processes with the same node can see each other; `start` (the
process start time in clock ticks) tells a reused pid apart. A worker on the same node can
then tell at once that the holder of a trial is gone; a worker elsewhere waits for the
holder's heartbeat to go stale. Without /proc (not Linux) `node` is None and only the
heartbeat is used.
"""

from __future__ import annotations

import os
import socket
from functools import cache
from pathlib import Path

PROC = Path("/proc")


@cache
def node_id() -> str | None:
    """This process's node: host name, kernel boot and pid namespace (None without /proc)."""
    try:
        boot = (PROC / "sys/kernel/random/boot_id").read_text().strip()
        pid_ns = os.readlink(PROC / "self/ns/pid")
    except OSError:
        return None
    return f"{socket.gethostname()}/{boot}/{pid_ns}"


@cache
def node_tag() -> str:
    """A short name for this node, safe in a file name (no `.` or `/`): the host name and a
    hash of `node_id`, so two containers that share a host name (but not a pid namespace)
    tell their files apart."""
    import hashlib

    host = socket.gethostname().replace(".", "_").replace("/", "_")
    node = node_id()
    return host if node is None else f"{host}-{hashlib.md5(node.encode()).hexdigest()[:8]}"


def _stat(pid: int) -> list[str] | None:
    """The fields after the command name of /proc/PID/stat (None if there is no such pid)."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # the command name may hold spaces


def process_start(pid: int) -> int | None:
    fields = _stat(pid)
    return None if fields is None else int(fields[19])  # field 22: starttime


def this_worker() -> dict:
    """The identity recorded with the trials and runs this process holds."""
    pid = os.getpid()
    return {"node": node_id(), "pid": pid, "start": process_start(pid)}


def is_gone(worker: dict) -> bool:
    """True only when `worker` ran on this node and its process has ended (a zombie counts
    as ended); False when it runs, or when this node cannot tell."""
    if worker.get("node") is None or worker.get("node") != node_id():
        return False
    fields = _stat(int(worker["pid"]))
    if fields is None or fields[0] in ("Z", "X"):
        return True
    return int(fields[19]) != worker.get("start")
