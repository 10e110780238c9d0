"""What a study's stored trials say, read without the study: the plain records the rest of
steerops sees (`TrialRecord`, never Optuna objects), which trials count toward the target,
and which are copies of others.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from optuna.trial import FrozenTrial, TrialState

CONSTRAINT = "coherence"
SEARCHED = ("search", "enqueued")  # sources whose completed trials count
# a trial enqueued again for one that failed on answers the judge's endpoint refused
RETRY_OF = "retry_of"
# a trial failed unasked: its params are a refused trial's, not retried yet (its number)
REPEATS_REFUSED = "repeats_refused"
_STATE_NAMES = {s: s.name.lower() for s in TrialState}


@dataclass
class TrialRecord:
    number: int
    layer: int
    coefficient: float
    weight: float | None
    trait_mean: float | None
    coherence_mean: float | None
    trait_delta: float | None
    feasible: bool | None
    state: str
    source: str
    rows: int


def to_record(t: FrozenTrial, default_layer: int) -> TrialRecord | None:
    """A trial as the search reports it (None: a surplus trial, or one with no params)."""
    attrs = t.user_attrs
    if attrs.get("source") == "surplus" or "coefficient" not in t.params:
        return None
    constraint = violation(t)
    return TrialRecord(
        number=t.number,
        layer=int(t.params.get("layer", attrs.get("layer", default_layer))),
        coefficient=float(t.params["coefficient"]),
        weight=attrs.get("weight"),
        trait_mean=attrs.get("trait_mean"),
        coherence_mean=attrs.get("coherence_mean"),
        trait_delta=t.value if t.state == TrialState.COMPLETE else None,
        feasible=None if constraint is None else bool(constraint <= 0),
        state=_STATE_NAMES[t.state],
        # a repeat of a refused trial's params shows as such, not as a failed search trial
        source="repeat" if REPEATS_REFUSED in attrs else attrs.get("source", "search"),
        rows=int(attrs.get("rows", 0)),
    )


def violation(trial) -> float | None:
    """The trial's coherence constraint (<= 0: feasible), in either form a study holds it
    (named, as `trial.set_constraint` stores it, or the list studies of older steerops
    versions hold)."""
    constraints = trial.constraints
    if CONSTRAINT in constraints:
        return constraints[CONSTRAINT]
    return next(iter(constraints.values()), None)


def counts(t, retried: Collection[int] = ()) -> bool:
    """The trial counts toward the target: a search's completed trial, or one failed because
    nothing could be scored or the judge's endpoint refused some of its answers (not once a
    later trial retries it: `retried`, the numbers `RETRY_OF` names), or failed unasked as
    a repeat of such a trial (not once that one is retried: the retry asks its params)."""
    if t.state == TrialState.COMPLETE:
        return t.user_attrs.get("source", "search") in SEARCHED
    return (
        t.state == TrialState.FAIL
        and "error" in t.user_attrs
        and t.number not in retried
        and t.user_attrs.get(REPEATS_REFUSED) not in retried
    )


def retried_numbers(trials) -> set[int]:
    """The trials a later one was enqueued to retry (`RETRY_OF`)."""
    return {n for t in trials if (n := t.user_attrs.get(RETRY_OF)) is not None}


def repeats(record, trials, resolution: float = 0.0) -> bool:
    """Another trial runs or ran these params (one that failed does not count): the same
    layer and a coefficient within `resolution` of this one's (0: the exact params)."""
    return any(
        _same_config(t, record, resolution) and t.state in (TrialState.RUNNING, TrialState.COMPLETE)
        for t in trials
    )


def refused_twin(record, trials, resolution: float = 0.0) -> int | None:
    """The number of a trial of these params (as `repeats` compares them) that failed on
    answers the judge's endpoint refused and is not retried yet (None: none). Samplers never
    see failed trials, so they propose such params again, and each proposal would generate
    answers only to have them refused again. A retry is not its refused trial's twin: that
    trial is retried."""
    retried = retried_numbers(trials)
    return next(
        (
            t.number
            for t in trials
            if awaiting_retry(t, retried) and _same_config(t, record, resolution)
        ),
        None,
    )


def awaiting_retry(t, retried: Collection[int]) -> bool:
    """A trial failed on answers the judge's endpoint refused that no later trial retries
    yet (`retried`: `retried_numbers` of the study)."""
    return (
        t.state == TrialState.FAIL
        and bool(t.user_attrs.get("refused"))
        and (t.number not in retried)
    )


def _same_config(t, record, resolution: float) -> bool:
    """Another trial at the same layer with a coefficient within `resolution` of `record`'s."""
    if t.number == record.number or "coefficient" not in t.params:
        return False
    if t.params.get("layer") != record.params.get("layer"):
        return False
    gap = abs(float(t.params["coefficient"]) - float(record.params["coefficient"]))
    return gap <= resolution


def copies_before(trials, number: int) -> int:
    """Sampled copies in a row just before trial `number` (a fresh trial ends the run;
    queued points, known results and surplus trials are not the sampler's)."""
    n = 0
    for t in sorted(trials, key=lambda t: t.number, reverse=True):
        source = t.user_attrs.get("source")
        if t.number >= number or t.state == TrialState.WAITING:
            continue
        if source == "duplicate" and "fixed_params" not in t.system_attrs:
            n += 1
        elif source in ("search", "enqueued"):
            break
    return n
