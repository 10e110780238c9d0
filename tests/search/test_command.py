"""`steerops search` opens its study storage before the model loads or an MLflow run opens: a
storage that cannot work is one error line and exit code 2, with no FAILED run left."""

from __future__ import annotations

import pytest

from steer_world import steer_params
from steerops.cli import main
from steerops.models import loading
from steerops.steering import session

FLAGS = ["--max-new-tokens", "6", "--layers", "1", "--trials", "1"]


def _refuse_model_loads(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the bad storage was refused")

    monkeypatch.setattr(loading, "load_model", refuse)
    monkeypatch.setattr(session, "load_model", refuse)


def _refused(tmp_path, toy_world, monkeypatch, capsys, extra: list[str]) -> str:
    """The one error line of `steerops search` with `extra` flags ({tmp}: tmp_path), after
    checking that it exits 2 with no model loaded, no MLflow run and no run folder."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    _refuse_model_loads(monkeypatch)
    params = steer_params(tmp_path, toy_world)
    argv = ["search", "--params", str(params), "--out", str(tmp_path / "run"), *FLAGS]
    capsys.readouterr()
    assert main([*argv, *(a.format(tmp=tmp_path) for a in extra)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert not (tmp_path / "mlflow.db").exists()  # no MLflow run was opened
    assert not (tmp_path / "run").exists()
    return err[0]


@pytest.mark.parametrize(
    "storage, message",
    [
        ("bogus://x", "--storage: cannot open bogus://x: "),
        ("journal://{tmp}/a_file/study.log", "--storage: folder {tmp}/a_file is not a folder"),
        # a typo'd folder is refused, not made (as root, anywhere)
        ("sqlite:///{tmp}/typo/dir/optuna.db", "--storage: folder {tmp}/typo/dir not found"),
        ("journal://{tmp}/typo/study.log", "--storage: folder {tmp}/typo not found"),
    ],
    ids=[
        "unknown-scheme",
        "journal-folder-is-a-file",
        "sqlite-folder-missing",
        "journal-folder-missing",
    ],
)
def test_a_storage_that_cannot_open_fails_before_loading_and_tracking(
    tmp_path, toy_world, monkeypatch, capsys, storage, message
):
    (tmp_path / "a_file").write_text("")
    line = _refused(tmp_path, toy_world, monkeypatch, capsys, ["--storage", storage])
    assert line.startswith(f"steerops search: error: {message.format(tmp=tmp_path)}"), line
    assert not (tmp_path / "typo").exists()
    assert line.endswith("(params: search.storage)")  # the flag, with the key it sets


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--enqueue", "9"], "enqueue: coefficient 9 is outside the searched range"),
        (["--known-results", "{tmp}/none.jsonl"], "--known-results: file not found"),
        (["--known-results", "{tmp}/bad.jsonl"], "bad.jsonl:1: malformed JSON line"),
        # a small trial search takes the first questions, as `steer --subset` does
        (["--subset", "1"], "under --subset 1 (steering.subset)"),
    ],
    ids=[
        "enqueue-outside-range",
        "known-results-missing",
        "known-results-not-jsonl",
        "subset-too-small-to-split",
    ],
)
def test_search_inputs_fail_before_loading_and_tracking(
    tmp_path, toy_world, monkeypatch, capsys, extra, message
):
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    assert message in _refused(tmp_path, toy_world, monkeypatch, capsys, extra)


def test_a_journal_in_a_folder_not_made_yet_passes_the_check(tmp_path):
    from steerops.search.opening import check_storage

    file = tmp_path / "new" / "study.log"
    check_storage(f"journal:///{file}", 30)
    assert file.parent.is_dir()


def test_a_sqlite_storage_passes_the_check_and_is_let_go(tmp_path):
    from steerops.search.opening import check_storage

    file = tmp_path / "optuna.db"
    check_storage(f"sqlite:///{file}", 30)
    check_storage(f"sqlite:///{file}", 30)  # opened again: nothing held it
    assert file.is_file()


def test_a_named_study_run_with_other_settings_fails_before_loading_and_tracking(
    tmp_path, toy_world, monkeypatch, capsys
):
    """`--study NAME` reused with another coefficient range: refused before a model loads or
    a run opens (it was refused only once the study opened, inside the tracking run)."""
    import optuna

    url = f"sqlite:///{tmp_path}/studies.db"
    study = optuna.create_study(storage=url, study_name="mine", direction="maximize")
    study.set_user_attr("settings", {"coef_max": 2.0, "min_coherence": 68.0})
    extra = ["--storage", url, "--study", "mine", "--coef-max", "3"]
    line = _refused(tmp_path, toy_world, monkeypatch, capsys, extra)
    assert "study 'mine' was run with coef_max=2.0, not 3.0" in line
    # so are the vectors, layers and sampler, known before the model loads too
    from steer_world import POSITION

    ran = {"coef_min": 0.0, "coef_max": 3.0, "min_coherence": 68.0, "method": "mean_diff"}
    ran |= {"position": POSITION, "component": "residual", "layers": [1]}  # FLAGS: --layers 1
    for other, flags, said in (
        ({"layers": [2]}, [], "layers=[2], not [1]"),
        ({"method": "probe"}, [], "method='probe', not 'mean_diff'"),
        ({}, ["--seed", "5"], "sampler_seed unset, not 5"),
        ({"sampler": "tpe"}, [], "sampler='tpe', not unset"),  # back to the default: refused
        ({"coherence_margin": 10.0}, [], "coherence_margin=10.0, not unset"),  # margin dropped
    ):
        study.set_user_attr("settings", {**ran, **other})
        line = _refused(tmp_path, toy_world, monkeypatch, capsys, [*extra, *flags])
        assert f"study 'mine' was run with {said}" in line, line


def test_a_margin_no_coherence_can_reach_fails_before_loading_and_tracking(
    tmp_path, toy_world, monkeypatch, capsys
):
    import yaml

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    _refuse_model_loads(monkeypatch)
    params = steer_params(tmp_path, toy_world)
    blocks = yaml.safe_load(params.read_text())
    blocks.setdefault("search", {})["coherence_margin"] = 40
    params.write_text(yaml.safe_dump(blocks, sort_keys=False))
    argv = ["search", "--params", str(params), "--out", str(tmp_path / "run"), *FLAGS]
    capsys.readouterr()
    assert main(argv) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "search.coherence_margin: 40 over the bar 68 asks coherence 108" in line
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "run").exists()
