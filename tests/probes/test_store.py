"""A finished probe run is reused only while its files hold what they were written with."""

from __future__ import annotations

import json

import numpy as np

from steerops.probes.store import (
    find_run,
    manifest_md5,
    new_run_id,
    record_invocation,
    run_damage,
    write_run,
)


def _manifest(key: str, protocol: str = "holdout") -> dict:
    return {
        "run_id": "20261206T000000Z-" + key[:8],
        "key": key,
        "config": {"protocol": protocol},
        "best_layer": 0,
        "best_final_r": 0.868,
        "best_sweep_r": 0.9,
        "layers": {"0": {"alpha": 10.0, "final_r": 0.868}},
    }


def test_a_run_whose_manifest_was_edited_is_trained_again(tmp_path, capsys):
    manifest = _manifest("abcdef0123")
    run = write_run(tmp_path, manifest["run_id"], {0: (np.ones(3), 0.5)}, manifest)
    written = json.loads((run / "manifest.json").read_text())
    assert written["manifest_md5"] == manifest_md5(written)
    assert run_damage(run) is None and find_run(tmp_path, "abcdef0123") == run
    # a figure edited by hand (or bit rot): the run would print r outside its own interval
    (run / "manifest.json").write_text(json.dumps({**written, "best_final_r": 0.968}))
    assert "does not match the MD5 it was written with" in run_damage(run)
    record_invocation(tmp_path, written, reused=False)
    record_invocation(tmp_path, written, reused=True)  # indexed twice: said once
    capsys.readouterr()
    assert find_run(tmp_path, "abcdef0123") is None
    assert capsys.readouterr().err.count("training it again") == 1
    # laid out otherwise, the same figures: still the run that was written
    (run / "manifest.json").write_text(json.dumps(written, indent=4, sort_keys=True))
    assert run_damage(run) is None
    # a run written before the hash was kept: its weights alone are checked
    older = {k: v for k, v in written.items() if k != "manifest_md5"}
    (run / "manifest.json").write_text(json.dumps(older))
    assert run_damage(run) is None


def test_a_run_whose_predictions_changed_is_trained_again(tmp_path):
    """predictions.csv is checked against the MD5 the manifest records, as the weights are."""
    from steerops.probes.store import PREDICTIONS, predictions_csv

    manifest = _manifest("0123abcdef")
    rows = [{"layer": 0, "task_id": "t1", "part": "final", "score": 1.5, "target": 1.5}]
    rows[0]["prediction"] = 1.25
    text = predictions_csv(rows)
    assert text == "layer,task_id,part,score,target,prediction\n0,t1,final,1.5,1.5,1.25\n"
    run = write_run(tmp_path, manifest["run_id"], {0: (np.ones(3), 0.5)}, manifest, text)
    assert (run / PREDICTIONS).read_text() == text and run_damage(run) is None
    (run / PREDICTIONS).write_text(text.replace("1.25", "9.25"))
    assert run_damage(run) == f"{PREDICTIONS} does not match the MD5 in manifest.json"
    (run / PREDICTIONS).unlink()
    assert run_damage(run) == f"{PREDICTIONS} does not match the MD5 in manifest.json"


def test_the_run_index_names_an_out_of_fold_r_as_such(tmp_path):
    for protocol, name, other in (("holdout", "final_r", "oof_r"), ("cv", "oof_r", "final_r")):
        root = tmp_path / protocol
        record_invocation(root, _manifest("abcdef0123", protocol), reused=False)
        [entry] = [json.loads(x) for x in (root / "runs" / "runs.jsonl").read_text().splitlines()]
        assert entry[name] == 0.868 and other not in entry


def test_a_manifest_hashes_as_its_file_writes_it():
    """NaN is written as null and numpy numbers as numbers: the run read back is intact."""
    from steerops.io import json_text

    manifest = {"r": float("nan"), "n": np.int64(3), "x": [np.float32(0.5)]}
    read_back = json.loads(json_text(manifest))
    assert manifest_md5(manifest) == manifest_md5(read_back)


def test_a_run_with_a_nan_figure_is_reused(tmp_path):
    manifest = _manifest("fedcba9876") | {"best_sweep_r": float("nan")}
    run = write_run(tmp_path, manifest["run_id"], {0: (np.ones(3), 0.5)}, manifest)
    assert run_damage(run) is None


def test_a_repeat_finished_in_the_same_second_gets_its_own_run_id(tmp_path, monkeypatch):
    """Two identical trainings started together: the second's run is written beside the
    first's, not refused (its training lost) or put in its place."""
    import steerops.probes.store as store

    gmtime = store.time.gmtime
    monkeypatch.setattr(store.time, "gmtime", lambda *a: gmtime(1_796_000_000))
    # taken together (both trainings done before either writes), written in either order
    ids = [new_run_id(tmp_path, "abcdef0123") for _ in range(3)]
    for run_id in reversed(ids):
        write_run(tmp_path, run_id, {0: (np.ones(3), 0.5)}, _manifest("abcdef0123"))
    base = ids[0]
    assert base.endswith("Z-abcdef01") and ids[1:] == [base + "-2", base + "-3"]
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == sorted(ids)
    assert all((tmp_path / "runs" / i / "manifest.json").is_file() for i in ids)
    # a training that fails after taking its id gives it back
    from steerops.probes.store import drop_run_id

    failed = new_run_id(tmp_path, "abcdef0123")
    assert failed == base + "-4"
    drop_run_id(tmp_path, failed)
    assert not (tmp_path / "runs" / failed).exists()
    drop_run_id(tmp_path, ids[0])  # a written run is never removed
    assert (tmp_path / "runs" / ids[0] / "manifest.json").is_file()
