"""A tracking journal left by a failed run is sent by a later start, whatever stopped the
replay before: a store that failed, a replaying process killed, a journal cut short."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from steerops.tracking.reconcile import REPLAYING, replay_journals
from steerops.tracking.store import EXPERIMENT_KIND

URI = "sqlite:////tmp/nowhere/mlflow.db"


class Client:
    """The MLflow client calls a replay of run starts makes; `down` fails the experiment
    lookup, as a store that does not answer does."""

    def __init__(self, down: bool = False):
        self.down, self.created = down, []

    def get_experiment_by_name(self, name):
        if self.down:
            raise ConnectionError("store not answering")
        return SimpleNamespace(
            experiment_id="1", tags=dict([EXPERIMENT_KIND]), artifact_location="x:/1"
        )

    def create_run(self, experiment_id, start_time, tags, run_name):
        self.created.append(run_name)
        return SimpleNamespace(info=SimpleNamespace(run_id=f"id{len(self.created)}"))


def _journal(folder, name="pending-a-1.json", runs=("late",)):
    ops = [
        {"op": "start", "run": f"r{i}", "parent": None, "name": n, "tags": {}, "time": 1}
        for i, n in enumerate(runs)
    ]
    path = folder / name
    path.write_text(json.dumps({"uri": URI, "experiment": "t", "ids": {}, "ops": ops}))
    return path


def test_a_store_that_fails_before_the_first_record_leaves_the_journal_for_the_next_start(
    tmp_path, capsys
):
    journal = _journal(tmp_path, runs=("late", "later"))
    replay_journals(Client(down=True), URI, tmp_path)
    assert journal.exists() and sorted(p.name for p in tmp_path.iterdir()) == [journal.name]
    assert "2 tracking records" in capsys.readouterr().err
    client = Client()
    replay_journals(client, URI, tmp_path)
    assert client.created == ["late", "later"] and not list(tmp_path.iterdir())


def test_a_journal_a_killed_replay_claimed_is_sent_by_the_next_start(tmp_path):
    journal = _journal(tmp_path)
    # a process of this node that claimed the journal and died mid-replay
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from steerops.tracking.reconcile import _claim_tag; print(_claim_tag())",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    claimed = journal.with_name(f"{journal.stem}.{REPLAYING}-{proc.stdout.strip()}")
    journal.rename(claimed)
    # one another node claimed (or a live process): not touched
    elsewhere = tmp_path / f"pending-b-2.{REPLAYING}-otherhost-1a2b3c4d-{1}-{5}"
    elsewhere.write_text("{}")
    client = Client()
    replay_journals(client, URI, tmp_path)
    assert client.created == ["late"] and not claimed.exists() and not journal.exists()
    assert elsewhere.exists()


@pytest.mark.parametrize("damage", ["cut short", "not a journal"])
def test_a_journal_cut_short_is_kept_aside_with_one_warning(tmp_path, capsys, damage):
    journal = _journal(tmp_path)
    journal.write_text(journal.read_text()[:40] if damage == "cut short" else "{}")
    (tmp_path / "pending-a-1.files").mkdir()  # its artifact copies stay with it
    for _ in range(2):
        replay_journals(Client(), URI, tmp_path)
    assert "cannot be read" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "pending-a-1.files",
        "pending-a-1.json.damaged",
    ]


def test_a_claim_made_before_this_host_rebooted_is_sent_and_a_live_one_is_left(tmp_path):
    """A replay cut off by a reboot left its claim tagged with the earlier boot: its writer
    is dead whatever its pid, so the next start sends it. One this very process holds
    (alive) stays claimed."""
    import os

    from steerops.liveness import node_tag
    from steerops.tracking.reconcile import _claim_tag

    host, _, ids = node_tag().rpartition("-")
    earlier = f"{host}-{'0' * 8}{ids[8:]}-{os.getpid()}-1"
    journal = _journal(tmp_path)
    journal.rename(journal.with_name(f"{journal.stem}.{REPLAYING}-{earlier}"))
    live = tmp_path / f"pending-b-2.{REPLAYING}-{_claim_tag()}"
    _journal(tmp_path, "pending-b-2.json", runs=("mine",)).rename(live)
    client = Client()
    replay_journals(client, URI, tmp_path)
    assert client.created == ["late"] and sorted(p.name for p in tmp_path.iterdir()) == [live.name]
