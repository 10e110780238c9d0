"""Opening a study's storage: a fresh output folder, and storage URLs that cannot work."""

from __future__ import annotations

import threading

import optuna
import pytest

from steerops.errors import SteeropsError
from steerops.search.opening import check_storage
from steerops.search.storage import open_storage


@pytest.mark.parametrize("scheme", ["sqlite", "journal"])
def test_a_storage_file_in_a_folder_not_made_yet_is_created(tmp_path, scheme):
    # `search --out NEWDIR` put its study in NEWDIR/optuna.db before anything made NEWDIR.
    file = tmp_path / "new" / "deeper" / ("optuna.db" if scheme == "sqlite" else "study.log")
    storage = open_storage(f"{scheme}:///{file}", 30)
    optuna.create_study(study_name="s", storage=storage).optimize(lambda t: 1.0, n_trials=1)
    assert file.is_file()


def test_a_storage_folder_that_cannot_be_made_is_one_error_line(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(SteeropsError, match=r"^search.storage: cannot create .*file/sub"):
        open_storage(f"sqlite:///{tmp_path / 'file' / 'sub' / 'optuna.db'}", 30)


@pytest.mark.parametrize("damage", ["cut", "overwritten"])
def test_a_damaged_study_file_is_one_line_that_says_what_to_do(tmp_path, damage):
    file = tmp_path / "optuna.db"
    optuna.create_study(study_name="s", storage=f"sqlite:///{file}").optimize(
        lambda t: t.suggest_float("x", 0, 1), n_trials=20
    )
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2] if damage == "cut" else b"garbage" * 100)
    with pytest.raises(SteeropsError) as caught:
        check_storage(f"sqlite:///{file}", 30, "s", {})
    (line,) = str(caught.value).splitlines()
    assert line.startswith("search.storage: cannot open ")
    assert f"{file} is damaged: move it aside to start a new study" in line


def test_a_storage_that_cannot_connect_gets_no_damage_hint(tmp_path):
    with pytest.raises(SteeropsError) as caught:
        open_storage("bogus://x", 30)
    assert "damaged" not in str(caught.value)


class PausingLock:
    """A lock that, when the heartbeat thread leaves it the first time (its list of held
    trials copied), lets the test run in between before the thread goes on."""

    def __init__(self):
        self._lock = threading.Lock()
        self.copied, self.go_on = threading.Event(), threading.Event()

    def __enter__(self):
        self._lock.acquire()
        return self

    def __exit__(self, *exc):
        self._lock.release()
        if threading.current_thread().name == "steerops-heartbeat" and not self.copied.is_set():
            self.copied.set()
            assert self.go_on.wait(30)


@pytest.mark.parametrize("scheme", ["sqlite", "journal"])
def test_a_trial_released_while_its_heartbeat_is_due_stays_released(tmp_path, scheme):
    """`release` between the heartbeat thread's copy of the held trials and its write: the
    beat must not overwrite the handed-back record, or another node waits grace_s for it."""
    from optuna.study import StudyDirection

    from steerops.search.storage import LIFE

    file = tmp_path / ("optuna.db" if scheme == "sqlite" else "study.log")
    storage = open_storage(f"{scheme}:///{file}", 0.05)
    storage._held_lock = lock = PausingLock()
    study_id = storage.create_new_study([StudyDirection.MAXIMIZE], "s")
    trial_id = storage.create_new_trial(study_id)  # held: the heartbeat thread starts
    beater = storage._beater
    assert lock.copied.wait(30)  # the thread has the trial in its list, and writes next
    storage.release(trial_id)
    lock.go_on.set()
    beater.join(30)
    assert not beater.is_alive()
    assert storage.get_trial(trial_id).system_attrs[LIFE].get("released") is True
    assert storage.stale_trial_ids(study_id, grace_s=3600) == [trial_id]  # taken at once
