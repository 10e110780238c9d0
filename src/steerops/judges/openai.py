"""Judge behind any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, llama.cpp...).

Each prompt is one request; the score is the probability-weighted mean over the integer
tokens 0-100 among the first answer token's top log-probabilities (see `scoring`). A judge
whose tokenizer splits numbers into digits cannot be read this way and is refused. Requests
run concurrently and go through the disk cache first.

The API key is read from the environment variable `judge.api_key_env` and lives only in the
request header: never logged, never cached, scrubbed from error messages. With
`judge.require_key: false` an unset variable means "send no key" (local servers).
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
import threading
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Any

from steerops.errors import SteeropsError
from steerops.judges.cache import Entry, JudgeCache, cache_key, open_cache
from steerops.judges.cached import CachedJudge, Job, Unanswered, UnreadableJudge
from steerops.judges.number_probe import digit_by_digit_error, writes_digit_by_digit
from steerops.judges.prompts import JudgePrompts, prompts_for
from steerops.judges.scoring import as_score_int, integer_probs, token_text, weighted_score
from steerops.judges.throttle import Throttle
from steerops.judges.transport import Refused, RetryPolicy, Stopped, post_json, reach, shown
from steerops.redact import shown_url

# The request form every answer comes from (part of the judge's cache identity).
_REQUEST = {"max_tokens": 1, "temperature": 0, "logprobs": True}
# Tokens actually asked for: the second shows a number written digit by digit, the rest
# the scale of an answer written as a fraction ("7/10", "7 out of 10", 5 tokens with GPT-4o's
# and Llama 3's tokenizers) or a decimal ("0.7"). The score reads the first token's
# alternatives, so the cache identity keeps max_tokens 1: answers cached before the scale
# was read keep their score (a new judge.version judges them again).
_SENT_TOKENS = 6
# a denominator other than 100 after the number, or a 0-1 decimal
_FRACTION = re.compile(r"(?:/|(?:out\s+)?of\b)\s*(\d+)")
_DECIMAL = re.compile(r"\.\d")
# Answers whose alternatives hold numbers, none of two digits, before a tokenizer is taken
# to write numbers digit by digit (a whole-number tokenizer's 20 alternatives on a 0-100
# scale hold "10", "20"... long before).
_DIGIT_ONLY_ANSWERS = 20
# Fewer alternatives than this cannot tell the two apart: a whole-number judge confident of
# a low score ("0", "5") lists only single digits among 3 alternatives. The check of the
# answer's second token still refuses every two-digit answer a digit tokenizer writes.
_ALTERNATIVES_TO_TELL = 10
# Refusals (HTTP 400) of the first prompts, of this many (question, response) pairs and none
# answered: the endpoint refuses the request (a pair's two prompts share its answer, which a
# content filter may refuse twice).
_REFUSED_PAIRS_BEFORE_AN_ANSWER = 3
# Answers written digit by digit ("8" "5") before a judge is refused: one may be a glitch.
_SPLIT_ANSWERS_TO_REFUSE = 2
# On an interrupt, how long the replies already on their way are waited for (paid for:
# cached, so a rerun does not ask them again) before the call stops
_IN_FLIGHT_GRACE_S = 3.0
# prompts in a row whose every reply lacked logprobs, after answers with them, that mean the
# endpoint stopped sending them (fewer are a gateway's hiccups: those prompts are unscored)
_BARE_IN_A_ROW = 3


class _NoLogprobs(SteeropsError):
    """A reply without the answer's top_logprobs (see `OpenAIJudge._ask`)."""


class _Declined(Refused):
    """A 200 reply declining to judge this prompt: its own problem, and proof that the
    endpoint takes the request (unlike a 400 before any answer, which may refuse them all)."""


class _Split(_Declined):
    """An answer written as several number tokens ("8" "5"): unscored and asked again, until
    a second one shows the judge's tokenizer writes numbers digit by digit."""


class _Skipped(Exception):
    """A queued job not sent, or a retry not made, because another job failed."""


class OpenAIJudge(CachedJudge):
    kind_name = "openai"
    names_served = True  # each reply's `model`

    def __init__(
        self,
        base_url: str,
        model: str,
        prompts: JudgePrompts,
        cache: JudgeCache,
        *,
        api_key: str = "",
        min_prob_mass: float = 0.25,
        top_logprobs: int = 20,
        concurrency: int = 8,
        policy: RetryPolicy | None = None,
        progress: bool = True,
        version: str = "",
    ):
        # The endpoint is part of the key: another server may answer to the same model name.
        endpoint = base_url.rstrip("/")
        settings = {**_REQUEST, "top_logprobs": top_logprobs, "version": version}
        settings["endpoint"] = endpoint
        super().__init__(model, prompts, cache, min_prob_mass, progress, settings)
        self.url = endpoint + "/chat/completions"
        self.top_logprobs = top_logprobs
        self.concurrency = concurrency
        self.policy = policy or RetryPolicy()
        # fewer requests in flight while the endpoint answers 429 (`throttle.Throttle`)
        self.throttle = Throttle(concurrency, self.url)
        self._api_key = api_key
        self._answered = False  # until one request succeeded, requests go one at a time
        # prompts in a row left unscored for replies without logprobs (`_no_logprobs`)
        self._bare_in_a_row = 0
        self._tokens_lock = threading.Lock()
        self._digit_only_answers: list[str] = []  # cache keys of answers of one digit
        self._wide_numbers_seen = False
        self._split_answers = 0
        self._served: dict[str, str] = {}  # {cache key: the model the reply named}
        self._interrupted = threading.Event()  # `interrupt`: send nothing more, ever
        self._live: set[threading.Event] = set()  # each running `_answer`'s stop signal

    @classmethod
    def check_params(cls, params, trait) -> None:
        """Refuse what `from_params` would refuse (URL, model, rubric, an unset key
        variable) without building the judge or sending anything; the key is not kept."""
        _checked(params, trait)

    @classmethod
    def reach(cls, params, trait) -> None:
        """One GET of the endpoint's model list before any work: an endpoint that does not
        answer, or refuses the key, then costs a second, not a generated chunk. Then, for a
        judge the cache holds no answer of (a rerun asks nothing), one short request: a
        judge that writes numbers digit by digit is refused now, and the cache remembers it
        (`number_probe`), as it remembers one scoring found out."""
        prompts, api_key = _checked(params, trait)
        base, timeout_s = params.judge.base_url.rstrip("/"), min(params.judge.timeout_s, 30.0)
        listing = reach(base + "/models", _auth(api_key), timeout_s, api_key)
        _say_unlisted(params.judge.model, listing, base + "/models", api_key)
        judge = cls._of(params, prompts, api_key)
        try:
            judge.refuse_if_found_unreadable()
            if judge.cache.has_answers(judge.id):
                return  # it has answered readably: nothing to ask
            model = params.judge.model
            if writes_digit_by_digit(judge.url, model, _auth(api_key), timeout_s, api_key):
                error = digit_by_digit_error(model)
                judge.cache.drop_judge(judge.id, str(error))
                raise error
        finally:
            judge.cache.close()

    @classmethod
    def from_params(cls, params, trait) -> OpenAIJudge:
        cfg = params.judge
        prompts, api_key = _checked(params, trait)
        if api_key and _in_the_clear(cfg.base_url):
            host = urllib.parse.urlsplit(cfg.base_url).hostname
            print(
                f"warning: judge.base_url is plain http to {host}: the API key goes "
                "unencrypted over the network (use https)",
                file=sys.stderr,
            )
        return cls._of(params, prompts, api_key)

    @classmethod
    def _of(cls, params, prompts: JudgePrompts, api_key: str) -> OpenAIJudge:
        """The judge `params` describe, its cache open (no request sent)."""
        cfg = params.judge
        policy = RetryPolicy(cfg.max_retries, cfg.backoff_s, cfg.max_backoff_s, cfg.timeout_s)
        return cls(
            cfg.base_url,
            cfg.model,
            prompts,
            open_cache(params),
            api_key=api_key,
            min_prob_mass=cfg.min_prob_mass,
            top_logprobs=cfg.top_logprobs,
            concurrency=cfg.concurrency,
            policy=policy,
            version=cfg.version,
        )

    def interrupt(self) -> None:
        """Stop scoring from another thread (steer's, on Ctrl-C while this judge scores a
        chunk beside generation): queued prompts are not sent and no retry is made; the
        replies already on their way are waited for a moment (`_IN_FLIGHT_GRACE_S`); the
        call raises `Stopped`, and the answers it received stay cached for a rerun."""
        self._interrupted.set()
        with self._tokens_lock:
            live = list(self._live)
        for stop in live:
            stop.set()

    def _check_interrupted(self) -> None:
        if self._interrupted.is_set():
            raise Stopped("judge: interrupted; the answers received so far are cached")

    def _answer(self, jobs: list[Job]) -> Iterator[tuple[int, Entry | Unanswered]]:
        first = 0
        refused: list[Unanswered] = []
        refused_pairs: set[tuple[str, str]] = set()
        while first < len(jobs) and not self._answered:
            self._check_interrupted()
            # Requests go alone until one is answered: a bad key, URL or model costs one
            # request, not one per worker. A prompt the endpoint refuses (HTTP 400: a content
            # filter on a harmful answer, a prompt over its context) is that prompt's own
            # problem once the endpoint has answered this judge, here or in the cache;
            # before that, a few refusals in a row mean it refuses the request itself.
            try:
                entry = self._ask(jobs[first], stop=self._interrupted)
            except Refused as exc:
                if isinstance(exc, _Declined):
                    self._answered = True  # the rest can go in parallel
                else:
                    refused_pairs.add(jobs[first][1:])
                    if not self.answered_before and (
                        len(refused_pairs) == _REFUSED_PAIRS_BEFORE_AN_ANSWER
                        or first + 1 == len(jobs)
                    ):
                        raise
                refused.append(Unanswered(str(exc)))
            else:
                self._answered = True
                try:
                    yield first, entry
                except KeyboardInterrupt:  # landed while the caller kept it: handed again
                    yield first, entry  # (the caller keeps an answer once)
                    raise
            first += 1
        yield from enumerate(refused)  # the first jobs, each refused on its own
        jobs, offset = jobs[first:], first
        if not jobs:
            return
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="steerops-judge")
        # set by the first failure or an interrupt: queued jobs send nothing, none retries
        failed = threading.Event()
        abandon = threading.Event()  # set on the way out: the requests in flight stop
        pending: dict = {}
        try:  # from before the first submit: a Ctrl-C while submitting cancels the queue
            with self._tokens_lock:
                self._live.add(failed)
            if self._interrupted.is_set():
                failed.set()
            for i, job in enumerate(jobs):
                pending[pool.submit(self._ask_unless, failed, abandon, job)] = i
            yield from self._collect(pending, offset, failed)
        except KeyboardInterrupt:
            # Ctrl-C or SIGTERM on the scoring thread itself (generate's vetting, a baseline):
            # the replies on their way are paid for, so kept, as on an `interrupt()` from
            # another thread
            yield from self._landing(pending, failed, offset)
            raise
        finally:
            # On error, Ctrl-C (or an abandoned generator) drop queued requests, and those in
            # flight stop before their next retry; answers already yielded are cached, so a
            # re-run resumes.
            failed.set()
            abandon.set()
            pool.shutdown(wait=False, cancel_futures=True)
            with self._tokens_lock:
                self._live.discard(failed)

    def _collect(
        self, pending: dict, offset: int, failed: threading.Event
    ) -> Iterator[tuple[int, Entry | Unanswered]]:
        """The answers as they land, until none is pending or an interrupt."""
        while pending:
            # woken now and then to notice an interrupt without waiting for a reply
            done, _ = wait(pending, timeout=0.25, return_when=FIRST_COMPLETED)
            # Keep the successes of this round before raising the failure.
            for future in sorted(done, key=lambda f: f.exception() is not None):
                if not isinstance(future.exception(), _Skipped):
                    # re-raises the worker's SteeropsError
                    item = (offset + pending[future], future.result())
                    # pending until the caller has kept it: a Ctrl-C landing on this thread
                    # anywhere up to here hands it to `_landing` again (callers keep once)
                    yield item
                del pending[future]
            if self._interrupted.is_set():
                yield from self._landing(pending, failed, offset)
            self._check_interrupted()  # after this round's answers: paid for, so kept

    def _landing(
        self, pending: dict, failed: threading.Event, offset: int
    ) -> Iterator[tuple[int, Entry | Unanswered]]:
        """On an interrupt: queued prompts are not sent, and the answers of the requests in
        flight that land within the grace are kept (a failure among them is no news: the
        call is stopping)."""
        failed.set()
        grace = min(_IN_FLIGHT_GRACE_S, self.policy.timeout_s)
        done, _ = wait(pending, timeout=grace)
        for future in done:
            if future.exception() is None:
                yield offset + pending[future], future.result()
            del pending[future]  # after the caller kept it, as in `_collect`

    def _ask_unless(
        self, failed: threading.Event, abandon: threading.Event, job: Job
    ) -> Entry | Unanswered:
        # A worker may take the next job before the caller sees a failure and cancels the
        # queue; checking here keeps "fail at once" true (one 401 is one request).
        if failed.is_set():
            raise _Skipped
        try:
            return self._ask(job, stop=abandon, no_retry=failed)
        except Stopped:  # stopped by the failure being raised, not a failure of its own
            raise _Skipped from None
        except Refused as exc:  # this prompt's own problem: the endpoint answers others
            return Unanswered(str(exc))
        except BaseException:
            failed.set()
            raise

    def _ask(
        self,
        job: Job,
        stop: threading.Event | None = None,
        no_retry: threading.Event | None = None,
    ) -> Entry:
        body = {
            "model": self.model_name,
            "messages": self.prompts.messages(*job),
            **_REQUEST,
            "max_tokens": _SENT_TOKENS,
            "top_logprobs": self.top_logprobs,
        }
        halt = stop or threading.Event()
        for attempt in range(self.policy.max_retries + 1):
            reply = post_json(
                self.url,
                body,
                _auth(self._api_key),
                self.policy,
                self._api_key,
                stop,
                no_retry,
                self.throttle,
            )
            try:
                top = self._top_logprobs(reply, job)
                break
            except _NoLogprobs as exc:
                self._no_logprobs(exc, attempt, halt, no_retry)
        with self._tokens_lock:
            self._bare_in_a_row = 0
        entry = weighted_score(integer_probs(top))
        served = reply.get("model") if isinstance(reply, dict) else None
        if isinstance(served, str) and (served := _model_name(served, self._api_key)):
            with self._tokens_lock:
                self._served[cache_key(self.id, *job)] = served
        return entry

    def _no_logprobs(
        self,
        exc: _NoLogprobs,
        attempt: int,
        stop: threading.Event,
        no_retry: threading.Event | None,
    ) -> None:
        """A reply without the answer's logprobs. Before the endpoint has answered this
        judge with them (here or in the cache) it lacks them: an error. After, a gateway's
        empty 200 on an upstream hiccup: asked again after a wait, then left unscored (and
        asked again on a rerun); `_BARE_IN_A_ROW` prompts in a row so left mean the endpoint
        stopped sending them: an error again."""
        if not (self._answered or self.answered_before):
            raise SteeropsError(str(exc)) from None
        if no_retry is not None and no_retry.is_set():
            raise Stopped("judge: stopped while retrying") from None  # another's failure
        if attempt < self.policy.max_retries:
            if stop.wait(self.policy.delay(attempt)) or (no_retry and no_retry.is_set()):
                raise Stopped("judge: stopped while retrying") from None
            return
        with self._tokens_lock:
            self._bare_in_a_row += 1
            bare = self._bare_in_a_row
        tries = f"{attempt + 1} {'reply' if attempt == 0 else 'replies'}"
        if bare >= _BARE_IN_A_ROW:
            raise SteeropsError(
                f"{exc}; after answering with them, it sent {tries} without them for each of "
                f"{bare} prompts in a row"
            ) from None
        raise _Declined(
            f"judge: {self.url} sent {tries} without top_logprobs for this answer, after "
            "answering others with them"
        ) from None

    def _served_by(self, key: str) -> str | None:
        with self._tokens_lock:  # read, not popped: an answer kept again keeps its model
            return self._served.get(key)

    def _top_logprobs(self, reply: dict, job: Job) -> list[dict]:
        self._check_declined(reply)
        content = None
        try:
            content = reply["choices"][0]["logprobs"]["content"]
            if not content and not _said(reply):  # the model stopped at once: no number
                return []
            top = content[0]["top_logprobs"]  # a message without its tokens: an error below
        except (KeyError, IndexError, TypeError):
            top = None
        answer = content[:_SENT_TOKENS] if isinstance(content, list) else []
        tokens = [str(c.get("token", "")) for c in answer if isinstance(c, dict)]
        first = as_score_int(tokens[0]) if tokens else None
        if first is not None and len(tokens) >= 2 and tokens[1][:1].isdigit():
            # A tokenizer that spells 85 as "8" "5" (Gemma, Qwen, Mistral): the first token's
            # alternatives are digits, and the score would read 8 for 85.
            self._check_split(tokens)
        if first is not None and _off_scale(first, "".join(tokens[1:])):
            return []  # "7/10", "0.7": a score on another scale, read as no number
        if not isinstance(top, list) or not top:  # the answer's token is always among them
            raise _NoLogprobs(
                f"judge: {self.url} returned no top_logprobs for model {self.model_name!r}; "
                "the judge needs an endpoint and model that support logprobs"
            )
        for entry in top:
            if not isinstance(entry, dict) or not isinstance(entry.get("token"), str):
                bad = True
            else:  # a log probability is a number <= 0; null or NaN is skipped when scoring
                logprob = entry.get("logprob")
                number = isinstance(logprob, int | float) and not isinstance(logprob, bool)
                bad = logprob is not None and (not number or logprob > 0)
            if bad:
                what = shown(str(entry), self._api_key, 80)
                raise SteeropsError(
                    f"judge: {self.url} returned a malformed top_logprobs entry for model "
                    f"{self.model_name!r}: {what} (expected {{token, logprob <= 0}})"
                )
        if all(entry.get("logprob") is None for entry in top):
            raise SteeropsError(
                f"judge: {self.url} returned top_logprobs without a single log probability "
                f"for model {self.model_name!r} (every logprob null): nothing to score"
            )
        self._check_number_tokens(top, job)
        return top

    def _check_split(self, tokens: list[str]) -> None:
        """An answer of several number tokens is unscored; the second shows the judge
        cannot be read (every answer of it is then dropped from the cache, for good)."""
        written = f"({tokens[0]!r} {tokens[1]!r})"
        with self._tokens_lock:
            self._split_answers += 1
            seen = self._split_answers
        if seen < _SPLIT_ANSWERS_TO_REFUSE:
            raise _Split(
                f"judge: model {self.model_name!r} wrote its answer as several tokens {written}"
            )
        raise UnreadableJudge(
            f"judge: model {self.model_name!r} writes its answer as several tokens "
            f"{written}, so a one-token answer cannot be scored: use a "
            "judge model with whole-number tokens (GPT-4o/4.1, Llama 3) or judge.kind hf"
        )

    def _check_declined(self, reply: dict) -> None:
        """A 200 reply that declines to judge (an output content filter, the model's own
        refusal) is this prompt's problem, as the same filter answering HTTP 400 is: not an
        answer "no number" to cache for good."""
        try:
            choice = reply["choices"][0]
            reason = choice.get("finish_reason")
            refusal = (choice.get("message") or {}).get("refusal")
        except (KeyError, IndexError, TypeError, AttributeError):
            return  # a malformed reply: the logprobs check names it
        if reason == "content_filter" or refusal:
            why = "finish_reason content_filter" if reason == "content_filter" else "refusal"
            said = f": {shown(str(refusal), self._api_key, 80)}" if refusal else ""
            raise _Declined(f"judge: {self.url} declined to judge this answer ({why}{said})")

    def _check_number_tokens(self, top: list[dict], job: Job) -> None:
        """Refuse a digit-by-digit tokenizer whose answers stop after one digit (the second
        digit check above never fires): its alternatives never hold a two-digit number. A
        heuristic, so only the answers it counted are forgotten, not the judge's cache."""
        if len(top) < _ALTERNATIVES_TO_TELL:  # what the server returned, not what was asked
            return  # a whole-number judge's few alternatives on a low score hold one digit too
        numbers = [t for e in top if (t := token_text(e["token"])).isdigit()]
        if not numbers or not all(t.isascii() for t in numbers):
            return
        with self._tokens_lock:
            if self._wide_numbers_seen or any(len(t) > 1 for t in numbers):
                self._wide_numbers_seen = True
                return
            self._digit_only_answers.append(cache_key(self.id, *job))
            if len(self._digit_only_answers) < _DIGIT_ONLY_ANSWERS:
                return
            counted = list(self._digit_only_answers)
        raise UnreadableJudge(
            f"judge: model {self.model_name!r} offered no number of two digits among the "
            f"alternatives of {_DIGIT_ONLY_ANSWERS} answers: its tokenizer writes numbers digit "
            "by digit, so a one-token answer reads 85 as 8; use a judge model with "
            "whole-number tokens (GPT-4o/4.1, Llama 3) or judge.kind hf",
            forget=counted,
        )

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIJudge(id={self.id!r}, url={self.url!r})"


def _say_unlisted(model: str, listing: Any, url: str, secret: str) -> None:
    """One warning line when the endpoint lists its models and `model` is not among them (a
    typo found now, not after the model loads and a chunk is generated); a warning, not an
    error, as some gateways serve names they do not list."""
    data = listing.get("data") if isinstance(listing, dict) else None
    if not isinstance(data, list):
        return
    ids = [str(m["id"]) for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]
    if not ids or model in ids:
        return
    some = ", ".join(_model_name(i, secret) for i in ids[:5]) + (", ..." if len(ids) > 5 else "")
    print(
        f"warning: judge.model {model!r} is not among the {len(ids)} models {shown_url(url)} "
        f"lists ({some}); if its requests fail, check the name",
        file=sys.stderr,
    )


def _off_scale(number: int, rest: str) -> bool:
    """Whether what follows an answer's number shows it on another scale than 0-100: a
    fraction of anything but 100 ("7/10", "7 out of 10", "7 of 10"), or a 0-1 decimal
    ("0.7", "1.0"). What the tokens sent do not show (no denominator yet, other words) is not."""
    text = rest.strip().lower()
    fraction = _FRACTION.match(text)
    if fraction is not None:
        return fraction.group(1) != "100"
    return number in (0, 1) and _DECIMAL.match(rest) is not None


def _said(reply: dict) -> bool:
    """Whether the reply's message holds any text (its tokens should then be listed)."""
    try:
        text = reply["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return False
    return isinstance(text, str) and bool(text.strip())


def _auth(api_key: str) -> dict[str, str]:
    """The request header that carries the key (none without one)."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _checked(params, trait) -> tuple[JudgePrompts, str]:
    """The judge's prompts and API key after checking params: an http(s) base URL, a model
    name, a rubric, and the key's environment variable set (unless judge.require_key is
    false). The key is read from the environment here and nowhere else."""
    cfg = params.judge
    url_problem = _url_problem(cfg.base_url)
    if url_problem:
        raise SteeropsError(f"judge.base_url: {url_problem}")
    if not cfg.model:
        raise SteeropsError(
            "judge.model: required for judge.kind openai (the endpoint's "
            "model name, e.g. gpt-4.1-mini)"
        )
    if not _ENV_NAME.fullmatch(cfg.api_key_env):
        # Not echoed: a value that is no variable name is most often the key itself.
        raise SteeropsError(
            "judge.api_key_env: expected the name of the environment variable that holds "
            "the key (e.g. OPENAI_API_KEY), not the key itself"
        )
    # Surrounding whitespace (a key read from a file with its newline) is not part of a key.
    api_key = os.environ.get(cfg.api_key_env, "").strip()
    if not api_key and cfg.require_key:
        # A key of letters, digits and `_` (gsk_..., hf_...) has a variable name's shape:
        # a name unset and shaped like no usual one is not shown.
        named = cfg.api_key_env if _USUAL_NAME.fullmatch(cfg.api_key_env) else None
        which = (
            f"environment variable {named}"
            if named
            else (
                "the environment variable it names (the name is not shown: it looks like a key "
                "rather than a variable name)"
            )
        )
        raise SteeropsError(
            f"judge.api_key_env: {which} is not set (the judge's API key; set "
            "judge.require_key: false for a server without auth)"
        )
    if not _HEADER_SAFE.fullmatch(api_key):
        # http.client would refuse the header with the key in its message.
        raise SteeropsError(
            f"judge.api_key_env: the value of {cfg.api_key_env} has characters no API key "
            "has (spaces, quotes pasted with it, non-ASCII); the value is not shown"
        )
    return prompts_for(trait), api_key


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# the variable names people write (OPENAI_API_KEY, my_judge_key, JudgeKey_2): short words
# of one case each (or Capitalised) joined by `_`, not a long run of mixed characters
_WORD = r"(?:[A-Z]{1,16}|[a-z]{1,16}|[A-Z][a-z]{1,15})[0-9]{0,3}"
_USUAL_NAME = re.compile(rf"(?=.{{1,40}}$){_WORD}(?:_(?:{_WORD}|[0-9]{{1,3}}))*_?")
_HEADER_SAFE = re.compile(r"[!#-&(-~]*")  # visible ASCII without the quotes


def _in_the_clear(url: str) -> bool:
    """Whether requests to `url` carry the key unencrypted off this machine: http to a
    host that is not a loopback address."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or parts.hostname in (None, "localhost"):
        return False
    try:
        return not ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:  # a host name
        return True


def _url_problem(url: str | None) -> str | None:
    """What is wrong with `url` as judge.base_url, found before a run opens (a URL urllib
    cannot send to would otherwise be retried, and fail only after generation)."""
    if not url:
        return "required for judge.kind openai (e.g. https://api.openai.com/v1)"
    parts = urllib.parse.urlsplit(url)
    if "@" in parts.netloc:  # not echoed: it holds credentials
        return (
            "credentials in the URL would be logged with the params: put the key in the "
            "environment variable judge.api_key_env names"
        )
    if parts.scheme not in ("http", "https"):
        return f"expected an http(s) URL, got {shown_url(url, paths=False)!r}"
    shown = shown_url(url, paths=False)  # never the query: it may hold a key (?api-key=...)
    if re.search(r"[\x00-\x20\x7f]", url):
        return f"spaces or control characters in {shown!r}"
    try:
        parts.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError:
        return f"bad port in {shown!r}"
    if not parts.hostname:
        return f"no host in {shown!r}"
    if parts.path.rstrip("/").endswith("/completions"):
        return (
            f"{shown!r} names the completions route, which steerops appends: give the API's "
            "root (e.g. https://api.openai.com/v1)"
        )
    if parts.query or parts.fragment:
        return (
            f"{shown!r} has a query or fragment (not shown: it may hold a key); "
            "/chat/completions is appended to the URL, and the key belongs in the environment "
            "variable judge.api_key_env names"
        )
    return None


def _model_name(text: str, secret: str) -> str:
    """The model a reply names, as kept and logged: the server's text, so without the key
    (a server may echo anything), printable and at most 200 characters."""
    return "".join(c for c in shown(text, secret, 200) if c.isprintable()).strip()
