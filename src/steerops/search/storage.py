"""The study storage shared by several worker processes: opening it, its lock, and the
record of which worker holds which trial.

Storages: any SQLAlchemy URL Optuna supports (sqlite, postgresql, mysql) or Optuna's journal
file on a shared disk (`journal:///path/to/study.journal`).

A trial never runs unaccounted for: it is created with its worker's identity and a first
heartbeat in one write (`LIFE`, a system attr), and from then until it is told the worker
renews the heartbeat every `heartbeat_s`. `stale_trial_ids` finds the running trials whose
worker is gone: a process on this node that ended (known at once), a heartbeat older than
the grace period, a trial its worker handed back (`release`, known at once), or a trial with
no worker record (created or popped from the queue by something else: a worker records
itself before it pops a queued trial) that started longer ago than the grace period.
Another worker then records itself as the trial's worker (`take_over`). Heartbeats use the
workers' clocks, which must agree to well within the grace period (NTP).
"""

from __future__ import annotations

import contextlib
import copy
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.storages import JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from steerops.errors import SteeropsError
from steerops.liveness import is_gone, this_worker
from steerops.redact import shown_url
from steerops.search.locks import StudyLock, file_lock_path
from steerops.sqlite_url import sqlite_file
from steerops.workspace import lasting_folder

LIFE = "steerops_worker"  # trial system attr: {"node", "pid", "start", "beat"[, "released"]}
JOURNAL = "journal:"


def default_storage_url(params) -> str:
    """search.storage, else sqlite optuna.db next to the params file (in a scratch run's
    folder for a scratch run); in a temporary DVC experiment workspace, the repository's
    (the workspace and what it holds are removed when the experiment ends)."""
    if params.search.storage:
        return params.search.storage
    return f"sqlite:///{lasting_folder(params.run_root) / 'optuna.db'}"


def check_storage_folder(params) -> None:
    """A search.storage file whose folder is missing is a typo far more often than a wish
    for new folders (which `open_storage` would make, root or not): refuse it. The default
    storage's folder is the run's own and is made."""
    url = params.search.storage
    if not url:
        return
    path = journal_path(url)
    file = Path(path) if path is not None else None
    if file is None and url.startswith("sqlite"):
        file = sqlite_file(url)
    if file is not None and not file.parent.is_dir():
        problem = "is not a folder" if file.parent.exists() else "not found (create it first)"
        raise SteeropsError(f"search.storage: folder {file.parent} {problem}")


def storage_label(url: str, root: Path | None = None) -> str:
    """The storage URL with any password masked (safe for logs and best.json), and a file
    inside `root` (the project) relative to it, so the record survives a moved project."""
    path = journal_path(url)
    if path is None and url.startswith("sqlite:"):
        with contextlib.suppress(Exception):  # a malformed URL is labelled as it is below
            path = make_url(url).database
    if path and root is not None:
        try:
            inside = Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
            return (JOURNAL if url.startswith(JOURNAL) else "sqlite:") + "///" + inside
        except ValueError:
            pass
    try:
        parsed = make_url(url)
        if parsed.get_backend_name() != "sqlite":  # a server's query may hold a password
            parsed = parsed.set(query={})
        return parsed.render_as_string(hide_password=True)
    except Exception:  # not an SQLAlchemy URL: say nothing secret
        return shown_url(url)


def journal_path(url: str) -> str | None:
    """The file of a `journal:` storage URL, else None."""
    if not url.startswith(JOURNAL):
        return None
    path = url[len(JOURNAL) :]
    return path[2:] if path.startswith("//") else path


class _Holder:
    """Mixin for a storage class: records and renews the worker of every trial it runs."""

    if TYPE_CHECKING:  # provided by the optuna storage class this is mixed into
        set_trial_system_attr: Callable[..., None]
        get_all_trials: Callable[..., list]

    def _init_holder(self, heartbeat_s: float) -> None:
        self.heartbeat_s = heartbeat_s
        self._held: set[int] = set()
        self._held_lock = threading.Lock()
        self._beater: threading.Thread | None = None

    @staticmethod
    def _life() -> dict:
        return {**this_worker(), "beat": time.time()}

    def _running_template(self):
        return optuna.trial.create_trial(
            state=TrialState.RUNNING, system_attrs={LIFE: self._life()}
        )

    def beat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, LIFE, self._life())

    def _hold(self, trial_id: int) -> None:
        with self._held_lock:
            self._held.add(trial_id)
            if self._beater is None:
                self._beater = threading.Thread(
                    target=self._beat_held, daemon=True, name="steerops-heartbeat"
                )
                self._beater.start()

    def _beat_held(self) -> None:
        while True:
            time.sleep(self.heartbeat_s)
            with self._held_lock:
                ids = sorted(self._held)
                if not ids:
                    self._beater = None
                    return
            for trial_id in ids:
                try:
                    # checked and written under the lock: a trial `release`d since the copy
                    # keeps its handed-back record (taken at once), not a fresh beat
                    with self._held_lock:
                        if trial_id not in self._held:
                            continue
                        self.beat(trial_id)
                except optuna.exceptions.UpdateFinishedTrialError:
                    self._release(trial_id)  # failed by another worker: stop beating
                except Exception:  # noqa: S110 - a missed beat is retried next period
                    pass

    def _release(self, trial_id: int) -> None:
        with self._held_lock:
            self._held.discard(trial_id)

    def take_over(self, trial_id: int) -> None:
        """Hold a running trial whose worker is gone, as if this worker had created it."""
        self.beat(trial_id)
        self._hold(trial_id)

    def release(self, trial_id: int) -> None:
        """Hand a running trial back (its evaluation was interrupted): stale at once. No
        beat overwrites the record once the trial has left `_held` (see `_beat_held`)."""
        self._release(trial_id)
        self.set_trial_system_attr(trial_id, LIFE, {**self._life(), "released": True})

    def set_trial_state_values(self, trial_id, state, values=None) -> bool:
        if state == TrialState.RUNNING:
            # a queued trial names its worker before it runs: killed in between, it stays
            # queued; named after, it would run with no worker, taken for gone only after
            # grace_s while a rerun asked past it (queues are popped under the study lock)
            self.beat(trial_id)
        changed = super().set_trial_state_values(trial_id, state, values)  # type: ignore[misc]
        if state == TrialState.RUNNING and changed:  # popped from the queue: ours now
            self.beat(trial_id)
            self._hold(trial_id)
        elif state.is_finished():
            self._release(trial_id)
        return changed

    def stale_trial_ids(self, study_id: int, grace_s: float) -> list[int]:
        now = time.time()
        stale = []
        for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            if t._trial_id in self._held:
                continue
            life = t.system_attrs.get(LIFE)
            if life is not None:
                if life.get("released") or is_gone(life) or now - life["beat"] > grace_s:
                    stale.append(t._trial_id)
            elif t.datetime_start is None or now - t.datetime_start.timestamp() > grace_s:
                stale.append(t._trial_id)
        return stale


class WorkerRDBStorage(_Holder, RDBStorage):
    def __init__(self, url: str, heartbeat_s: float, **kwargs):
        RDBStorage.__init__(self, url, **kwargs)
        self._init_holder(heartbeat_s)

    # Every RDB trial creation (plain or through Optuna's cache) goes through this method.
    def _create_new_trial(self, study_id, template_trial=None):
        frozen = super()._create_new_trial(study_id, template_trial or self._running_template())
        if frozen.state == TrialState.RUNNING:
            self._hold(frozen._trial_id)
        return frozen


class WorkerJournalStorage(_Holder, JournalStorage):
    def __init__(self, path: str, heartbeat_s: float):
        JournalStorage.__init__(self, JournalFileBackend(path))
        self._init_holder(heartbeat_s)

    def create_new_trial(self, study_id, template_trial=None) -> int:
        template = template_trial or self._running_template()
        trial_id = super().create_new_trial(study_id, template)
        if template.state == TrialState.RUNNING:
            self._hold(trial_id)
        return trial_id


FINALISE = ":finalise"  # suffix of the study holding a study's finalisation claims
SEARCH_VERDICT = "search_verdict"  # the user attr the best trial shown carries


class _FeasibleBest:
    """A storage whose best trial is the one the search reported (study user attr
    `chosen_trial`: its own choice breaks ties and needs an effect beyond the interval)
    while the study holds the trials it chose among, else (before a search has chosen,
    when nothing qualified, while an extended study runs) the best feasible one
    (Optuna's `Study.best_trial` rule; the storage's own `get_best_trial`, which
    optuna-dashboard shows, ignores constraints). With none feasible, the least infeasible.
    The trial shown carries the search's verdict (`SEARCH_VERDICT`): where nothing
    qualified it is no choice, which optuna-dashboard, showing a best trial whenever one
    is complete, would not say. Its trials also carry their constraints in the list form
    optuna-dashboard reads (`trial.set_constraint` stores them under named keys); the
    studies that hold a study's finalisation claims are not listed."""

    def get_all_studies(self) -> list:
        studies = super().get_all_studies()  # type: ignore[misc]
        names = {s.study_name for s in studies}

        def claims(name: str) -> bool:  # a study's claims, not a study named so by hand
            return name.endswith(FINALISE) and name[: -len(FINALISE)] in names

        return [s for s in studies if not claims(s.study_name)]

    if TYPE_CHECKING:
        get_study_directions: Callable[..., list]
        get_study_user_attrs: Callable[..., dict]

    def get_all_trials(self, study_id: int, deepcopy: bool = True, states=None) -> list:
        read = super().get_all_trials  # type: ignore[misc]
        return [_listed(t) for t in read(study_id, deepcopy=deepcopy, states=states)]

    def get_best_trial(self, study_id: int):
        trials = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.COMPLETE,))
        if not trials:
            raise ValueError("No trials are completed yet.")
        attrs = self.get_study_user_attrs(study_id)
        chosen, status = attrs.get("chosen_trial"), attrs.get("chosen_status")
        decided = attrs.get("chosen_among") == len(trials)
        reported = [t for t in trials if chosen is not None and t.number == chosen]
        if reported and decided:
            said = f"; its verdict: {status}" if status else ""
            return _verdict(reported[0], f"the search's choice{said}")
        sign = 1.0 if self.get_study_directions(study_id)[0].name == "MAXIMIZE" else -1.0

        def worst(t) -> float:
            return max(t.constraints.values(), default=0.0)

        feasible = [t for t in trials if worst(t) <= 0]
        if feasible:
            best = max(feasible, key=lambda t: sign * t.value)
        else:
            best = min(trials, key=lambda t: (worst(t), -sign * t.value))
        if decided and chosen is None and status is not None:
            return _verdict(
                best, f"not a choice: the search chose nothing ({status}); Optuna's best"
            )
        return _verdict(best, "Optuna's best (the search has not chosen among these trials)")


DASHBOARD_CONSTRAINTS = "constraints"  # the system attr optuna-dashboard reads: a list


def _verdict(trial, words: str):
    """A copy of `trial` carrying `words` as its SEARCH_VERDICT user attr."""
    shown = copy.copy(trial)
    shown.user_attrs = {**trial.user_attrs, SEARCH_VERDICT: words}
    return shown


def _listed(trial):
    """A copy of `trial` whose constraints are also in the list form (unchanged if there)."""
    if DASHBOARD_CONSTRAINTS in trial.system_attrs or not trial.constraints:
        return trial
    listed = copy.copy(trial)
    listed.system_attrs = {
        **trial.system_attrs,
        DASHBOARD_CONSTRAINTS: list(trial.constraints.values()),
    }
    return listed


class DashboardRDBStorage(_FeasibleBest, RDBStorage):
    pass


class DashboardJournalStorage(_FeasibleBest, JournalStorage):
    pass


def dashboard_storage(url: str):
    """The study storage at `url` as optuna-dashboard should read it (best = best feasible)."""
    journal = journal_path(url)
    path = journal or (sqlite_file(url) if url.startswith("sqlite") else None)
    if path is not None and not Path(path).is_file():  # opening would create an empty one
        raise SteeropsError(
            f"search.storage: no study database at {storage_label(url)}: run `steerops "
            "search` first, or give --storage or --out"
        )
    if journal is not None:
        return DashboardJournalStorage(JournalFileBackend(journal))
    try:
        with quiet():
            return DashboardRDBStorage(url, skip_table_creation=True)
    except Exception as exc:  # bad URL, missing driver, unreachable server
        raise SteeropsError(
            f"search.storage: cannot open {storage_label(url)}: {str(exc).splitlines()[0]}"
        ) from None


def open_storage(url: str, heartbeat_s: float, attempts: int = 5):
    """The study storage for `url`, with worker records and heartbeats. The folder of a
    journal or sqlite file is created (a fresh `--out` has none yet)."""
    path = journal_path(url)
    if path is not None:
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            return WorkerJournalStorage(path, heartbeat_s)
        except OSError as exc:
            raise SteeropsError(
                f"search.storage: cannot open journal {path}: {exc.strerror or exc}"
            ) from None
    sqlite = url.startswith("sqlite")
    database = sqlite_file(url) if sqlite else None
    if database is not None:
        try:
            database.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SteeropsError(
                f"search.storage: cannot create {database.parent}: {exc.strerror or exc}"
            ) from None
    kwargs = {"connect_args": {"timeout": 30}} if sqlite else {}
    for attempt in range(attempts):
        try:
            with _creating(url) if sqlite else contextlib.nullcontext(), quiet():
                return WorkerRDBStorage(url, heartbeat_s, engine_kwargs=kwargs)
        except Exception as exc:  # bad URL, missing driver, unreachable server
            # Workers starting together on a new database race to create its tables.
            if _creation_race(exc) and attempt + 1 < attempts:
                time.sleep(0.2 * (attempt + 1))
                continue
            raise SteeropsError(
                f"search.storage: cannot open {storage_label(url)}: {str(exc).splitlines()[0]}"
                + _damaged_hint(exc, database)
            ) from None
    raise AssertionError("unreachable")


def _damaged_hint(exc: Exception, database: Path | None) -> str:
    """What to do about a study file sqlite cannot read (cut short, overwritten)."""
    if database is None or not database.is_file() or "sqlite3.DatabaseError" not in str(exc):
        return ""
    return (
        f"; {database} is damaged: move it aside to start a new study (it imports the configs "
        "evaluated so far from the results log as known results)"
    )


def _creating(sqlite_url: str) -> StudyLock:
    """Workers starting together on a new sqlite file would race to create its tables (and
    Alembic's version row): a lock file of its own beside it (not the study lock's, which a
    worker holds while it asks) makes creation one at a time."""
    path = file_lock_path(sqlite_file(sqlite_url), ".create.lock")
    return StudyLock("file", "create", path=path)


def _creation_race(exc: Exception) -> bool:
    text = str(exc)
    return any(
        mark in text
        for mark in ("already exists", "duplicate key", "UNIQUE constraint", "Duplicate entry")
    )


def study_lock(url: str, storage, name: str) -> StudyLock:
    """The lock every worker on study `name` in `storage` shares."""
    path = journal_path(url)
    if path is not None:
        # not PATH.lock: Optuna's journal writer takes that one
        return StudyLock("file", name, path=file_lock_path(path, ".workers.lock"))
    dialect = make_url(url).get_backend_name()
    if dialect == "sqlite":
        return StudyLock("file", name, path=file_lock_path(sqlite_file(url)))
    if dialect == "postgresql":
        return StudyLock("postgresql", name, engine=storage.engine)
    if dialect in ("mysql", "mariadb"):
        return StudyLock("mysql", name, engine=storage.engine)
    raise SteeropsError(
        f"search.storage: {dialect} has no lock shared by search workers; "
        "use sqlite, postgresql, mysql or journal:///PATH"
    )


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence Optuna's experimental-feature warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield
