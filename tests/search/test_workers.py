"""Several `steerops search` processes on one study: shared work, one finaliser, and no trial
left behind by a killed worker (taken over as it stands, so a resumed study is the one an
uninterrupted search builds).

Each worker is a real subprocess with its own storage connection, driving the real study and
loop with the synthetic evaluator of test_search.py, on sqlite, Optuna's journal file and a
throwaway PostgreSQL server (tests/postgres.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from synthetic import MIN_COH, SOURCE, SyntheticEvaluator, record, summary_context

from postgres import postgres_server, postgres_url  # noqa: F401 - fixtures
from steerops.search.heldout import evaluate_heldout
from steerops.search.loop import LoopStats, run_search
from steerops.search.results import choose_best, selection_rows
from steerops.search.storage import open_storage
from steerops.search.store import write_heldout_responses
from steerops.search.study import SearchStudy, Space
from steerops.steering.configs import Config

TESTS = Path(__file__).parent
HELDOUT = ["h1", "h2", "h3"]


@pytest.fixture(params=["sqlite", "journal", "postgresql"])
def storage_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'optuna.db'}"
    if request.param == "journal":
        return f"journal://{tmp_path / 'study.journal'}"
    return request.getfixturevalue("postgres_url")


def open_url(url: str, **kw) -> SearchStudy:
    return SearchStudy(
        url, "s", Space(0.0, 3.0, (2,)), MIN_COH, {"layers": [2], "min_coherence": MIN_COH}, **kw
    )


class SlowEvaluator(SyntheticEvaluator):
    def __init__(self, questions, sleep_s: float):
        super().__init__(questions)
        self.sleep_s = sleep_s

    def evaluate(self, configs):
        time.sleep(self.sleep_s)
        results = super().evaluate(configs)
        for r in results:  # responses, as the held-out part writes them
            r.responses = [
                {"question": q, "response": f"{r.config.coefficient:.3f}"} for q in self.questions
            ]
        return results


def wait_for_all(folder: Path, n_workers: int, poll_s: float) -> None:
    """A barrier across worker processes: each marks itself ready in `folder`, then waits
    until all `n_workers` have."""
    (folder / f"ready-{os.getpid()}").touch()
    while len(list(folder.glob("ready-*"))) < n_workers:
        time.sleep(poll_s)


def worker(
    url: str,
    folder: str,
    target: int,
    batch: int,
    sleep_s: float,
    n_workers: int,
    heartbeat_s: int = 30,
    grace_s: int = 120,
    sampler: str = "tpe",
) -> None:
    """Subprocess entry: wait until every worker has opened the study, search, then finalise
    if this worker is the one to do it."""
    folder = Path(folder)
    study = open_url(
        url, sampler=sampler, startup_trials=2, heartbeat_s=heartbeat_s, grace_s=grace_s
    )
    for c in (0.5, 2.5):  # every worker enqueues the same points, as `search.enqueue` does
        study.enqueue(2, c)
    wait_for_all(folder, n_workers, poll_s=0.05)
    evaluator = SlowEvaluator(["q1", "q2"], sleep_s)
    stats = run_search(
        study, evaluator, SOURCE, target, batch, "positive", progress=False, poll_s=0.2
    )
    with study.finalising() as mine:
        if mine:
            rows = selection_rows(
                study.records(), SlowEvaluator(["q1", "q2"], 0.0), SOURCE, "positive", 0
            )
            chosen = choose_best(rows, MIN_COH)
            config = Config.single(SOURCE, chosen.layer, chosen.coefficient)
            held = evaluate_heldout(
                SlowEvaluator(HELDOUT, 0.0), config, "positive", 0, min_coherence=68.0
            )
            write_heldout_responses(folder, held)
    configs = [c for call in evaluator.calls for _, c, _ in call]
    print(
        json.dumps({"evaluated": stats.evaluated, "configs": configs, "finalised": mine}),
        flush=True,
    )


def start(entry: str, *args) -> subprocess.Popen:
    code = (
        f"import sys; sys.path[:0] = [{str(TESTS)!r}, {str(TESTS.parent)!r}]; "
        f"from test_workers import {entry}; {entry}(*{args!r})"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def finish(procs) -> list[dict]:
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        outs.append(json.loads(out.strip().splitlines()[-1]))
    return outs


@pytest.mark.parametrize(
    "storage_url,sampler", [("postgresql", "gp"), ("journal", "tpe")], indirect=["storage_url"]
)
def test_three_workers_share_one_study(storage_url, sampler, tmp_path):
    from optuna.trial import TrialState

    target = 10
    study = open_url(storage_url)
    for _ in range(2):  # two copies of one point, as two workers enqueueing at once leave
        study.study.enqueue_trial({"coefficient": 1.25}, user_attrs={"source": "enqueued"})
    outs = finish(
        [
            start("worker", storage_url, str(tmp_path), target, 2, 0.3, 3, 30, 120, sampler)
            for _ in range(3)
        ]
    )
    assert [o["finalised"] for o in outs].count(True) == 1  # exactly one finaliser ...
    responses = (tmp_path / "heldout_responses.jsonl").read_text().splitlines()
    assert sorted(json.loads(r)["question"] for r in responses) == HELDOUT  # ... with responses
    numbers = [n for o in outs for n in o["evaluated"]]
    configs = [c for o in outs for c in o["configs"]]
    assert len(numbers) == len(set(numbers)) == target  # no trial evaluated twice
    assert len(configs) == len(set(configs)) == target  # and no config either
    assert sum(bool(o["evaluated"]) for o in outs) >= 2  # the work was shared
    trials = study.study.get_trials(deepcopy=False)
    queued = [
        t.system_attrs["fixed_params"]["coefficient"]
        for t in trials
        if "fixed_params" in t.system_attrs and "retry_history" not in t.system_attrs
    ]
    assert set(queued) >= {0.5, 1.25, 2.5} and len(set(queued)) == 5  # 2 design + 3 enqueued
    for c in set(queued):  # every queued point evaluated exactly once
        assert configs.count(c) == 1
    assert study.n_done() == target and study.n_running() == 0
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == target
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]


def test_killed_worker_is_taken_over_at_once_on_this_node(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    killed = _kill_mid_batch(url, tmp_path)
    resumed = open_url(url, heartbeat_s=1, grace_s=3600)
    resumed.recover_stale()  # the holder's process has ended: no need to wait for the grace
    assert resumed.n_running() == 2 and resumed.free_slots(4) == 4  # running here now
    evaluator = SyntheticEvaluator(["q1", "q2"])
    run_search(resumed, evaluator, SOURCE, 4, 2, "positive", progress=False, poll_s=0.2)
    records = resumed.records()
    assert [(r.number, r.state) for r in records] == [(n, "complete") for n in range(4)]
    first_batch = sorted(c for _, c, _ in evaluator.calls[0])
    assert first_batch == pytest.approx(killed)  # evaluated first, as the same trials
    assert resumed.n_done() == 4 and resumed.n_running() == 0


def test_killed_worker_elsewhere_is_taken_over_after_the_grace_period(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    killed = _kill_mid_batch(url, tmp_path, node="elsewhere")
    patient = open_url(url, heartbeat_s=1, grace_s=3600)
    patient.recover_stale()  # another node's process cannot be checked: it might be alive
    assert patient.n_running() == 2 and patient.free_slots(4) == 2
    # a grace well past the time from the killed worker's last beat to the first look at
    # it (about 1.3 s on a loaded machine), so its trials are taken over after the new ones
    resumed = open_url(url, heartbeat_s=1, grace_s=5)
    evaluator = SyntheticEvaluator(["q1", "q2"])
    run_search(resumed, evaluator, SOURCE, 4, 2, "positive", progress=False, poll_s=0.2)
    # two free slots first, then, once the grace period is over, the taken-over ones
    taken = sorted(c for call in evaluator.calls[1:] for _, c, _ in call)
    assert taken == pytest.approx(killed)
    assert {r.state for r in resumed.records()} == {"complete"}
    assert resumed.n_done() == 4 and resumed.n_running() == 0


def evaluating_worker(url: str, folder: str, node: str | None) -> None:
    """Subprocess entry: start a batch of 2 whose evaluation never ends (killed by the test),
    optionally pretending to run on another node."""
    from steerops import liveness

    if node is not None:
        liveness.node_id = lambda: node
    study = open_url(url, sampler="tpe", startup_trials=2, heartbeat_s=1, grace_s=2)
    (Path(folder) / "ready").touch()
    run_search(study, SlowEvaluator(["q1", "q2"], 600.0), SOURCE, 4, 2, "positive", progress=False)


def _kill_mid_batch(url: str, folder: Path, node: str | None = None) -> list[float]:
    """Kill a worker while it evaluates its first batch; the batch's coefficients."""
    proc = start("evaluating_worker", url, str(folder), node)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if (folder / "ready").exists():
                watcher = open_url(url, heartbeat_s=1, grace_s=3600)
                # both running with their coefficients (a trial runs a moment before its
                # params are stored, and records leave out a trial without them)
                running = [r for r in watcher.records() if r.state == "running"]
                if watcher.n_running() == 2 and len(running) == 2:
                    break
            time.sleep(0.2)
        else:
            pytest.fail("the worker never started its first batch")
        return sorted(r.coefficient for r in running)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


class LoggingEvaluator(SyntheticEvaluator):
    """Keeps a results log on disk (the coefficients evaluated, served when asked again) and
    kills its process (SIGKILL: no cleanup) at its `die_at`-th batch: before evaluating it,
    or once its results are logged (before the study is told)."""

    def __init__(self, questions, log: str, die_at: int, after_log: bool):
        super().__init__(questions)
        self.log, self.die_at, self.after_log = Path(log), die_at, after_log

    def _logged(self) -> list[float]:
        return json.loads(self.log.read_text()) if self.log.exists() else []

    def evaluate(self, configs):
        dies = len(self.calls) + 1 == self.die_at
        if dies and not self.after_log:
            os.kill(os.getpid(), signal.SIGKILL)
        results, logged = super().evaluate(configs), self._logged()
        for r in results:
            r.cached = r.logged_here = r.config.coefficient in logged
        self.log.write_text(json.dumps(logged + [r.config.coefficient for r in results]))
        if dies:
            os.kill(os.getpid(), signal.SIGKILL)
        return results


def searching_worker(url: str, sampler: str, die_at: int, after_log: bool) -> None:
    """Subprocess entry: a whole search of 8 trials in batches of 2 (killed at the
    `die_at`-th batch, if any), its results log beside the study."""
    study = open_url(url, sampler=sampler, startup_trials=2, seed=5, heartbeat_s=1)
    log = url.removeprefix("sqlite:///") + ".log.json"
    evaluator = LoggingEvaluator(["q1", "q2"], log, die_at, after_log)
    run_search(study, evaluator, SOURCE, 8, 2, "positive", progress=False)


def _search_in_subprocess(url: str, sampler: str, die_at: int = 0, after_log=False) -> None:
    proc = start("searching_worker", url, sampler, die_at, after_log)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == (-signal.SIGKILL if die_at else 0), err


@pytest.mark.parametrize(
    "sampler,die_at,after_log", [("gp", 1, False), ("gp", 3, True), ("tpe", 2, False)]
)
def test_a_search_killed_mid_batch_resumes_to_the_uninterrupted_study(
    tmp_path, sampler, die_at, after_log
):
    """The killed worker's trials are taken over as they were (numbers, params, order, the
    rows they cost even when the killed worker had logged their results), so the sampler
    sees the same study and the resumed study equals one never interrupted."""
    reference, killed = (f"sqlite:///{tmp_path / name}" for name in ("ref.db", "killed.db"))
    _search_in_subprocess(reference, sampler)
    _search_in_subprocess(killed, sampler, die_at, after_log)
    _search_in_subprocess(killed, sampler)  # resumed, as a rerun of the command would
    want, got = (open_url(url).records() for url in (reference, killed))
    assert got == want
    assert [r.state for r in got] == ["complete"] * 8
    assert [r.rows for r in got] == [0 if r.coefficient == 0 else 2 for r in got]  # 0: unsteered


def drawing_worker(url: str, die_at: int) -> None:
    """Subprocess entry: `searching_worker`'s GP search, killed (SIGKILL) in its `die_at`-th
    sampled ask once the sampler has shared its draw on the trial (a system attr, written
    first), before the trial's params are stored."""
    import optuna

    from steerops.search.storage import WorkerRDBStorage

    shared = optuna.samplers._gp.sampler._RELATIVE_PARAMS_KEY + ":0"
    store = WorkerRDBStorage.set_trial_system_attr
    draws = []

    def set_trial_system_attr(self, trial_id, key, value):
        store(self, trial_id, key, value)
        if key == shared:
            draws.append(trial_id)
            if len(draws) == die_at:
                os.kill(os.getpid(), signal.SIGKILL)

    WorkerRDBStorage.set_trial_system_attr = set_trial_system_attr
    searching_worker(url, "gp", 0, False)


@pytest.mark.parametrize("die_at", [1, 2])
def test_a_search_killed_after_its_draw_before_its_params_resumes_to_the_uninterrupted_study(
    tmp_path, die_at
):
    """The trial keeps the draw its asking made: drawn again, the GP sampler counted it as a
    trial running beside itself and drew other params (optuna 5 shares a relative draw on
    the trial before storing it), and every later trial moved."""
    from optuna.trial import TrialState

    reference, killed = (f"sqlite:///{tmp_path / name}" for name in ("ref.db", "killed.db"))
    _search_in_subprocess(reference, "gp")
    proc = start("drawing_worker", killed, die_at)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL, err
    running = open_url(killed).study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    assert running[-1].params == {}  # drawn, not stored
    _search_in_subprocess(killed, "gp")  # resumed, as a rerun of the command would
    want, got = (open_url(url).records() for url in (reference, killed))
    assert got == want


def popping_worker(url: str) -> None:
    """Subprocess entry: `searching_worker`'s GP search, killed (SIGKILL) the moment its
    first queued trial is marked running, before anything else is written."""
    from optuna.storages import RDBStorage
    from optuna.trial import TrialState

    pop = RDBStorage.set_trial_state_values

    def set_trial_state_values(self, trial_id, state, values=None):
        changed = pop(self, trial_id, state, values)
        if state == TrialState.RUNNING and changed:
            os.kill(os.getpid(), signal.SIGKILL)
        return changed

    RDBStorage.set_trial_state_values = set_trial_state_values
    searching_worker(url, "gp", 0, False)


def test_a_search_killed_as_it_pops_a_queued_trial_resumes_to_the_uninterrupted_study(tmp_path):
    """A queued trial (a design point) names its worker before it is marked running: with
    the record written after, a kill in between left a running trial with no worker, taken
    for gone only after `grace_s`, and the resumed search asked past it (another study)."""
    reference, killed = (f"sqlite:///{tmp_path / name}" for name in ("ref.db", "killed.db"))
    _search_in_subprocess(reference, "gp")
    proc = start("popping_worker", killed)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL, err
    _search_in_subprocess(killed, "gp")  # resumed at once, as a rerun of the command would
    want, got = (open_url(url).records() for url in (reference, killed))
    assert got == want


def asking_worker(url: str, node: str | None) -> None:
    """Subprocess entry: die inside `ask`, after the trial exists and before its params are
    drawn (the window in which a trial used to be left running without a heartbeat)."""
    import optuna

    from steerops import liveness
    from steerops.search import study

    if node is not None:
        liveness.node_id = lambda: node

    class DiesWhileSampling(optuna.samplers.RandomSampler):
        def before_trial(self, study, trial):
            os.kill(os.getpid(), signal.SIGKILL)

    study.make_sampler = lambda *args: DiesWhileSampling()
    open_url(url, heartbeat_s=1, grace_s=2).ask(1, target=4)


def test_a_worker_killed_inside_ask_leaves_no_orphan(storage_url):
    proc = start("asking_worker", storage_url, None)
    proc.wait(timeout=300)
    assert proc.returncode == -signal.SIGKILL
    resumed = open_url(storage_url, heartbeat_s=1, grace_s=3600)
    assert resumed.n_running() == 1  # the killed worker's trial, without params
    resumed.recover_stale()  # its worker is known to be gone: taken over at once, no wait
    assert resumed.free_slots(3) == 3
    evaluator = SyntheticEvaluator(["q1", "q2"])
    run_search(resumed, evaluator, SOURCE, 3, 2, "positive", progress=False, poll_s=0.2)
    assert resumed.n_done() == 3 and resumed.n_running() == 0
    assert sum(len(c) for c in evaluator.calls) == 3
    # its params drawn by the worker that took it over: no orphan, no failed trial
    assert [(r.number, r.state) for r in resumed.records()] == [(n, "complete") for n in range(3)]


def sharing_worker(url: str, draw: str) -> None:
    """Subprocess entry: die inside `ask` once the trial holds `draw` as the GP sampler's
    shared draw (a damaged or hand-edited one), before its params are stored."""
    import optuna
    from optuna.samplers._gp import sampler as gp_sampler

    from steerops.search import study

    class SharesThenDies(optuna.samplers.RandomSampler):
        def before_trial(self, study, trial):
            key = f"{gp_sampler._RELATIVE_PARAMS_KEY}:0"
            study._storage.set_trial_system_attr(trial._trial_id, key, draw)
            os.kill(os.getpid(), signal.SIGKILL)

    study.make_sampler = lambda *args: SharesThenDies()
    open_url(url, heartbeat_s=1, grace_s=2).ask(1, target=4)


@pytest.mark.parametrize(
    "draw", ['{"coefficient": 99.0}', '{"coefficient": "x"}', "5", '{"coefficient": 1']
)
def test_a_shared_draw_the_space_does_not_hold_is_drawn_again(tmp_path, draw):
    """Taken over, a trial keeps its shared draw only where the space holds it (as optuna
    itself uses one): out of range, of the wrong type, or unreadable, it is drawn again."""
    url = f"sqlite:///{tmp_path / 'study.db'}"
    proc = start("sharing_worker", url, draw)
    proc.wait(timeout=300)
    assert proc.returncode == -signal.SIGKILL
    resumed = open_url(url, heartbeat_s=1, grace_s=3600)
    resumed.recover_stale()
    run_search(resumed, SyntheticEvaluator(["q1"]), SOURCE, 2, 1, "positive", progress=False)
    records = resumed.records()
    assert [r.state for r in records] == ["complete"] * 2
    assert 0.0 <= records[0].coefficient <= 3.0


def test_a_holder_that_exited_unreaped_is_gone_and_a_running_one_is_not():
    """A zombie (exited, not yet reaped by its parent: state Z) holds nothing, so its trials
    and runs are taken over at once, as a vanished process's are; this running process is
    not gone."""
    from steerops import liveness

    proc = subprocess.Popen(["sleep", "0"])
    try:
        holder = {"node": liveness.node_id(), "pid": proc.pid}
        holder["start"] = liveness.process_start(proc.pid)
        stat = Path("/proc") / str(proc.pid) / "stat"
        deadline = time.monotonic() + 60
        while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline, "sleep 0 did not exit"
            time.sleep(0.01)
        # the same process (pid and start time) still listed: only its state says it ended
        assert holder["start"] is not None
        assert liveness.process_start(proc.pid) == holder["start"]
        assert liveness.is_gone(holder)
    finally:
        proc.wait()
    assert liveness.is_gone(holder)  # reaped: no such process
    assert not liveness.is_gone(liveness.this_worker())


def test_trials_without_a_live_worker_record_are_taken_over_after_the_grace_period(tmp_path):
    """A trial held by a silent worker on another node, and one with no worker record at all
    (made by plain Optuna, or a pop interrupted before the record), are both taken over once
    they are older than the grace period, and not before."""
    import optuna

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    proc = start("asking_worker", url, "elsewhere")
    proc.wait(timeout=300)
    open_url(url)  # creates the study's tables and settings
    optuna.load_study(study_name="s", storage=url).ask()  # no worker record
    patient = open_url(url, heartbeat_s=1, grace_s=3600)
    patient.recover_stale()
    assert patient.free_slots(2) == 0  # both held elsewhere
    time.sleep(1.2)
    strict = open_url(url, heartbeat_s=1, grace_s=1)
    strict.recover_stale()
    assert strict.free_slots(2) == 2  # both held here now
    evaluator = SyntheticEvaluator(["q"])
    run_search(strict, evaluator, SOURCE, 2, 2, "positive", progress=False)
    assert strict.n_done() == 2 and strict.n_running() == 0
    assert [len(call) for call in evaluator.calls] == [2]  # the two, and nothing else


def test_one_finaliser_per_round_and_a_failed_one_is_replaced(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    a, b = open_url(url), open_url(url)
    with a.finalising() as mine_a:
        with b.finalising() as mine_b:
            assert mine_a and not mine_b  # a claim is running
    with b.finalising() as mine_b:
        assert not mine_b  # finalised since b opened the study
    with open_url(url).finalising() as mine:
        assert mine  # a later rerun finalises again
    c, d = open_url(url), open_url(url)
    with pytest.raises(RuntimeError), c.finalising() as mine_c:
        assert mine_c
        raise RuntimeError("judge down")
    with d.finalising() as mine_d:
        assert mine_d  # the failed finalisation is taken over


def finalising_worker(url: str, folder: str) -> None:
    """Subprocess entry: claim the finalisation and hang in it (killed by the test)."""
    study = open_url(url)
    with study.finalising() as mine:
        assert mine
        (Path(folder) / "claimed").touch()
        time.sleep(600)


def _wait_for_claim(folder: Path, proc, timeout_s: float = 300) -> None:
    """Until the worker process `proc` has claimed the finalisation (its `claimed` marker
    in `folder`), failing if it exits first or takes longer than `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not (folder / "claimed").exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)


def test_a_killed_finaliser_is_replaced_at_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    waiting = open_url(url)  # a worker that opened the study before the claim
    proc = start("finalising_worker", url, str(tmp_path))
    try:
        _wait_for_claim(tmp_path, proc)
        with waiting.finalising() as mine:
            assert not mine  # the claim's worker is alive
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    with waiting.finalising() as mine:
        assert mine  # its worker is gone: the claim failed and was taken over


def _refused_in_part(url: str) -> SearchStudy:
    """A study searched to its target of 6 with trials the judge's endpoint refused in part
    (above 2: the queued 2.5 among them)."""
    study = open_url(url, sampler="tpe", startup_trials=2)
    study.enqueue(2, 2.5)
    filtered = SyntheticEvaluator(["q1", "q2"], refuse_above=2.0)
    run_search(study, filtered, SOURCE, 6, 2, "positive", progress=False)
    assert study.n_refused() and study.n_done() == 6
    return study


def test_retries_a_late_worker_evaluated_after_the_finalisation_are_finalised_again(tmp_path):
    """A worker that joined the study before its finalisation was done evaluates the retries
    of the refused trials, then finalises the study again with them (another worker's claim
    stopped it, and the outputs lacked them until a worker ran again); a worker that joined
    with it and evaluated nothing more does not."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    first = _refused_in_part(url)
    late, idle = open_url(url, sampler="tpe"), open_url(url, sampler="tpe")
    with first.finalising() as mine:
        assert mine
    lifted = SyntheticEvaluator(["q1", "q2"])
    run_search(late, lifted, SOURCE, 6, 2, "positive", progress=False)
    assert sum(map(len, lifted.calls)) == first.n_refused()  # the retries
    with late.finalising() as mine:
        assert mine
    with idle.finalising() as mine:
        assert not mine  # the study as it stands is finalised
    with late.finalising() as mine:
        assert not mine


def holding_finaliser(url: str, folder: str) -> None:
    """Subprocess entry: claim the finalisation, hold it until the test releases it, and
    mark the end of its outputs before the claim completes."""
    folder_ = Path(folder)
    with open_url(url, sampler="tpe").finalising() as mine:
        assert mine
        (folder_ / "claimed").touch()
        while not (folder_ / "release").exists():
            time.sleep(0.05)
        (folder_ / "written").touch()


def test_a_late_worker_finalises_its_retries_after_the_running_finalisation(
    tmp_path, capsys, monkeypatch
):
    """Retries completed while another worker finalises the study without them: this worker
    waits for that finalisation to end (never writing the outputs at the same time), then
    finalises the study again, with them."""
    from steerops.search import study

    class ReleasingClock:
        """study's clock, whose first wait for the other finalisation lets it end: the
        holder is released once this worker is seen waiting, however slow the machine."""

        def __getattr__(self, name):
            return getattr(time, name)

        @staticmethod
        def sleep(seconds: float) -> None:
            (tmp_path / "release").touch()
            time.sleep(seconds)

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    _refused_in_part(url)
    proc = start("holding_finaliser", url, str(tmp_path))
    try:
        _wait_for_claim(tmp_path, proc)
        late = open_url(url, sampler="tpe")
        lifted = SyntheticEvaluator(["q1", "q2"])
        run_search(late, lifted, SOURCE, 6, 2, "positive", progress=False)
        assert lifted.calls  # the retries, completed while the claim runs
        monkeypatch.setattr(study, "time", ReleasingClock())
        with late.finalising(poll_s=0.1) as mine:
            assert mine and (tmp_path / "written").exists()
        assert "another worker is finalising study 's'" in capsys.readouterr().err
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err  # its finalisation ended as it should
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_best_summary_counts_search_trials_not_imported_ones():

    from steerops.search.results import best_summary

    records = [
        record(0, 10.0, 90.0),
        record(1, 20.0, 80.0),
        record(2, 5.0, 95.0),
        record(3, 1.0, 90.0, state="fail"),
    ]
    records[0].source = "known"
    params, plan = summary_context(Path("."), "sqlite:///x.db")
    held = {
        "n_questions": 20,
        "n": 20,
        "rows_generated": 0,
        "responses": [],
        "delta_lo": 5.0,
        "coherence_mean": 80.0,
    }
    chosen = {
        "trial": records[1],
        "selection_trait_delta": 20.0,
        "selection_delta_lo": 10.0,
        "selection_delta_hi": 30.0,
        "selection_n": 1,
    }
    best = best_summary(params, plan, records, chosen, LoopStats(baseline_trait=5.0), held)
    assert best["n_trials"] == 2 and best["n_known"] == 1
    assert best["n_feasible"] == 3
    assert best["status"] == "ok" and best["feasible"] and best["chosen"]["trial"] == 1
    assert not best["chosen"]["at_range_top"]  # coefficient 1 of [0, 3]
    # its layer's largest coefficient in the range's top tenth: the optimum may lie beyond
    records[1].coefficient = 2.8
    best = best_summary(params, plan, records, chosen, LoopStats(baseline_trait=5.0), held)
    assert best["chosen"]["at_range_top"]
    # every search-half answer at the judge's ceiling: a larger coefficient cannot steer more
    ceiling = {**chosen, "selection_trait_mean": 100.0}
    best = best_summary(params, plan, records, ceiling, LoopStats(baseline_trait=5.0), held)
    assert best["status"] == "ok" and not best["chosen"]["at_range_top"]
    few = {**held, "n": 5}  # a choice that is not ok: no flag, as the grid's
    best = best_summary(params, plan, records, chosen, LoopStats(baseline_trait=5.0), few)
    assert best["status"] == "too few held out" and not best["chosen"]["at_range_top"]
    records[2].coefficient = 2.9  # a larger one tried at the layer: the top is charted
    best = best_summary(params, plan, records, chosen, LoopStats(baseline_trait=5.0), held)
    assert not best["chosen"]["at_range_top"]
    records[1].coefficient = records[2].coefficient = 1.0
    # the same interval above zero on 5 held-out questions is too few to call an effect
    best = best_summary(
        params, plan, records, chosen, LoopStats(baseline_trait=5.0), {**held, "n": 5}
    )
    assert best["status"] == "too few held out" and best["feasible"]
    # nothing chosen: no feasible steering found, and no pick reported
    best = best_summary(params, plan, records, None, LoopStats(baseline_trait=5.0), None)
    assert best["status"] == "no feasible steering found" and best["chosen"] is None
    assert best["feasible"] is None and best["heldout"] is None  # nothing judged held out
    # a choice whose held-out interval lies below zero moved the trait the other way
    against = {**held, "delta_lo": -40.0, "delta_hi": -10.0}
    best = best_summary(params, plan, records, chosen, LoopStats(baseline_trait=5.0), against)
    assert best["status"] == "opposite effect"
    # coherent trials, none with an effect: said so, not "no feasible steering"
    best = best_summary(
        params, plan, records, None, LoopStats(baseline_trait=5.0), None, "no effect"
    )
    assert best["status"] == "no effect" and best["chosen"] is None and best["feasible"] is None
    assert best["search"]["feasible"] == (best["n_feasible"] > 0)


def test_toy_cli_workers_on_one_study_finalise_once(toy_world, tmp_path):
    """Two `steerops search` processes on one study of the toy world: the trials are split,
    exactly one process writes the outputs and the study's MLflow results."""
    import csv

    import mlflow

    from conftest import write_params
    from steerops.cli import main
    from steerops.search.store import search_dir

    params = write_params(
        tmp_path,
        toy_world,
        # 1.0 is inside the toy's feasible band, so the study has a pick to finalise
        search={"trials": 6, "batch": 2, "layers": "1-2", "startup_trials": 2, "enqueue": [1.0]},
    )
    for argv in (
        ["extract", "--position", "prompt[-1]", "--variant", "base"],
        ["vectors", "--position", "prompt[-1]", "--variant", "base", "--methods", "mean_diff"],
    ):
        assert main([*argv, "--params", str(params)]) == 0
    argv = [
        sys.executable,
        "-m",
        "steerops",
        "search",
        "--pipeline",
        "--params",
        str(params),
        "--trait",
        "toy/refusal",
        "--method",
        "mean_diff",
        "--position",
        "prompt[-1]",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    outs = [proc.communicate(timeout=600) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], [err for _, err in outs]
    out = search_dir(
        tmp_path / "outputs", "toy/refusal", "instruct", "prompt[-1]", "residual", "mean_diff"
    )
    best = json.loads((out / "best.json").read_text())
    # the verdict depends on which trials each worker drew (a pick at the coherence bar's
    # edge on the search half may fall under it on the held-out half): any verdict, once
    finalised = f"toy/refusal prompt[-1] `mean_diff`: {best['status']}: "
    summaries = [out for out, _ in outs if out.startswith(finalised)]
    assert len(summaries) == 1, outs
    assert sum("another worker finalises it" in err for _, err in outs) == 1
    assert best["chosen"] is not None
    rows = list(csv.DictReader((out / "trials.csv").open()))
    done = [(r["layer"], r["coefficient"]) for r in rows if r["state"] == "complete"]
    assert best["n_trials"] == len(done) == len(set(done)) == 6
    assert (out / "heldout_responses.jsonl").read_text().strip()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    parents = [
        r
        for r in runs
        if r.data.tags.get("steerops.stage") == "search" and "mlflow.parentRunId" not in r.data.tags
    ]
    roles = sorted(r.data.tags.get("steerops.search_role") for r in parents)
    # the other worker's run is logged when it evaluated a trial; one that found them all
    # taken (a late start on a loaded machine) and finalised nothing logs none (below)
    assert roles in (["finaliser"], ["finaliser", "worker"])
    [study_run] = [r for r in parents if "heldout_trait_delta" in r.data.metrics]
    assert study_run.data.tags["steerops.search_role"] == "finaliser"
    # both halves' numbers with their n and interval, as best.json has them
    logged = study_run.data.metrics
    for half, prefix in (("search", "search"), ("heldout", "heldout")):
        numbers = best[half]
        assert logged[f"{prefix}_n"] == numbers["n"]
        assert (logged[f"{prefix}_delta_lo"], logged[f"{prefix}_delta_hi"]) == pytest.approx(
            (numbers["delta_lo"], numbers["delta_hi"])
        )
    ids = {r.info.run_id for r in parents}
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") in ids]
    # each evaluated once; a worker that opened the study late also shows the trials
    # already finished then, marked served
    evaluated = [r for r in trials if r.data.tags["steerops.served"] == "false"]
    assert len(evaluated) == 6
    for parent in parents:  # a worker's run is there for the trials it evaluated
        if parent.data.tags["steerops.search_role"] == "worker":
            mine = [r for r in evaluated if r.data.tags["mlflow.parentRunId"] == parent.info.run_id]
            assert mine, "a worker that evaluated nothing logged a run"
    assert len({r.data.params["trial"] for r in trials}) == 6


def open_together(url: str, folder: str, n_workers: int) -> None:
    """Subprocess entry: wait until every worker is ready, then open the study at once."""
    wait_for_all(Path(folder), n_workers, poll_s=0.005)
    open_storage(url, 30, attempts=1)  # no retry: only the creation lock may save it
    print(json.dumps({"opened": True}), flush=True)


@pytest.mark.parametrize("round_", range(3))
def test_workers_starting_together_create_a_new_sqlite_study_once(tmp_path, round_):
    # Creating the tables and Alembic's version row raced: one worker died with
    # "UNIQUE constraint failed: alembic_version.version_num".
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    n = 6
    outs = finish([start("open_together", url, str(tmp_path), n) for _ in range(n)])
    assert outs == [{"opened": True}] * n
    assert open_url(url).study.study_name == "s"  # the tables the workers made are whole
