"""What earlier runs left behind, settled when a stage next opens the store: the journal
of a run whose tracking failed is sent, and a run left RUNNING by a process that is gone
(killed, or its machine rebooted) is ended: FINISHED when the outputs it named are complete
(`completion`), else KILLED.

A run records its process in tags (`steerops.node`, `steerops.pid`, `steerops.pid_start`),
so only runs of this node whose process has ended are touched; a run another machine holds
is left to that machine.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time
from pathlib import Path

from steerops.io import write_text
from steerops.liveness import is_gone, node_id, node_tag, tag_owner, this_worker
from steerops.tracking.completion import left_open
from steerops.tracking.sink import apply, one_line

NODE, PID, PID_START = "steerops.node", "steerops.pid", "steerops.pid_start"


OWNER_FILE = "owner.json"  # in a journal's `.files`: the worker that copied them
REPLAYING = "replaying"  # a claimed journal: pending-X.replaying-<node>-<pid>-<start>
DAMAGED = ".damaged"  # a journal that cannot be read, kept for a person


def reconcile(client, uri: str, journal_dir: Path) -> None:
    replay_journals(client, uri, journal_dir)  # first: a replay ends its runs properly
    remove_orphaned_copies(journal_dir)
    end_killed_runs(client)


def remove_orphaned_copies(journal_dir: Path) -> list[Path]:
    """Remove artifact copies no journal names: a worker copies an artifact when the run
    logs it but writes the journal when it ends, so one killed in between leaves them.
    Only copies whose worker ran on this node and is gone are touched."""
    removed = []
    for files in sorted(journal_dir.glob("pending-*.files")):
        stem = files.name[: -len(".files")]
        if any(p != files for p in journal_dir.glob(f"{stem}.*")):
            continue  # its journal (or a replay of it) is there
        try:
            owner = json.loads((files / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not ours to judge
        if isinstance(owner, dict) and is_gone(owner):
            shutil.rmtree(files, ignore_errors=True)
            removed.append(files)
    return removed


def replay_journals(client, uri: str, journal_dir: Path) -> None:
    from steerops.redact import shown_url

    _reclaim_stalled_replays(journal_dir)
    for path in sorted(journal_dir.glob("pending-*.json")):
        claimed = path.with_name(f"{path.stem}.{REPLAYING}-{_claim_tag()}")
        try:
            path.rename(claimed)  # one process replays a journal
        except OSError:
            continue
        try:
            data = _journal(claimed)
        except (OSError, ValueError) as exc:  # kept aside, with its artifacts, for a person
            claimed.rename(path.with_name(path.name + DAMAGED))
            print(
                f"steerops: warning: tracking journal {path} cannot be read ({one_line(exc)}); "
                f"kept as {path.name + DAMAGED}",
                file=sys.stderr,
            )
            continue
        if data["uri"] not in (uri, shown_url(uri)):  # another store's: left for it
            claimed.rename(path)
            continue
        _replay(client, uri, data, claimed, path)


def _journal(path: Path) -> dict:
    """A journal's content, checked for the fields a replay reads (ValueError if not)."""
    data = json.loads(path.read_text())
    fields = {"uri": str, "experiment": str, "ids": dict, "ops": list}
    if not isinstance(data, dict) or any(
        not isinstance(data.get(k), kind) for k, kind in fields.items()
    ):
        raise ValueError("not a tracking journal (uri, experiment, ids, ops)")
    return data


def _replay(client, uri: str, data: dict, claimed: Path, path: Path) -> None:
    """Send one claimed journal's records; what fails (the first failure on) is put back as
    the journal, for the next start."""
    from steerops.tracking.store import experiment_id

    ids, ops = data["ids"], data["ops"]
    done = 0
    try:
        exp = experiment_id(client, data["experiment"], uri, data.get("description", ""))
        for op in ops:
            apply(client, exp, ids, op)
            done += 1
    except Exception as exc:  # noqa: BLE001 - keep the rest for the next start
        write_text(claimed, json.dumps({**data, "ids": ids, "ops": ops[done:]}))
        claimed.rename(path)
        print(
            f"steerops: warning: {len(ops) - done} tracking records in {path} still "
            f"wait ({one_line(exc)})",
            file=sys.stderr,
        )
        return
    claimed.unlink()
    shutil.rmtree(path.with_suffix(".files"), ignore_errors=True)  # its artifacts
    print(
        f"steerops: logged {len(ops)} tracking records an earlier run left in {path}",
        file=sys.stderr,
    )


def _claim_tag() -> str:
    """Who replays a journal, in its claimed name: node, pid and process start."""
    me = this_worker()
    return f"{node_tag()}-{me['pid']}-{me['start']}"


def _reclaim_stalled_replays(journal_dir: Path) -> None:
    """Put back the journals a replay on this node (or on this host before its last boot)
    claimed and never finished (its process killed mid-replay): they are sent by this
    start. Records it had sent are sent again (its progress is not written as it goes), so
    MLflow may then hold a run twice, the first ended KILLED by `end_killed_runs`."""
    for claimed in sorted(journal_dir.glob(f"pending-*.{REPLAYING}-*")):
        stem, _, tag = claimed.name.partition(f".{REPLAYING}-")
        node, _, rest = tag.rpartition("-")
        node, _, pid = node.rpartition("-")
        owner = tag_owner(node)
        if owner == "other" or not pid.isdigit() or not rest.isdigit():
            continue  # another node's (or another steerops's) claim: not ours to judge
        if owner == "gone" or is_gone({"node": node_id(), "pid": int(pid), "start": int(rest)}):
            journal = claimed.with_name(f"{stem}.json")
            if not journal.exists():
                with contextlib.suppress(OSError):  # another start put it back first
                    claimed.rename(journal)


def end_killed_runs(client) -> list[str]:
    """End this node's RUNNING runs whose process is gone (FINISHED when their outputs are
    complete, else KILLED); their ids."""
    node = node_id()
    if node is None:
        return []
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return []
    quoted = node.replace("'", "\\'")
    runs = client.search_runs(
        experiments,
        filter_string=f"attributes.status = 'RUNNING' and tags.`{NODE}` = '{quoted}'",
        max_results=1000,
    )
    ended = []
    for run in runs:
        tags = run.data.tags
        try:
            holder = {"node": tags[NODE], "pid": int(tags[PID]), "start": int(tags[PID_START])}
        except (KeyError, ValueError):
            continue
        if is_gone(holder):
            status, end, extra = left_open(tags, int(time.time() * 1000))
            for key, value in extra.items():
                client.set_tag(run.info.run_id, key, value)
            client.set_terminated(run.info.run_id, status, end_time=end)
            ended.append(run.info.run_id)
    return ended
