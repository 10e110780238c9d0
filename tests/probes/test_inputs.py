"""`steerops probe inputs`: the record through which DVC re-runs `probe_train` when the
optional confounds file changes (DVC cannot list a null path among a stage's deps)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

from steerops.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _params(tmp_path, confounds: str | None) -> list[str]:
    params = {
        "paths": {"out": str(tmp_path / "outputs")},
        "models": {"base": {"id": "m"}, "instruct": {"id": "m"}},
        "probes": {"confounds": confounds},
        "tracking": {"enabled": False},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return ["probe", "inputs", "--params", str(tmp_path / "params.yaml")]


def test_the_record_follows_the_confounds_files_content(tmp_path):
    record = tmp_path / "outputs" / "probe_inputs.json"
    assert main(_params(tmp_path, None)) == 0
    assert json.loads(record.read_text()) == {"confounds": None}
    confounds = tmp_path / "confounds.csv"
    confounds.write_text("task_id,topic\nt1,math\nt2,code\n")
    argv = _params(tmp_path, "confounds.csv")  # relative to the params file
    assert main(argv) == 0
    written = json.loads(record.read_text())["confounds"]
    # as params spell it: the same record in any checkout, so DVC re-runs nothing there
    assert written == {
        "path": "confounds.csv",
        "md5": hashlib.md5(confounds.read_bytes()).hexdigest(),
    }
    stamp = record.stat().st_mtime_ns
    assert main(argv) == 0
    assert record.stat().st_mtime_ns == stamp  # by hand, an unchanged record is not rewritten
    confounds.write_text("task_id,topic\nt1,math\nt2,math\n")  # one level edited
    assert main(argv) == 0
    assert json.loads(record.read_text())["confounds"]["md5"] != written["md5"]


def test_a_missing_confounds_file_is_one_error_line(tmp_path, capsys):
    """(Run by hand, the last good record stays; under DVC the stage's output is gone, so
    `probe_train` cannot run on a stale one.)"""
    record = tmp_path / "outputs" / "probe_inputs.json"
    assert main(_params(tmp_path, None)) == 0
    before = record.read_text()
    capsys.readouterr()
    assert main(_params(tmp_path, "gone.csv")) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("steerops probe inputs: error: probes.confounds: file not found")
    assert str(tmp_path / "gone.csv") in line
    assert record.read_text() == before


def test_dvc_runs_the_record_every_time_and_probe_train_depends_on_it():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    record = "${paths.out}/probe_inputs.json"
    assert stages["probe_inputs"]["always_changed"] is True
    # after the stage that writes the probe world, whose confounds file it may read
    assert "${probes.tasks}" in stages["probe_inputs"]["deps"]
    assert [next(iter(o)) for o in stages["probe_inputs"]["outs"]] == [record]
    assert record in stages["probe_train"]["deps"]
