"""A search study as optuna-dashboard shows it, read through the dashboard's own web API: every
trial's feasibility, the objective's name, the study's settings in words, and, through
`steerops dashboard`, the best feasible trial as "Best Trial" although an infeasible trial
has the top value."""

from __future__ import annotations

import json
import wsgiref.util

import optuna
import pytest
from optuna.trial import TrialState
from optuna_dashboard._app import create_app  # a dev dependency: no skip when it is absent
from synthetic import MIN_COH, SOURCE, SyntheticEvaluator, open_study

from steerops.errors import SteeropsError
from steerops.search.loop import run_search
from steerops.search.storage import SEARCH_VERDICT


def _api(storage, path: str) -> dict:
    app = create_app(storage)
    environ: dict = {}
    wsgiref.util.setup_testing_defaults(environ)
    environ.update(PATH_INFO=path, REQUEST_METHOD="GET")
    status: list[str] = []
    body = b"".join(app(environ, lambda s, headers, exc=None: status.append(s)))
    assert status[0].startswith("200"), status
    return json.loads(body)


@pytest.fixture
def searched(tmp_path):
    """A finished study whose top value is infeasible: the synthetic trait keeps rising past
    the coherence cliff, and a known result at coherence 16.7 has the largest delta."""
    study = open_study(tmp_path, startup_trials=3)
    assert study.add_known(2, 2.9, 29.0, 99.0, 16.7, 94.0, 4)
    run_search(study, SyntheticEvaluator(["q"]), SOURCE, 8, 4, "positive", progress=False, poll_s=0)
    return study, f"sqlite:///{tmp_path / 'optuna.db'}"


@pytest.mark.parametrize("opened_by", ["optuna-dashboard", "steerops dashboard"])
def test_the_dashboard_sees_feasibility_names_and_settings(searched, opened_by):
    """Plain optuna-dashboard shows each trial's `feasible` attr; `steerops dashboard` also
    its constraint value (stored by `trial.set_constraint`, shown in the dashboard's form)."""
    from optuna.storages import RDBStorage

    from steerops.search.storage import dashboard_storage

    study, url = searched
    # what `optuna-dashboard sqlite:///optuna.db` opens, or `steerops dashboard`
    storage = RDBStorage(url) if opened_by == "optuna-dashboard" else dashboard_storage(url)
    sid = storage.get_study_id_from_name("s")
    detail = _api(storage, f"/api/studies/{sid}")
    assert detail["objective_names"] == ["trait_delta"]
    attrs = {a["key"]: a["value"] for a in detail["user_attrs"]}
    assert attrs["constraint"].startswith(f"coherence_mean >= {MIN_COH:g}")
    assert "trait delta" in attrs["objective"]
    complete = [t for t in detail["trials"] if t["state"] == "Complete"]
    records = {r.number: r for r in study.records()}
    assert len(complete) >= 9
    for trial in complete:
        record = records[trial["number"]]
        shown = {a["key"]: a["value"] for a in trial["user_attrs"]}
        assert shown["feasible"] == str(record.feasible)
        if opened_by == "steerops dashboard":
            (violation,) = trial["constraints"]
            assert violation == pytest.approx(MIN_COH - record.coherence_mean)
    top = max(complete, key=lambda t: t["values"][0])
    top_attrs = {a["key"]: a["value"] for a in top["user_attrs"]}
    assert top_attrs["feasible"] == "False"  # the top value is infeasible


def test_trials_carry_the_constraint_optunas_samplers_read(searched):
    """`trial.set_constraint`'s named form: what GPSampler and TPESampler read as the
    trial's constraints, one per trial."""
    study, _ = searched
    records = {r.number: r for r in study.records()}
    complete = study.study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) >= 9
    for trial in complete:
        assert trial.constraints == {
            "coherence": pytest.approx(MIN_COH - records[trial.number].coherence_mean)
        }


def test_steerops_dashboard_shows_the_best_feasible_trial_as_best(searched):
    from steerops.search.storage import dashboard_storage

    study, url = searched
    storage = dashboard_storage(url)
    detail = _api(storage, f"/api/studies/{storage.get_study_id_from_name('s')}")
    (best,) = detail["best_trials"]
    feasible = [r for r in study.records() if r.feasible and r.state == "complete"]
    expected = max(feasible, key=lambda r: r.trait_delta)
    assert best["number"] == expected.number and best["constraints"][0] <= 0
    assert max(r.trait_delta for r in study.records() if r.trait_delta is not None) > (
        expected.trait_delta
    )  # ...while a higher, infeasible value exists


def test_the_trial_the_search_reported_is_best(searched):
    """Once the search has chosen (its own rule: an effect beyond the interval, ties to the
    more coherent and smaller coefficient), `steerops dashboard` shows that trial as best;
    when nothing qualified, Optuna's rule again."""
    from steerops.search.storage import dashboard_storage

    study, url = searched
    feasible = sorted(
        (r for r in study.records() if r.feasible and r.state == "complete"),
        key=lambda r: r.trait_delta,
    )
    assert len(feasible) >= 2
    storage = dashboard_storage(url)
    sid = storage.get_study_id_from_name("s")
    study.record_choice(feasible[0].number, "ok", True)  # not the top value
    (best,) = _api(storage, f"/api/studies/{sid}")["best_trials"]
    assert best["number"] == feasible[0].number
    verdict = {a["key"]: a["value"] for a in best["user_attrs"]}[SEARCH_VERDICT]
    assert verdict == "the search's choice; its verdict: ok"
    # nothing chosen: the trial shown is no choice, and says so
    study.record_choice(None, "no effect", False)
    best = storage.get_best_trial(sid)
    assert best.number == feasible[-1].number
    assert best.user_attrs[SEARCH_VERDICT] == (
        "not a choice: the search chose nothing (no effect); Optuna's best"
    )
    # a study extended after its choice (a rerun with more trials): Optuna's rule until the
    # search chooses again among all of them
    study.record_choice(feasible[0].number, "ok", True)
    assert study.add_known(2, 0.31, 3.1, 10.0, 99.0, 1.0, 4)  # feasible, below the top
    best = storage.get_best_trial(sid)
    assert best.number == feasible[-1].number
    assert best.user_attrs[SEARCH_VERDICT].startswith("Optuna's best (the search has not")
    # the study of its finalisation claims is no study of configs: not listed
    names = [s["study_name"] for s in _api(storage, "/api/studies")["study_summaries"]]
    assert names == ["s"] and "s:finalise" in optuna.get_all_study_names(url)


def test_with_no_feasible_trial_the_least_infeasible_is_best(tmp_path):
    from steerops.search.storage import dashboard_storage

    study = open_study(tmp_path)
    study.add_known(2, 2.5, 25.0, 90.0, 30.0, 85.0, 4)
    study.add_known(2, 2.0, 20.0, 60.0, 50.0, 55.0, 4)
    storage = dashboard_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    best = storage.get_best_trial(storage.get_study_id_from_name("s"))
    assert best.params["coefficient"] == 2.0


def test_a_sqlite_uri_mode_url_opens_its_file_read_only(tmp_path):
    """`sqlite:///file:PATH?mode=ro&uri=true` (sqlite's URI mode, read-only) names PATH, not
    a missing file called `file:PATH`."""
    from steerops.search.storage import dashboard_storage

    open_study(tmp_path)
    storage = dashboard_storage(f"sqlite:///file:{tmp_path / 'optuna.db'}?mode=ro&uri=true")
    assert storage.get_study_id_from_name("s") is not None
    with pytest.raises(SteeropsError, match="no study database at"):
        dashboard_storage(f"sqlite:///file:{tmp_path / 'none.db'}?mode=ro&uri=true")


def test_the_dashboard_command_serves_the_default_study(tmp_path, monkeypatch):
    import optuna_dashboard

    from steerops.cli import main
    from steerops.search.storage import DashboardRDBStorage

    open_study(tmp_path)  # optuna.db next to the params file
    (tmp_path / "params.yaml").write_text("experiment: d\n")
    served = {}
    monkeypatch.setattr(
        optuna_dashboard, "run_server", lambda storage, host, port: served.update(s=storage)
    )
    assert main(["dashboard", "--params", str(tmp_path / "params.yaml"), "--port", "9"]) == 0
    assert isinstance(served["s"], DashboardRDBStorage)
    assert served["s"].get_study_id_from_name("s") is not None


def test_stopping_the_dashboard_is_not_an_interrupted_stage(tmp_path, monkeypatch, capsys):
    """Ctrl-C or SIGTERM is how the server is stopped: exit 0, no hint to resume."""
    import optuna_dashboard

    from steerops.cli import main

    open_study(tmp_path)
    (tmp_path / "params.yaml").write_text("experiment: d\n")

    def serve(storage, host, port):
        raise KeyboardInterrupt

    monkeypatch.setattr(optuna_dashboard, "run_server", serve)
    assert main(["dashboard", "--params", str(tmp_path / "params.yaml")]) == 0
    captured = capsys.readouterr()
    assert "dashboard: stopped" in captured.out and "resume" not in captured.err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "99999"], "--port: 99999 is not a port (1-65535)"),
        (["--port", "-1"], "--port: -1 is not a port"),
        ([], "search.storage: no study database at sqlite:///"),
        (["--storage", "journal:absent.log"], "no study database at journal:"),
    ],
)
def test_the_dashboard_refuses_a_bad_port_or_a_missing_study_in_one_line(
    tmp_path, monkeypatch, capsys, argv, message
):
    """One line and exit 2, no traceback, and no empty study database left behind."""
    import optuna_dashboard

    from steerops.cli import main

    (tmp_path / "params.yaml").write_text("experiment: d\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(optuna_dashboard, "run_server", lambda *a, **k: pytest.fail("served"))
    assert main(["dashboard", "--params", str(tmp_path / "params.yaml"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_an_address_the_server_cannot_bind_is_named_in_one_line(tmp_path, capsys):
    """A port another process holds: the error names the flags, not only the system's
    words. (A real bind, on this machine only: the server never starts.)"""
    import socket

    from steerops.cli import main

    open_study(tmp_path)
    (tmp_path / "params.yaml").write_text("experiment: d\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = ["dashboard", "--params", str(tmp_path / "params.yaml"), "--port", str(port)]
        assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(
        f"steerops dashboard: error: --host 127.0.0.1 --port {port}: cannot serve there ("
    ), err
