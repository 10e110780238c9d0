"""Artifact I/O: permissions follow the umask, JSON is standard JSON, user text is UTF-8 or
one clear line."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest
import torch

from steerops.errors import SteeropsError
from steerops.extract.store import write_streamed
from steerops.io import (
    atomic_folder,
    iter_jsonl,
    json_text,
    read_json,
    read_text,
    save_tensors,
    write_json,
    write_jsonl,
    write_text,
)


@pytest.fixture
def umask():
    """Set the process umask for one test, restoring it after."""
    saved = os.umask(0o022)
    os.umask(saved)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    yield set_mask
    os.umask(saved)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002, 0o077])
def test_every_writer_respects_the_umask(tmp_path, umask, mask):
    umask(mask)
    writers = {
        "a.txt": lambda p: write_text(p, "x"),
        "b.json": lambda p: write_json(p, {"a": 1}),
        "c.jsonl": lambda p: write_jsonl(p, [{"a": 1}]),
        "d.safetensors": lambda p: save_tensors(p, {"t": torch.ones(2)}),
        "e.safetensors": lambda p: write_streamed(
            p, [("t", (2,), torch.float32)], lambda name: torch.ones(2)
        ),
    }
    for name, write in writers.items():
        write(tmp_path / name)
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~mask, name
    # Rewriting over an existing file gives the same mode, not the temporary file's 0600.
    write_json(tmp_path / "b.json", {"a": 2})
    assert stat.S_IMODE((tmp_path / "b.json").stat().st_mode) == 0o666 & ~mask


def test_non_finite_numbers_are_written_as_null(tmp_path):
    value = {
        "nan": float("nan"),
        "inf": float("inf"),
        "np": np.float32("-inf"),
        "array": np.array([1.5, np.nan]),
        "tensor": torch.tensor([2.0, float("inf")]),
        "scalar": torch.tensor(float("nan")),
        "ok": [1, 2.5, np.int64(3)],
    }
    write_json(tmp_path / "a.json", value)
    write_jsonl(tmp_path / "a.jsonl", [value])

    def strict(text: str):
        return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard {c}"))

    expected = {
        "nan": None,
        "inf": None,
        "np": None,
        "array": [1.5, None],
        "tensor": [2.0, None],
        "scalar": None,
        "ok": [1, 2.5, 3],
    }
    assert strict((tmp_path / "a.json").read_text()) == expected
    assert strict((tmp_path / "a.jsonl").read_text()) == expected
    assert json_text({"b": 1, "a": 2}) == '{"a": 2, "b": 1}'


def test_text_that_is_not_utf8_is_one_line_naming_file_and_line(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_bytes(b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n')
    with pytest.raises(SteeropsError, match=r"prompts\.jsonl:2: not UTF-8 text"):
        list(iter_jsonl(path))
    with pytest.raises(SteeropsError, match=r"prompts\.jsonl:2: not UTF-8 text"):
        read_text(path)
    (tmp_path / "x.json").write_bytes(b'{"a": "\xff"}')
    with pytest.raises(SteeropsError, match=r"x\.json:1: not UTF-8 text \(byte 7\)"):
        read_json(tmp_path / "x.json")


def test_an_atomic_folder_replaces_the_old_one_whole_or_not_at_all(tmp_path, umask):
    umask(0o022)
    dest = tmp_path / "world"
    with atomic_folder(dest) as building:
        write_text(building / "a.txt", "old")
        write_text(building / "gone.txt", "old")
    assert stat.S_IMODE(dest.stat().st_mode) == 0o755
    with pytest.raises(KeyboardInterrupt), atomic_folder(dest) as building:
        write_text(building / "a.txt", "half")
        raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["world"]  # nothing left beside
    assert (dest / "a.txt").read_text() == "old" and (dest / "gone.txt").exists()
    with atomic_folder(dest) as building:
        write_text(building / "a.txt", "new")
    assert sorted(p.name for p in dest.iterdir()) == ["a.txt"]  # no file of the old one
    assert (dest / "a.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["world"]


def test_an_atomic_folder_moves_the_old_one_aside_before_putting_the_new_one_in(
    tmp_path, monkeypatch
):
    """Stopped between its two renames (a kill there skips every cleanup), the writer has
    deleted nothing: the old folder lies whole beside, where the next writer puts it back
    (`test_a_folder_a_killed_writer_had_moved_aside_is_dropped_or_put_back`)."""
    import os

    dest = tmp_path / "world"
    with atomic_folder(dest) as building:
        write_text(building / "a.txt", "old")
    real = os.replace

    def stopped(src, dst):
        if str(src).endswith(".building"):  # the new folder's rename into place
            raise SystemExit("killed")
        return real(src, dst)

    monkeypatch.setattr("steerops.io.os.replace", stopped)
    with pytest.raises(SystemExit), atomic_folder(dest) as building:
        write_text(building / "a.txt", "new")
    [kept] = tmp_path.glob(".world.*.old/world")
    assert (kept / "a.txt").read_text() == "old" and not dest.exists()


@pytest.mark.parametrize("writer", ["atomic_path", "atomic_folder"])
def test_what_a_killed_writer_was_building_is_removed_by_the_next_write(tmp_path, writer):
    """SIGKILL skips every cleanup: the next write of the same file or folder removes what
    the dead writer left, and never what a live one is building."""
    import signal
    import subprocess
    import sys

    dest = tmp_path / "world"
    code = (
        f"import sys, time; from steerops.io import {writer}\n"
        f"with {writer}(sys.argv[1]) as b:\n"
        "    print(b, flush=True); time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code, str(dest)], stdout=subprocess.PIPE)
    assert child.stdout is not None
    left = tmp_path / child.stdout.readline().decode().strip()
    if writer == "atomic_folder":
        (left / "half.txt").write_text("half")

    def write() -> None:
        if writer == "atomic_folder":
            with atomic_folder(dest) as building:
                write_text(building / "a.txt", "new")
        else:
            write_text(dest, "new")

    write()
    assert left.exists()  # its writer lives
    child.send_signal(signal.SIGKILL)
    child.wait()
    write()
    assert not left.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["world"]


@pytest.mark.parametrize("replaced", [True, False])
def test_a_folder_a_killed_writer_had_moved_aside_is_dropped_or_put_back(tmp_path, replaced):
    """Killed between its two renames, a writer leaves the old folder aside and none in
    place: the next writer puts it back; killed after them, the aside copy is dropped."""
    import socket
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # a pid no live process has
    host = socket.gethostname().replace(".", "_")
    dest = tmp_path / "world"
    aside = tmp_path / f".world.{host}.{child.pid}.k3y_9.old"
    (aside / "world").mkdir(parents=True)
    (aside / "world" / "a.txt").write_text("previous")
    if replaced:
        dest.mkdir()
        (dest / "a.txt").write_text("new")
    with pytest.raises(KeyboardInterrupt), atomic_folder(dest):
        raise KeyboardInterrupt
    assert (dest / "a.txt").read_text() == ("new" if replaced else "previous")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["world"]


def test_a_damaged_jsonl_line_is_one_error_naming_file_and_line(tmp_path):
    from steerops.errors import SteeropsError
    from steerops.io import read_jsonl

    path = tmp_path / "runs.jsonl"
    path.write_text('{"run_id": "a"}\n\n{"run_id": "b"}\nnot json\n')
    with pytest.raises(SteeropsError, match=r"runs\.jsonl:4: malformed JSON line"):
        read_jsonl(path)
    path.write_text('{"run_id": "a"}\n\n{"run_id": "b"}\n')
    assert read_jsonl(path) == [{"run_id": "a"}, {"run_id": "b"}]


def test_a_folder_that_cannot_be_made_is_one_line_before_any_work(tmp_path, monkeypatch):
    """--out under a folder this user cannot write (a read-only mount, another's folder) is
    refused by the checks, not found when the tracking store or the first output is made."""
    from pathlib import Path

    from steerops import io

    locked = tmp_path / "locked"
    locked.mkdir()
    real = os.access
    monkeypatch.setattr(io.os, "access", lambda p, mode: Path(p) != locked and real(p, mode))
    with pytest.raises(SteeropsError) as err:
        io.check_folder_target(locked / "run" / "deeper", "--out")
    assert (
        str(err.value) == f"--out: {locked} is not writable, so {locked}/run/deeper cannot be made"
    )
    io.check_folder_target(tmp_path / "free" / "run", "--out")  # writable: no error


@pytest.mark.parametrize("whose", ["earlier boot", "other container", "other host"])
def test_a_temporary_is_judged_by_the_node_its_name_tags(tmp_path, whose):
    """A temporary's name tags its writer's node (host, boot, pid namespace). One written on
    this host before its last boot is a dead writer's whatever its pid (a crash leaves
    them: its folder moved aside is put back); one of another container on this kernel, or
    of another host, is not this node's to judge, even with no such pid here."""
    import os

    from steerops.liveness import node_tag

    mine = node_tag()
    host, _, ids = mine.rpartition("-")
    assert len(ids) == 16, mine  # Linux: the boot and pid namespace are read from /proc
    tag = {
        "earlier boot": f"{host}-{'0' * 8}{ids[8:]}",
        "other container": f"{host}-{ids[:8]}{'0' * 8}",
        "other host": f"elsewhere-{ids}",
    }[whose]
    dest = tmp_path / "world"
    aside = tmp_path / f".world.{tag}.{os.getpid()}.k3y_9.old"  # a pid alive here
    (aside / "world").mkdir(parents=True)
    (aside / "world" / "a.txt").write_text("previous")
    with pytest.raises(KeyboardInterrupt), atomic_folder(dest):
        raise KeyboardInterrupt
    if whose == "earlier boot":
        assert (dest / "a.txt").read_text() == "previous" and not aside.exists()
    else:
        assert not dest.exists() and (aside / "world" / "a.txt").is_file()


def test_a_figure_whose_write_fails_is_closed_and_leaves_nothing(tmp_path):
    """A full disk mid-plot: the error goes up, the old PNG stays, no temporary is left and
    the figure is closed (a report run drawing hundreds would hold each open)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from steerops.io import save_png

    path = tmp_path / "x.png"
    fig = plt.figure()
    save_png(fig, path)
    good = path.read_bytes()
    assert fig.number not in plt.get_fignums()

    fig = plt.figure()

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    fig.savefig = full_disk
    with pytest.raises(OSError, match="No space"):
        save_png(fig, path)
    assert fig.number not in plt.get_fignums()
    assert path.read_bytes() == good and sorted(p.name for p in tmp_path.iterdir()) == ["x.png"]
