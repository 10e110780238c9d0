"""MLflow lineage tags agree with DVC: the same MD5 for files and folders, inside or outside
the repository, whether dvc.lock recorded them or not."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from steerops.tracking.lineage import dataset, dvc_md5, input_hash_tags

DVC = [sys.executable, "-m", "dvc"]


def _tree(folder: Path) -> Path:
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("alpha\n")
    (folder / "sub" / "b.bin").write_bytes(bytes(range(256)) * 3)
    (folder / "sub" / "c.json").write_text('{"x": 1}')
    return folder


def test_dvc_hashes_match_what_dvc_records(tmp_path):
    repo, outside = tmp_path / "repo", _tree(tmp_path / "outside")
    repo.mkdir()
    _tree(repo / "data")
    (repo / "one.txt").write_text("one file\n")
    subprocess.run([*DVC, "init", "--no-scm", "-q"], cwd=repo, check=True)
    stage = ["stage", "add", "-q", "-n", "s", "-d", "data", "-d", "one.txt", "-d", str(outside)]
    subprocess.run([*DVC, *stage, "echo done"], cwd=repo, check=True)
    subprocess.run([*DVC, "repro", "-q"], cwd=repo, check=True, capture_output=True)
    locked = {
        d["path"]: d["md5"]
        for d in yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["s"]["deps"]
    }
    # computed here, with no dvc.lock to read
    assert dvc_md5(repo / "data") == locked["data"]
    assert dvc_md5(repo / "one.txt") == locked["one.txt"]
    assert dvc_md5(outside) == locked[str(outside)]
    inputs = {"data": repo / "data", "file": repo / "one.txt", "outside": outside}
    with_lock = input_hash_tags(repo, inputs)
    (repo / "dvc.lock").unlink()
    without = input_hash_tags(repo, inputs)
    expected = {
        "dvc.hash.data": locked["data"],
        "dvc.hash.file": locked["one.txt"],
        "dvc.hash.outside": locked[str(outside)],
    }
    assert with_lock == without == expected


def test_lock_hash_wins_and_missing_inputs_are_skipped(tmp_path):
    _tree(tmp_path / "data")
    lock = {"stages": {"s": {"deps": [{"path": "data", "md5": "recorded.dir"}]}}}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    tags = input_hash_tags(tmp_path, {"data": tmp_path / "data", "gone": tmp_path / "nope"})
    assert tags == {"dvc.hash.data": "recorded.dir"}


def test_an_input_changed_since_dvc_lock_is_tagged_with_its_own_hash(tmp_path):
    """A file edited after dvc.lock was written (and read by a hand run) is tagged with what
    it holds now, not with the hash the lock recorded for its earlier content."""
    _tree(tmp_path / "data")
    lock = {"stages": {"s": {"deps": [{"path": "data", "md5": "recorded.dir"}]}}}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    edited = next(p for p in (tmp_path / "data").rglob("*") if p.is_file())
    edited.write_text("edited by hand\n")
    later = (tmp_path / "dvc.lock").stat().st_mtime + 5
    os.utime(edited, (later, later))
    tags = input_hash_tags(tmp_path, {"data": tmp_path / "data"})
    assert (
        tags == {"dvc.hash.data": dvc_md5(tmp_path / "data")} != {"dvc.hash.data": "recorded.dir"}
    )


def test_dataset_inputs_are_project_relative_with_a_content_digest(tmp_path):
    path = tmp_path / "traits" / "t" / "steering.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"questions": ["q"]}')
    found = dataset("t questions", path, "questions", tmp_path)
    assert found == {
        "name": "t questions",
        "digest": dvc_md5(path),
        "source": '{"uri": "traits/t/steering.json"}',
        "context": "questions",
    }
    assert dataset("x", tmp_path / "missing", "questions", tmp_path) is None
