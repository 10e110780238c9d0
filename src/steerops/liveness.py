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


def _host() -> str:
    return socket.gethostname().replace(".", "_").replace("/", "_")


@cache
def node_tag() -> str:
    """A short name for this node, safe in a file name (no `.` or `/`): the host name, then
    hashes of the kernel boot and of the pid namespace (8 hex digits each), so two
    containers sharing a host name tell their files apart, and a file of an earlier boot is
    known as such (`tag_owner`)."""
    node = node_id()
    if node is None:
        return _host()
    _, boot, pid_ns = node.rsplit("/", 2)  # the boot id and "pid:[N]" hold no "/"
    return f"{_host()}-{_digest8(boot)}{_digest8(pid_ns)}"


def _digest8(text: str) -> str:
    import hashlib

    return hashlib.md5(text.encode()).hexdigest()[:8]


def tag_owner(tag: str) -> str:
    """Whose a file named with `tag` (a `node_tag`) is: "here" (this node: its pid says
    whether its writer runs; also a host-only tag of an older steerops), "gone" (this host
    before its last boot: its writer is dead), "other" (another container on this kernel,
    or another host: not ours to judge)."""
    mine, host = node_tag(), _host()
    if tag in (mine, host):
        return "here"
    ids, my_ids = tag.removeprefix(host + "-"), mine.removeprefix(host + "-")
    if ids == tag or my_ids == mine or len(ids) != 16:  # another host, or no boot to compare
        return "other"
    return "gone" if ids[:8] != my_ids[:8] else "other"


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
