"""The study lock: exclusive across processes, re-entrant in a thread, and nothing left
held or open when taking it fails (Ctrl-C while queued behind another worker)."""

from __future__ import annotations

import fcntl
import threading

import pytest

from steerops.search import locks
from steerops.search.locks import StudyLock


def _held_elsewhere(path) -> bool:
    """Whether another open file description can take the lock now (flock locks are per
    open file, so a second open in this process stands in for another worker)."""
    with open(path, "a") as other:
        try:
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(other, fcntl.LOCK_UN)
        return False


def test_the_lock_is_held_until_the_outermost_exit(tmp_path):
    path = tmp_path / "study.db.lock"
    lock = StudyLock("file", "s", str(path))
    with lock:
        assert _held_elsewhere(path)
        with lock:  # re-entrant: the same thread does not wait on itself
            assert _held_elsewhere(path)
        assert _held_elsewhere(path)
    assert not _held_elsewhere(path)


def test_an_interrupt_while_queued_leaves_nothing_held_or_open(tmp_path, monkeypatch):
    """The file is closed and the thread lock released: another thread then takes the lock
    at once (left taken, every later `with lock:` of the process would hang)."""
    path = tmp_path / "study.db.lock"
    lock = StudyLock("file", "s", str(path))
    opened = []
    real_open, real_flock = open, fcntl.flock

    def recorded_open(*args, **kwargs):
        handle = real_open(*args, **kwargs)
        opened.append(handle)
        return handle

    def interrupted(handle, op):
        if op == fcntl.LOCK_EX:
            raise KeyboardInterrupt
        return real_flock(handle, op)

    monkeypatch.setattr("builtins.open", recorded_open)
    monkeypatch.setattr(locks.fcntl, "flock", interrupted)
    with pytest.raises(KeyboardInterrupt), lock:
        pass
    monkeypatch.undo()
    assert len(opened) == 1 and opened[0].closed

    entered = threading.Event()

    def other_thread():
        with lock:
            entered.set()

    worker = threading.Thread(target=other_thread, daemon=True)
    worker.start()
    assert entered.wait(5), "the lock stayed taken after the interrupt"
    worker.join(5)
    assert not _held_elsewhere(path)
