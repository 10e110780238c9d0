"""What every model-backed judge shares: prompts, the disk cache and the None threshold.

A subclass only says how to answer a list of uncached prompts (`_answer`); answers are
written to the cache as they arrive, so an interrupted run keeps what it paid for. A prompt
the endpoint refused on its own (`Unanswered`) is unscored, said in one warning line, and
not cached; `unanswered` names its (question, response) pair, so the stages do not record
a result that would serve the refusal again (generate vets again, steer evaluates the config
again on a rerun).

The judge's id (`kind:model:prompts hash:settings hash`) keys the cache: the settings are
everything else that shapes an answer (for the endpoint judge: its URL, top_logprobs and
the request form; for a local one its weights and dtype) plus `judge.version`, a label the
user bumps when the judge behind an unchanged name changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
from collections import Counter
from collections.abc import Iterator
from typing import Any, NamedTuple

from tqdm.auto import tqdm

from steerops.errors import SteeropsError
from steerops.judges.base import Score, check_pairs
from steerops.judges.cache import Entry, JudgeCache, cache_key
from steerops.judges.prompts import KINDS, JudgePrompts
from steerops.judges.scoring import thresholded


class Job(NamedTuple):
    """One prompt to send to the judge: which score, for which (question, response)."""

    kind: str
    question: str
    response: str


class Unanswered(NamedTuple):
    """A prompt the endpoint refused on its own (e.g. a content filter): unscored in this
    run and not cached, so a rerun asks again."""

    reason: str


class UnreadableJudge(SteeropsError):
    """The judge's answers cannot be read (a tokenizer that writes numbers digit by digit).
    Seen for certain (`forget` None): every answer of the judge is dropped from the cache
    and the cache remembers it, so a rerun over just those pairs is not served them.
    Inferred from a run of answers (`forget`: their cache keys): only those are dropped."""

    def __init__(self, message: str, forget: list[str] | None = None):
        super().__init__(message)
        self.forget = forget


def _keep_landing(answers, keep) -> None:
    """Ctrl-C (or SIGTERM) while an answer was being kept, not while `answers` waited for
    one: handed to `answers`, which keeps the replies already on their way (they are paid
    for) before it stops, the one being kept among them. One that landed inside `answers`
    has ended it already."""
    try:
        item = answers.throw(KeyboardInterrupt)
        while True:
            keep(*item)
            item = next(answers)
    except (KeyboardInterrupt, StopIteration):
        pass  # a second Ctrl-C stops at once
    finally:
        answers.close()  # its requests in flight stop and its queue is dropped now


class CachedJudge:
    kind_name = "judge"
    names_served = False  # whether its endpoint names the model behind each answer

    def __init__(
        self,
        model_name: str,
        prompts: JudgePrompts,
        cache: JudgeCache,
        min_prob_mass: float,
        progress: bool = True,
        settings: dict[str, Any] | None = None,
    ):
        self.model_name = model_name
        self.prompts = prompts
        self.cache = cache
        self.min_prob_mass = min_prob_mass
        self.progress = progress
        self.settings = dict(settings or {})
        self.id = f"{self.kind_name}:{model_name}:{prompts.hash}:{settings_hash(self.settings)}"
        self.calls = 0  # prompts actually sent to the judge model by this object
        self.cache_hits = 0  # prompts this object's scores took from the cache instead
        # (question, response) pairs of the latest `score` call the endpoint refused a
        # prompt of: unscored and not cached, so the stages keep no result built on them
        self.unanswered: set[tuple[str, str]] = set()
        # whether this judge has answered before (a cache hit): its endpoint takes the request
        self.answered_before = False
        self._mixed_said = False  # whether answers from two served models were warned about
        self._refusal_said = False  # whether a refused prompt was warned about
        self._refused: set[str] = set()  # cache keys of prompts refused in this process
        # {cache key: the model the endpoint named} of every answer this object's scores
        # used, fresh or cached: which judge stood behind the run's numbers (`served_summary`)
        self.served: dict[str, str] = {}

    def refuse_if_found_unreadable(self) -> None:
        """UnreadableJudge when an earlier run found this judge's answers unreadable."""
        found_out = self.cache.unreadable(self.id)
        if found_out is not None:
            raise UnreadableJudge(
                f"{found_out} (found by an earlier run; if the judge behind this name changed, "
                "set a new judge.version)"
            )

    def score(self, questions: list[str], responses: list[str]) -> list[Score]:
        check_pairs(questions, responses)
        self.refuse_if_found_unreadable()
        pairs = zip(questions, responses, strict=True)
        jobs = [Job(kind, q, r) for q, r in pairs for kind in KINDS]
        keys = [cache_key(self.id, *job) for job in jobs]
        entries = self.cache.get_many(keys)
        self.cache_hits += len(entries)
        todo = {k: job for k, job in zip(keys, jobs, strict=True) if k not in entries}
        # a prompt refused earlier in this process is not sent again (a filter refuses it
        # again); a new process asks it again
        self.unanswered = set()
        for key in [k for k in todo if k in self._refused]:
            job = todo.pop(key)
            entries[key] = (None, 0.0)
            self.unanswered.add((job.question, job.response))
        # an answer of this judge in the cache, from this call or any before it
        self.answered_before = (
            self.answered_before or bool(entries) or self.cache.has_answers(self.id)
        )
        refused: list[str] = []
        fresh: dict[str, int] = {}  # {model the endpoint named: answers of this call}
        if todo:
            todo_keys = list(todo)
            bar = tqdm(
                total=len(todo_keys),
                desc=f"judge {self.kind_name}",
                unit="prompt",
                disable=None if self.progress else True,
                leave=False,
            )

            def keep(i: int, entry: Entry | Unanswered) -> None:
                key = todo_keys[i]
                if key in entries:  # handed again after a Ctrl-C: it was kept
                    return
                if isinstance(entry, Unanswered):
                    refused.append(entry.reason)
                    self._refused.add(key)
                    self.unanswered.add((todo[key].question, todo[key].response))
                else:
                    served = self._served_by(key)
                    self.cache.put(key, self.id, todo[key].kind, entry, served)
                    if served is not None:
                        fresh[served] = fresh.get(served, 0) + 1
                        self.served[key] = served
                self.calls += 1
                bar.update()
                # last: a Ctrl-C before it has the answer handed again and stored whole
                entries[key] = (None, 0.0) if isinstance(entry, Unanswered) else entry

            with bar, _forgetting_if_unreadable(self.cache, self.id):
                answers = self._answer([todo[k] for k in todo_keys])
                try:
                    for i, entry in answers:
                        keep(i, entry)
                except KeyboardInterrupt:
                    _keep_landing(answers, keep)
                    raise
        if refused and not self._refusal_said:
            self._refusal_said = True  # once a judge: a stage scores chunk after chunk
            print(
                f"warning: {refused[0]} (and {len(refused) - 1} more of {len(todo)} prompts "
                "sent): counted unscored in this run and kept nowhere, so a rerun asks again; "
                "later refusals in this run are not said again (the stages count them)",
                file=sys.stderr,
            )
        if self.names_served:
            cached = list(dict.fromkeys(k for k in keys if k not in todo))
            # the cache is asked only for answers this judge has not looked up before
            self.served.update(self.cache.served_by([k for k in cached if k not in self.served]))
            if fresh and not self._mixed_said:
                models = Counter(self.served[k] for k in cached if k in self.served)
                self._warn_if_mixed(fresh, models)
        values = [thresholded(*entries[k], self.min_prob_mass) for k in keys]
        return [(values[2 * i], values[2 * i + 1]) for i in range(len(questions))]

    def _warn_if_mixed(self, fresh: dict[str, int], cached: dict[str, int]) -> None:
        """Say so when the endpoint named more than one model for this call's answers, its
        own or the cached ones it serves: an alias (`gpt-4.1-mini`) moved to a new snapshot,
        and the scores' means mix two judges that the judge's id cannot tell apart."""
        models = sorted(set(fresh) | set(cached))
        if len(models) < 2:
            return
        self._mixed_said = True  # once a judge: a stage scores chunk after chunk
        counts = ", ".join(
            f"{m!r} ({fresh.get(m, 0)} answered now, {cached.get(m, 0)} cached)" for m in models
        )
        print(
            f"warning: judge: the endpoint named {len(models)} models as answering "
            f"{self.model_name!r} in one batch of scores: {counts} (that batch's counts; not "
            "said again this run); their means mix judges. To judge every answer with the "
            "model serving now, set a new judge.version",
            file=sys.stderr,
        )

    def served_summary(self) -> str | None:
        """The models the endpoint named for the answers this judge's scores used, most
        answers first ("gpt-4.1-mini-2025-04-14 (1040 answers)"); None when it named none."""
        counts = Counter(self.served.values()).most_common()
        return ", ".join(f"{m} ({n} answers)" for m, n in counts) or None

    def _served_by(self, key: str) -> str | None:
        """The model the endpoint said answered the prompt of cache key `key`, if it says."""
        return None

    def _answer(self, jobs: list[Job]) -> Iterator[tuple[int, Entry | Unanswered]]:
        """Yield (index into jobs, (mean, mass) or Unanswered) for every job, in any order."""
        raise NotImplementedError


@contextlib.contextmanager
def _forgetting_if_unreadable(cache: JudgeCache, judge_id: str) -> Iterator[None]:
    try:
        yield
    except UnreadableJudge as exc:
        if exc.forget is None:
            cache.drop_judge(judge_id, str(exc))
        else:
            cache.drop(exc.forget)
        raise


def settings_hash(settings: dict[str, Any]) -> str:
    blob = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:12]
