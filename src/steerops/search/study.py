"""The Optuna study behind `steerops search`: constrained, resumable, shareable.

Optuna is used only in this package (here, in opening.py, trials.py and storage.py).

A trial's params are `coefficient` (float) and, when several layers are searched, `layer`
(categorical). Its value is the trait delta in the chosen direction (the study's metric
name `trait_delta`); its one constraint is `min_coherence - coherence` (Optuna counts <= 0
as feasible), set with `trial.set_constraint` (Optuna's samplers read it; `steerops
dashboard` shows it to optuna-dashboard, which reads an older form), with a readable
`feasible` user attr. The study's user attrs say
what it optimises in words. What the rest of steerops sees are plain `Proposal`s and
`TrialRecord`s, never Optuna objects.

Sharing and resuming: every worker opens the same study; what changes its shared state
(asking, enqueueing, importing known results, claiming the finalisation) happens under one
study lock (storage.study_lock), so workers ask distinct configs and every queued point is
evaluated once. Each trial records its worker from its creation on; a trial whose worker is
gone (ended on this node, or silent for `grace_s`) is taken over as it stands (its number,
params and place among the others; params not drawn yet are drawn as its asking would have
drawn them) by whoever runs next, at once on the same node. A failed copy would shift the
seeds and numbers of every later trial; taken over, a killed search resumes to the study an
uninterrupted one builds.

The budget (`target`) counts distinct configs: a sampled config equal to one running or done
is dropped, not evaluated. When the sampler proposes only such copies MAX_REPEATS times in a
row, the range holds nothing new it wants to try: the study is marked exhausted and its
search stops short of the target. A proposal of the params of a trial whose answers the
judge's endpoint refused (not retried yet; equal as copies are) fails unasked and counts, as
that trial does: samplers never see failed trials, and would have its answers generated and
refused again and again.
"""

from __future__ import annotations

import contextlib
import json
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.samplers._gp import sampler as gp_sampler
from optuna.trial import TrialState

from steerops.errors import SteeropsError
from steerops.search.opening import (
    check_constraints,
    check_settings,
    describe,
    make_sampler,
)
from steerops.search.storage import FINALISE, open_storage, quiet, study_lock
from steerops.search.trials import (
    CONSTRAINT,
    REPEATS_REFUSED,
    RETRY_OF,
    TrialRecord,
    awaiting_retry,
    copies_before,
    counts,
    refused_twin,
    repeats,
    retried_numbers,
    to_record,
)
from steerops.stats import COHERENCE_DECIMALS, coherent

FINALISED = "complete_trials"  # claim user attr: the study's completed trials it finalises
MAX_REPEATS = 3  # sampled copies in a row that exhaust the study
EXHAUSTED = "exhausted"  # study user attr: the sampler proposes nothing new
TAKEOVERS = "takeovers"  # trial system attr: times taken over from a gone worker
BATCH = "batch"  # trial user attr: the number of the first trial asked with it
_EVALUATED = (TrialState.RUNNING, TrialState.COMPLETE)


@dataclass(frozen=True)
class Space:
    coef_min: float
    coef_max: float
    layers: tuple[int, ...]
    # a coefficient this close to one tried at its layer is a repeat: the sampler's model
    # homes in on its best point and proposes ever smaller steps that change no response
    resolution: float = 0.0

    def holds(self, layer: int, coefficient: float) -> bool:
        return layer in self.layers and self.coef_min <= coefficient <= self.coef_max

    def distributions(self) -> dict[str, Any]:
        dists: dict[str, Any] = {"coefficient": FloatDistribution(self.coef_min, self.coef_max)}
        if len(self.layers) > 1:
            dists["layer"] = CategoricalDistribution(list(self.layers))
        return dists


@dataclass
class Proposal:
    number: int
    layer: int
    coefficient: float
    _trial: Any  # the optuna Trial; only this module touches it
    rows: int | None = None  # rows its evaluation costs, once recorded (`record_rows`)


class SearchStudy:
    def __init__(
        self,
        storage_url: str,
        name: str,
        space: Space,
        min_coherence: float,
        settings: dict[str, Any],
        sampler: str = "gp",
        seed: int = 0,
        startup_trials: int = 4,
        heartbeat_s: int = 30,
        grace_s: int = 120,
        max_retry: int = 3,
    ):
        self.space = space
        self.min_coherence = float(min_coherence)
        self.grace_s, self.max_retry = grace_s, max_retry
        self._taken: list[int] = []  # trial ids taken over from gone workers, to evaluate
        self._kind, self._seed, self._startup = sampler, seed, startup_trials
        make_sampler(sampler, seed, startup_trials)  # an unknown sampler fails before any write
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.storage = open_storage(storage_url, heartbeat_s)
        self._lock = study_lock(storage_url, self.storage, name)
        with self._lock, quiet():
            self.study = optuna.create_study(
                storage=self.storage, study_name=name, direction="maximize", load_if_exists=True
            )
            check_settings(self.study, name, settings)
            check_constraints(self.study, name, sampler)
            describe(self.study, self.min_coherence, settings)
            # Finalisation claims live in a study of their own, so no ask ever pops one.
            self._finals = optuna.create_study(
                storage=self.storage,
                study_name=name + FINALISE,
                direction="maximize",
                load_if_exists=True,
                sampler=optuna.samplers.RandomSampler(),
            )
            self._rounds_seen = len(self._finals.get_trials(deepcopy=False))
        self.name = name

    # ---- counting -------------------------------------------------------------------------
    def _trials(self, states=None):
        return self.study.get_trials(deepcopy=False, states=states)

    def n_done(self) -> int:
        """Trials a search finished: completed, or failed because nothing could be scored
        (imported known results do not count)."""
        trials = self._trials()
        retried = retried_numbers(trials)
        finished = (TrialState.COMPLETE, TrialState.FAIL)
        return sum(counts(t, retried) for t in trials if t.state in finished)

    def n_refused(self) -> int:
        """Trials failed on answers the judge's endpoint refused (`tell`'s `refused`)."""
        return sum(bool(t.user_attrs.get("refused")) for t in self._trials((TrialState.FAIL,)))

    def n_repeated_refused(self) -> int:
        """Trials failed unasked as repeats of a refused trial's params (`REPEATS_REFUSED`)."""
        return sum(REPEATS_REFUSED in t.user_attrs for t in self._trials((TrialState.FAIL,)))

    def n_running(self) -> int:
        return len(self._trials((TrialState.RUNNING,)))

    def n_waiting(self, coefficients: list[float]) -> int:
        """Points enqueued at these coefficients (`search.enqueue`) not yet asked."""
        wanted = {float(c) for c in coefficients}
        waiting = self._trials((TrialState.WAITING,))
        # an enqueued trial holds its point as Optuna's fixed params until it is asked
        fixed = (t.system_attrs.get("fixed_params") or {} for t in waiting)
        return sum(float(f.get("coefficient", "nan")) in wanted for f in fixed)

    def free_slots(self, target: int) -> int:
        """Trials to ask for before `target`; the running ones taken over here are ours."""
        return target - self.n_done() - self.n_running() + len(self._taken)

    def exhausted(self) -> bool:
        return bool(self.study.user_attrs.get(EXHAUSTED))

    def recover_stale(self) -> None:
        """Take over the trials of workers that are gone: `ask` hands them out first, as
        they stand. One taken over more than max_retry times (its config may be what kills
        its workers) is failed for good; the search asks another config instead."""
        with self._lock:
            for trial_id in self._stale(self.study):
                takeovers = self.storage.get_trial(trial_id).system_attrs.get(TAKEOVERS, 0) + 1
                try:
                    if takeovers > self.max_retry:
                        self.storage.set_trial_state_values(trial_id, TrialState.FAIL)
                        continue
                    self.storage.set_trial_system_attr(trial_id, TAKEOVERS, takeovers)
                    self.storage.take_over(trial_id)
                except optuna.exceptions.UpdateFinishedTrialError:
                    continue  # finished meanwhile
                self._taken.append(trial_id)
            self._taken.sort()  # ids grow with trial numbers: in the order they were asked

    def _stale(self, study) -> list[int]:
        study_id = self.storage.get_study_id_from_name(study.study_name)
        return self.storage.stale_trial_ids(study_id, self.grace_s)

    # ---- ask / tell -----------------------------------------------------------------------
    def ask(self, k: int, target: int) -> list[Proposal]:
        """Up to `k` trials, never taking the study past `target` counted trials: the ones
        taken over from gone workers first, then new ones (none once it is exhausted).

        Asking is serialised across workers by the study lock, and each asked trial's
        sampler is seeded by the study's size at that moment (a new trial's number):
        distinct for every worker, reproducible for a given study state. A config equal to
        one already running or done is dropped: an enqueued copy always, a sampled one
        until MAX_REPEATS of them in a row exhaust the study."""
        with self._lock:
            return self._ask(k, target)

    def _ask(self, k: int, target: int) -> list[Proposal]:
        proposals: list[Proposal] = []
        trials = self._trials()
        batch: int | None = None  # the batch asked now: its first trial's number
        top_up = True
        while len(proposals) < k:
            taken = self._taken.pop(0) if self._taken else None
            if taken is None and (self.exhausted() or not top_up):
                break
            try:
                trial = self._draw(taken, len(trials))
                # one read of the study per asked trial; a live optuna Trial does not expose
                # its system attrs, its stored record does
                trials = self._trials()
                proposal, stop = self._admit(trial, trials, taken is not None, target)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # taken over from a slow worker, which told it meanwhile
            if proposal is not None:
                record = next(t for t in trials if t.number == trial.number)
                if taken is not None:
                    batch = record.user_attrs.get(BATCH) if batch is None else batch
                    # a batch killed between its tells was asked whole: its untold trials
                    # are a batch of their own, so the next is asked with all of it told
                    # (new trials beside running ones would be sampled otherwise)
                    top_up = top_up and not _partly_told(record, trials)
                else:
                    batch = trial.number if batch is None else batch
                    trial.set_user_attr(BATCH, batch)
                proposals.append(proposal)
            if stop:
                break
        return proposals

    def _draw(self, taken: int | None, size: int):
        """A new trial, its sampler seeded by the study's size (the trial's number), or a
        taken-over one as it stands, params it lacks drawn as its asking would have."""
        number = size if taken is None else self.storage.get_trial(taken).number
        self.study.sampler = make_sampler(self._kind, self._seed + number, self._startup)
        with quiet():
            if taken is None:
                return self.study.ask(fixed_distributions=self.space.distributions())
            return _resume(self.study, taken, self.space.distributions())

    def _admit(self, trial, trials, taken: bool, target: int) -> tuple[Proposal | None, bool]:
        """(the trial as a proposal, or None when it is dropped; whether to stop asking:
        the target is reached, or the study is exhausted)."""
        record = next(t for t in trials if t.number == trial.number)
        if record.state != TrialState.RUNNING:
            return None, False  # taken over, then told by its slow worker after all
        source = record.user_attrs.get("source")  # a taken-over trial's may be set already
        if source == "surplus" or (not taken and self._is_surplus(trial.number, target, trials)):
            # Another worker took the last slot between our count and our ask.
            trial.set_user_attr("source", "surplus")
            self._requeue_if_queued(record)
            self.study.tell(trial, state=TrialState.FAIL)
            return None, True
        # the resolution is the sampler's: a point queued on purpose (search.enqueue, the
        # design, the band) is dropped only as an exact copy
        queued = "fixed_params" in record.system_attrs
        resolution = 0.0 if queued else self.space.resolution
        if source == "duplicate" or repeats(record, trials, resolution):
            trial.set_user_attr("source", "duplicate")
            self.study.tell(trial, state=TrialState.FAIL)
            if not queued and copies_before(trials, trial.number) + 1 >= MAX_REPEATS:
                self.study.set_user_attr(EXHAUSTED, True)
                return None, True
            return None, False
        # a retry is compared with refused trials as proposals are: near copies of one
        # refused again in this run (an older study's) fail unasked
        near = self.space.resolution if RETRY_OF in record.user_attrs else resolution
        if (twin := refused_twin(record, trials, near)) is not None:
            self._fail_as_refused_repeat(trial, twin, source)
            # it counts, as the trial it repeats does: stop at the target, not past it
            return None, self._is_surplus(trial.number + 1, target, trials)
        if source is None:
            trial.set_user_attr("source", "search")
        layer = int(trial.params.get("layer", self.space.layers[0]))
        rows = record.user_attrs.get("rows")  # recorded before its worker died
        return Proposal(trial.number, layer, float(trial.params["coefficient"]), trial, rows), False

    def _fail_as_refused_repeat(self, trial, twin: int, source: str | None) -> None:
        """Fail a trial unasked: its answers would be refused as trial `twin`'s were (its
        retry, on the next run, asks these params again). It counts, as a refused trial
        does, so a sampler that keeps proposing them cannot keep a run going."""
        if source is None:
            trial.set_user_attr("source", "search")
        trial.set_user_attr(REPEATS_REFUSED, twin)
        trial.set_user_attr("error", f"repeats trial {twin}, whose answers the judge refused")
        self.study.tell(trial, state=TrialState.FAIL)

    @staticmethod
    def _is_surplus(number: int, target: int, trials) -> bool:
        retried = retried_numbers(trials)
        live = [t.number for t in trials if counts(t, retried) or t.state == TrialState.RUNNING]
        return sum(n < number for n in live) >= target

    def _requeue_if_queued(self, record) -> None:
        attrs = record.system_attrs
        if "fixed_params" in attrs or "retry_history" in attrs:  # retries: older studies
            self.study.enqueue_trial(dict(record.params), user_attrs={"source": "enqueued"})

    def record_rows(self, proposal: Proposal, rows: int) -> None:
        """What evaluating the trial costs (0: a results log has it), recorded before its
        rows are generated: a trial taken over after they were logged keeps its cost."""
        proposal._trial.set_user_attr("rows", rows)
        proposal.rows = rows

    def tell(
        self,
        proposal: Proposal,
        trait_mean: float | None,
        coherence: float | None,
        delta: float | None,
        weight: float,
        refused: int = 0,
    ) -> bool:
        """Store an evaluated trial; False when it was finished meanwhile (taken over from
        this worker, taken for gone, and told by the worker that took it over). One with
        `refused` answers the judge's endpoint would not judge fails: its scores leave those
        out, and a later run asks it again (`enqueue_refused`), as steer evaluates such a
        config again."""
        trial = proposal._trial
        try:
            trial.set_user_attr("weight", weight)
            trial.set_user_attr("layer", proposal.layer)
            if refused:  # its means leave the refused answers out: not shown as a result
                trial.set_user_attr("refused", refused)
                trial.set_user_attr("error", f"the judge's endpoint refused {refused} answers")
                self.study.tell(trial, state=TrialState.FAIL)
                return True
            trial.set_user_attr("trait_mean", trait_mean)
            trial.set_user_attr("coherence_mean", coherence)
            if delta is None or coherence is None:  # the judge scored nothing
                trial.set_user_attr("error", "no scores")
                self.study.tell(trial, state=TrialState.FAIL)
                return True
            trial.set_user_attr("feasible", coherent(coherence, self.min_coherence))
            trial.set_constraint(CONSTRAINT, self._violation(coherence))
            self.study.tell(trial, float(delta))
        except optuna.exceptions.UpdateFinishedTrialError:
            return False
        return True

    def abandon(self, proposals: list[Proposal]) -> None:
        """Hand interrupted trials back as they stand: the next run (any worker) takes them
        over at once."""
        for p in proposals:
            with contextlib.suppress(Exception):
                self.storage.release(p._trial._trial_id)

    # ---- finalising -----------------------------------------------------------------------
    @contextlib.contextmanager
    def finalising(self, poll_s: float = 2.0) -> Iterator[bool]:
        """Whether this worker finalises the finished study (held-out evaluation, outputs):
        exactly one of the workers that finish it together does, the others get False.

        A claim is a trial of the study's finalisation study, held (and heartbeated) by the
        finalising worker, recording the study's completed trials (`FINALISED`). A claim of
        the study as it stands, running elsewhere or completed since this worker opened the
        study, means it is taken care of. One of fewer completed trials is not (a worker
        that joined late evaluated retries since): this worker finalises again, once a
        running claim has ended, so two workers never write the outputs at once. A rerun
        opened after the last claim finalises again; a claim whose worker is gone or whose
        body raised is failed and left to the next worker."""
        claim = self._claim_finalisation(poll_s)
        if claim is None:
            yield False
            return
        try:
            yield True
        except BaseException:
            with contextlib.suppress(Exception):
                self._finals.tell(claim, state=TrialState.FAIL)
            raise
        self._finals.tell(claim, float(self.n_done()))

    def _claim_finalisation(self, poll_s: float):
        """A new claim, or None when one covers the study as it stands; waits while a claim
        of fewer completed trials runs."""
        said = False
        while True:
            with self._lock:
                for trial_id in self._stale(self._finals):
                    with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                        self.storage.set_trial_state_values(trial_id, TrialState.FAIL)
                complete = len(self._trials((TrialState.COMPLETE,)))
                claims = self._finals.get_trials(deepcopy=False)
                if any(self._covers(t, complete) for t in claims):
                    return None
                if not any(t.state == TrialState.RUNNING for t in claims):
                    claim = self._finals.ask()
                    claim.set_user_attr(FINALISED, complete)
                    return claim
            if not said:
                print(
                    f"steerops search: another worker is finalising study {self.name!r} "
                    "without its latest completed trials; this one finalises it again once "
                    "that ends (Ctrl-C is safe: the trials are stored, and a rerun finalises)",
                    file=sys.stderr,
                )
                said = True
            time.sleep(poll_s)

    def _covers(self, claim, complete: int) -> bool:
        """The claim is of the study's `complete` completed trials (or more), and runs, or
        completed since this worker opened the study."""
        recorded = claim.user_attrs.get(FINALISED)  # none on an older steerops's claim,
        if isinstance(recorded, int) and recorded < complete:  # which covers as it did
            return False
        return claim.state == TrialState.RUNNING or (
            claim.state == TrialState.COMPLETE and claim.number >= self._rounds_seen
        )

    def record_choice(self, number: int | None, status: str, heldout_coherent: bool) -> None:
        """The trial the search chose on its half (None: nothing qualified), as study user
        attrs: `steerops dashboard` shows it as the study's best trial, plain
        optuna-dashboard beside its own notion of best. Beside it, the search's verdict
        (`chosen_status`): the choice's on the held-out half ("ok", "no effect", "incoherent
        held out"...), since the trial shown as best is the search half's choice, not a
        recommendation; or why nothing was chosen (`chosen_heldout_coherent` None then)."""
        self.study.set_user_attr("chosen_trial", number)
        self.study.set_user_attr("chosen_status", status)
        coherent = None if number is None else heldout_coherent
        self.study.set_user_attr("chosen_heldout_coherent", coherent)
        if "chosen_is_feasible" in self.study.user_attrs:  # an older name of the above
            self.study.set_user_attr("chosen_is_feasible", None)
        # the choice holds for these trials: a study extended since shows Optuna's rule
        complete = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        self.study.set_user_attr("chosen_among", len(complete))

    # ---- seeding the study ----------------------------------------------------------------
    def enqueue_refused(self) -> int:
        """Each trial failed on answers the judge's endpoint refused, enqueued once more with
        its params (a filter may have lifted since); how many. Once a run: a retry that is
        refused again waits for the next. An exhausted study asks nothing more, retries
        included: none is enqueued, and the failed trials keep counting. A trial failed
        unasked as a repeat of one (`REPEATS_REFUSED`) gets no retry: that one's asks its
        params."""
        with self._lock:
            if self.exhausted():
                return 0
            trials = self._trials()
            retried = retried_numbers(trials)
            again = [t for t in trials if awaiting_retry(t, retried)]
            for t in again:
                self.study.enqueue_trial(
                    dict(t.params), user_attrs={"source": "enqueued", RETRY_OF: t.number}
                )
            return len(again)

    def enqueue_startup(self) -> None:
        """Once per study: a seeded stratified design, one coefficient drawn in each of n
        equal slices of the range (layers dealt round-robin in a shuffled order), so no part
        of the range is skipped. A known result already in the study stands in for the
        design point of the slice it falls in at its layer (a point drawn there anyway sat
        next to it: 0.2516 by a known 0.25 scored the same); a study that has run trials
        gets none.

        The study lock makes this once-only; a study that holds copies anyway (enqueued by
        an older version) has the second copy of each point dropped by `ask`."""
        with self._lock:
            if self.study.user_attrs.get("startup_enqueued"):
                return  # another worker (or an earlier run) did it
            trials = self._trials()
            only = self.space.layers[0]  # a single layer is no param (older known trials)
            known = [
                (t.user_attrs.get("layer", t.params.get("layer", only)), t.params["coefficient"])
                for t in trials
                if t.user_attrs.get("source") == "known"
            ]
            started = any(
                t.state != TrialState.WAITING and t.user_attrs.get("source") != "known"
                for t in trials
            )
            n = self._startup
            if n > 0 and not started:
                rng = random.Random(self._seed)
                lo, hi = self.space.coef_min, self.space.coef_max
                layers = list(self.space.layers)
                rng.shuffle(layers)
                for i in range(n):
                    layer = layers[i % len(layers)]
                    coefficient = lo + (hi - lo) * (i + rng.random()) / n
                    if any(at == layer and _slice_of(c, lo, hi, n) == i for at, c in known):
                        continue
                    params: dict[str, Any] = {"coefficient": coefficient}
                    if len(layers) > 1:
                        params["layer"] = layer
                    self.study.enqueue_trial(
                        params, user_attrs={"source": "enqueued"}, skip_if_exists=True
                    )
            # Marked only once the design is in, so a crash in between leaves it to redo.
            self.study.set_user_attr("startup_enqueued", True)

    def enqueue(self, layer: int, coefficient: float) -> None:
        if not self.space.coef_min <= coefficient <= self.space.coef_max:
            raise SteeropsError(
                f"search.enqueue: coefficient {coefficient:g} is outside the "
                f"searched range [{self.space.coef_min:g}, "
                f"{self.space.coef_max:g}]"
            )
        params: dict[str, Any] = {"coefficient": float(coefficient)}
        if len(self.space.layers) > 1:
            params["layer"] = layer
        with self._lock:
            self.study.enqueue_trial(params, user_attrs={"source": "enqueued"}, skip_if_exists=True)

    def _violation(self, coherence: float) -> float:
        """The coherence constraint's value (<= 0: feasible), the coherence read as the bar
        and the page read it (`stats.COHERENCE_DECIMALS`, as `stats.coherent`)."""
        return self.min_coherence - round(coherence, COHERENCE_DECIMALS)

    def add_known(
        self,
        layer: int,
        coefficient: float,
        weight: float,
        trait_mean: float,
        coherence: float,
        delta: float,
        rows: int,
    ) -> bool:
        """Add an already evaluated config as a completed trial (skipped if present)."""
        params: dict[str, Any] = {"coefficient": float(coefficient)}
        if len(self.space.layers) > 1:
            params["layer"] = layer
        if not self.space.holds(layer, coefficient):
            return False
        dists = {k: d for k, d in self.space.distributions().items() if k in params}
        with self._lock:
            # a running one too: a killed run's trial, logged before it was told
            if any(t.params == params for t in self._trials(_EVALUATED)):
                return False
            known = optuna.trial.create_trial(
                params=params,
                distributions=dists,
                value=float(delta),
                user_attrs={
                    "feasible": coherent(coherence, self.min_coherence),
                    "source": "known",
                    "weight": weight,
                    "layer": layer,
                    "rows": rows,
                    "trait_mean": trait_mean,
                    "coherence_mean": coherence,
                },
            )
            known.set_constraint(CONSTRAINT, self._violation(coherence))
            self.study.add_trial(known)
        return True

    # ---- reading back ---------------------------------------------------------------------
    def records(self) -> list[TrialRecord]:
        default_layer = self.space.layers[0]
        trials = self._trials((TrialState.COMPLETE, TrialState.FAIL, TrialState.RUNNING))
        return [r for r in (to_record(t, default_layer) for t in trials) if r is not None]


def _partly_told(record, trials) -> bool:
    """Whether a trial's batch has a trial told already (a trial asked before batches were
    recorded has none)."""
    batch = record.user_attrs.get(BATCH)
    finished = (TrialState.COMPLETE, TrialState.FAIL)
    return batch is not None and any(
        t.user_attrs.get(BATCH) == batch and t.state in finished for t in trials
    )


def _resume(study, trial_id: int, dists: dict[str, Any]):
    """A taken-over trial as `Study.ask` returns one: params it lacks drawn now, or kept
    from the draw its asking shared before its worker died."""
    study._thread_local.cached_all_trials = None  # as ask: the sampler reads a fresh study
    stored = study._storage.get_trial(trial_id)
    # Optuna's GP sampler writes its draw to the trial's system attrs before the params (to
    # share it with trials running beside it): a worker killed in between leaves one.
    # Drawn again, the GP sampler would count it as a trial running beside this one and
    # draw other params. Stored before the Trial reads the trial, so none is drawn again;
    # a value the distribution does not hold is drawn again, as optuna itself would.
    fixed = stored.system_attrs.get("fixed_params", {})  # a queued point's, which ask keeps
    for name, value in _shared_draw(stored).items():
        if name in dists and name not in stored.params and name not in fixed:
            try:
                internal = dists[name].to_internal_repr(value)
            except (ValueError, TypeError):
                continue
            if dists[name]._contains(internal):
                study._storage.set_trial_param(trial_id, name, internal, dists[name])
    trial = optuna.Trial(study, trial_id)
    for name, dist in dists.items():
        trial._suggest(name, dist)
    return trial


def _shared_draw(trial) -> dict[str, Any]:
    """The params the GP sampler drew for a running trial and shared in its system attrs
    (chunked JSON), as it reads them back; empty: none, or an unreadable one. (The TPE
    sampler the search builds is univariate and shares none.) The key is optuna's private
    name, pinned by the optuna<6 requirement; the kill test fails if it stops being
    written."""
    key = gp_sampler._RELATIVE_PARAMS_KEY
    chunks: list[str] = []
    while chunk := trial.system_attrs.get(f"{key}:{len(chunks)}"):
        chunks.append(chunk)
    try:
        draw = json.loads("".join(chunks)) if chunks else {}
    except ValueError:
        return {}
    return draw if isinstance(draw, dict) else {}


def _slice_of(coefficient: float, lo: float, hi: float, n: int) -> int:
    """Which of n equal slices of [lo, hi] holds the coefficient (hi: the last)."""
    if hi <= lo:
        return 0
    return min(n - 1, int((coefficient - lo) / (hi - lo) * n))
