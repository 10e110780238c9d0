"""POST JSON with retries: exponential backoff with jitter on 429, 5xx, timeouts, dropped
connections and replies that are not JSON; any other HTTP error fails at once (a 400, 413 or
422 as `Refused`, which a caller may take as this one prompt's problem). Stdlib only.

The API key travels in a header and is scrubbed from every error message, since servers
sometimes echo what they were sent. Redirects are never followed: urllib would resend the
header to whatever host the redirect names, so a redirect is an error naming its target.
For the same reason a proxy from the environment (`https_proxy`) is used only for https,
where it relays an encrypted tunnel; plain http goes straight to the host it names, since an
http proxy reads every header it forwards.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import json
import random
import re
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from steerops.errors import SteeropsError
from steerops.judges.throttle import Outcome, Throttle

# Worth another try: the server is busy or broken right now, or the network dropped us.
RETRY_STATUS = frozenset({408, 409, 425, 429}) | frozenset(range(500, 600))
MAX_RETRY_AFTER_S = 600.0  # a server asking for longer is down, not busy
RETRY_ERRORS = (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException)
# A wait before a retry this long is said on stderr (at most once per `_SAID_EVERY_S`), so a
# run stalled by a busy endpoint does not look hung.
_WAIT_SAID_S = 10.0
_SAID_EVERY_S = 60.0
_said_at = [float("-inf")]
_said_lock = threading.Lock()
# Runs of the key this long, in any case, are scrubbed too: a server may echo it cut short
# (of a key mixing letters and digits: a placeholder's runs are words of the server's text).
_KEY_RUN = 8


# The server will not take this one request (too long for the judge's context, a content
# filter on a harmful answer): another prompt may well be answered.
REFUSED_STATUS = frozenset({400, 413, 422})


class Stopped(SteeropsError):
    """Given up while waiting to retry: the caller set `stop` (it no longer wants the answer)."""


class Refused(SteeropsError):
    """The server answered this request with a client error (`REFUSED_STATUS`)."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None  # urllib then raises the 3xx as an HTTPError


def _no_http_proxy(url: str) -> str:
    """Why an http URL may be unreachable where a proxy is configured: it was not used."""
    proxies = urllib.request.getproxies()
    if not url.lower().startswith("http:") or "http" not in proxies:
        return ""
    host = urllib.parse.urlsplit(url).hostname or ""
    if urllib.request.proxy_bypass(host):
        return ""  # no_proxy names the host: it would not have gone through the proxy anyway
    return (
        "; the http_proxy set in the environment is not used for plain http, which would show"
        " the proxy the API key: use an https URL (its proxy only relays an encrypted tunnel)"
    )


def _opener() -> urllib.request.OpenerDirector:
    """An opener that follows no redirect and hands the key to no http proxy (read from the
    environment on each call, as urllib does, with `no_proxy` still honoured)."""
    tunnels = {k: v for k, v in urllib.request.getproxies().items() if k == "https"}
    return urllib.request.build_opener(urllib.request.ProxyHandler(tunnels), _NoRedirect)


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    timeout_s: float = 60.0

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait before retry number `attempt` (0-based): doubling, jittered to
        spread concurrent clients and capped at max_backoff_s, or what the server asked for
        when that is longer (up to `MAX_RETRY_AFTER_S`: asking again sooner only spends a
        retry on another 429)."""
        wait = min(self.backoff_s * (2**attempt) * random.uniform(0.5, 1.0), self.max_backoff_s)
        try:
            asked = float(retry_after) if retry_after else 0.0
        except ValueError:  # an HTTP date instead of seconds: keep our own schedule
            asked = 0.0
        if not asked >= 0:  # negative or NaN
            asked = 0.0
        return max(wait, min(asked, MAX_RETRY_AFTER_S))


def post_json(
    url: str,
    body: dict,
    headers: dict[str, str],
    policy: RetryPolicy,
    secret: str = "",
    stop: threading.Event | None = None,
    no_retry: threading.Event | None = None,
    throttle: Throttle | None = None,
) -> dict:
    """The decoded JSON reply to POST `body` to `url`; SteeropsError when it cannot be had,
    or when `stop` is set while waiting for it (the caller gave up on the answer), or
    `no_retry` before a retry (the caller takes this attempt's answer, not another's)."""
    stop = stop or threading.Event()
    no_retry = no_retry or threading.Event()
    data = json.dumps(body).encode("utf-8")
    headers = {"Content-Type": "application/json", **headers}
    last = refused = ""
    for attempt in range(policy.max_retries + 1):
        retry_after = None
        with in_flight(url, throttle, stop, no_retry) as outcome:
            request = urllib.request.Request(url, data=data, headers=headers, method="POST")
            try:
                with _opener().open(request, timeout=policy.timeout_s) as reply:
                    raw = _read_within(reply, policy.timeout_s, stop)
            except urllib.error.HTTPError as exc:
                if 300 <= exc.code < 400:
                    raise _redirected(url, exc, secret) from None
                detail = shown(_error_body(exc) or str(exc.reason), secret, 200)
                if exc.code not in RETRY_STATUS:
                    error = Refused if exc.code in REFUSED_STATUS else SteeropsError
                    raise error(f"judge: {url} answered HTTP {exc.code}: {detail}") from None
                last = f"HTTP {exc.code}: {detail}"
                retry_after = exc.headers.get("Retry-After") if exc.headers else None
                if exc.code == 429:  # every request of the judge waits, not this one alone
                    outcome.throttled = True
                    outcome.hold_s = policy.delay(attempt, retry_after)
            except RETRY_ERRORS as exc:
                reason = getattr(exc, "reason", None) or exc
                last = _scrub(f"{type(exc).__name__}: {reason}", secret)
            except ValueError as exc:
                # A header or URL http.client will not send: its message quotes the header (the
                # key, escaped past scrubbing), so only the type is said, raised outside this
                # block so the exception does not travel along as the error's context.
                refused = type(exc).__name__
            else:
                try:
                    decoded = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    # Often a reply cut off mid-body (a proxy, a dropped connection): try again.
                    text = shown(raw.decode("utf-8", "replace"), secret, 120)
                    last = f"a reply that is not JSON: {text}"
                else:
                    error = _error_in(decoded)
                    if error is None:
                        outcome.ok = True
                        return decoded
                    said = f"HTTP 200 with an error and no answer: {shown(error, secret, 200)}"
                    if _error_code(decoded) in REFUSED_STATUS:  # this prompt's own, passed on
                        raise Refused(f"judge: {url} answered {said}")
                    # a gateway's HTTP 200 carrying an error instead of an answer (an upstream
                    # overloaded): a failure like a 5xx, retried, its message kept
                    last = said
        if refused:
            raise _unsendable(url, refused)
        if stop.is_set() or no_retry.is_set():
            raise Stopped(f"judge: {url}: stopped; last error: {last}")
        if attempt < policy.max_retries:
            delay = policy.delay(attempt, retry_after)
            _say_wait(url, last, delay, attempt + 1, policy.max_retries)
            # An interrupted or failed run must not wait at exit for workers still retrying.
            if stop.wait(delay) or no_retry.is_set():
                raise Stopped(f"judge: {url}: stopped before retrying; last error: {last}")
    raise SteeropsError(
        f"judge: {url} failed after {policy.max_retries + 1} attempts; last error: {last}"
    )


@contextlib.contextmanager
def in_flight(url: str, throttle: Throttle | None, *stops: threading.Event) -> Iterator[Outcome]:
    """One request's place under `throttle` (None: no limit), taken before it is sent and
    given back with its `Outcome` however the block ends; `Stopped` when a stop event is
    set while it waits for one."""
    outcome = Outcome()
    if throttle is None:
        yield outcome
        return
    generation = throttle.acquire(*stops)
    if generation is None:
        raise Stopped(f"judge: {url}: stopped while waiting to send")
    try:
        yield outcome
    finally:
        throttle.release(
            generation, ok=outcome.ok, throttled=outcome.throttled, hold_s=outcome.hold_s
        )


def _error_in(reply: object) -> str | None:
    """The error a JSON reply carries in place of an answer (`{"error": ...}` and no
    `choices`), as text; None for any other reply."""
    if not isinstance(reply, dict) or "error" not in reply or "choices" in reply:
        return None
    error = reply["error"]
    message = error.get("message") if isinstance(error, dict) else None
    return str(message) if message else json.dumps(error)


def _error_code(reply: dict) -> int | None:
    """The HTTP status an error body names (`{"error": {"code": 400}}`), if a number."""
    error = reply.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    try:
        return int(code) if code is not None and not isinstance(code, bool) else None
    except (TypeError, ValueError):  # a code word ("context_length_exceeded")
        return None


def _read_within(reply, timeout_s: float, stop: threading.Event) -> bytes:
    """The reply's body, read within `timeout_s` of the first byte of it (a socket's
    timeout bounds each read only: a server trickling its reply would hold the request far
    longer) or until `stop` is set; TimeoutError otherwise, which is retried."""
    deadline = time.monotonic() + timeout_s
    parts = []
    while chunk := reply.read1(65536):
        parts.append(chunk)
        if stop.is_set():
            raise TimeoutError("stopped while reading the reply")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the reply took over {timeout_s:g} s to arrive")
    return b"".join(parts)


def _say_wait(url: str, last: str, delay: float, retry: int, retries: int) -> None:
    if delay < _WAIT_SAID_S:
        return
    with _said_lock:
        now = time.monotonic()
        if now - _said_at[0] < _SAID_EVERY_S:
            return
        _said_at[0] = now
    print(
        f"judge: {url}: {last}; retrying in {delay:.0f} s (retry {retry} of {retries})",
        file=sys.stderr,
    )


def reach(url: str, headers: dict[str, str], timeout_s: float, secret: str = "") -> Any:
    """One GET to `url`, to learn before any work that the server is there and takes the
    key: any HTTP answer will do (a server without this route says 404), except a refused
    key (401, 403) or a redirect; no answer at all is a SteeropsError naming why. Returns
    a success's JSON body (None for another answer, or a body that is not JSON)."""
    request = urllib.request.Request(url, headers=headers, method="GET")
    try:
        with _opener().open(request, timeout=timeout_s) as reply:
            try:
                return json.loads(reply.read(_MAX_LISTING_BYTES))
            except (ValueError, OSError, http.client.HTTPException):
                return None  # answered: what it says is no matter
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            detail = shown(_error_body(exc) or str(exc.reason), secret, 200)
            raise SteeropsError(
                f"judge: {url} refused the key (HTTP {exc.code}): {detail}"
            ) from None
        if 300 <= exc.code < 400:
            raise _redirected(url, exc, secret) from None
    except RETRY_ERRORS as exc:
        reason = _scrub(f"{type(exc).__name__}: {getattr(exc, 'reason', None) or exc}", secret)
        raise SteeropsError(
            f"judge: {url} cannot be reached ({reason}){_no_http_proxy(url)}"
        ) from None
    except ValueError as exc:  # its message may quote the key's header: the type only
        raise _unsendable(url, type(exc).__name__) from None


_MAX_LISTING_BYTES = 8 << 20  # a gateway's model list runs to a few hundred KB


def _redirected(url: str, exc: urllib.error.HTTPError, secret: str) -> SteeropsError:
    target = _scrub(str(exc.headers.get("Location", "?")), secret)
    return SteeropsError(
        f"judge: {url} redirects (HTTP {exc.code}) to {target}; redirects are not "
        "followed, so the key goes nowhere else: set judge.base_url to the final URL"
    )


def _unsendable(url: str, problem: str) -> SteeropsError:
    """A header or URL http.client will not send (`problem`: the error's type only)."""
    return SteeropsError(
        f"judge: cannot send a request to {url} ({problem}): check judge.base_url "
        "and the key in the variable judge.api_key_env names"
    )


def _error_body(exc: urllib.error.HTTPError) -> str:
    try:
        text = exc.read().decode("utf-8", "replace")
    except Exception:  # the body itself may be cut off; the status is what matters
        return exc.reason or ""
    try:  # OpenAI-style {"error": {"message": ...}}
        message = json.loads(text)["error"]["message"]
        text = message if isinstance(message, str) else text
    except (ValueError, KeyError, TypeError):
        pass
    return " ".join(text.split())


def _scrub(text: str, secret: str) -> str:
    """`text` without the key, also as a server may echo it: any of its characters
    JSON-escaped (`\\/`, `\\u002b` in either case) or percent-encoded (`+` for a space), and
    any run of `_KEY_RUN` of its characters in either case (a key echoed cut short)."""
    if not secret:
        return text
    return _without_key_runs(_key_pattern(secret).sub("***", text), secret)


def _without_key_runs(text: str, secret: str) -> str:
    if len(secret) < _KEY_RUN or not _random_looking(secret):
        # a short key is matched whole above; a placeholder of words (`sk-no-key-required`,
        # a local server's) would take words out of the server's own message
        return text
    key = _folded(secret)
    windows = {key[i : i + _KEY_RUN] for i in range(len(key) - _KEY_RUN + 1)}
    low = _folded(text)
    covered = [False] * len(text)
    for i in range(len(text) - _KEY_RUN + 1):
        if low[i : i + _KEY_RUN] in windows:
            covered[i : i + _KEY_RUN] = [True] * _KEY_RUN
    if not any(covered):
        return text
    out = []
    for i, c in enumerate(text):
        if not covered[i]:
            out.append(c)
        elif i == 0 or not covered[i - 1]:
            out.append("***")
    return "".join(out)


@functools.lru_cache(maxsize=8)
def _key_pattern(secret: str) -> re.Pattern[str]:
    def either_case(digits: str) -> str:
        return "".join(f"[{h}{h.upper()}]" if h.isalpha() else h for h in digits)

    def spelled(c: str) -> str:
        code = f"{ord(c):04x}"
        forms = [re.escape(c), rf"\\u{either_case(code)}", f"%{either_case(code[2:])}"]
        forms += [r"\\/"] if c == "/" else [r"\+"] if c == " " else []
        return f"(?:{'|'.join(forms)})"

    return re.compile("".join(spelled(c) for c in secret))


def _random_looking(secret: str) -> bool:
    """Whether a key mixes letters and digits, as issued keys do (not a word placeholder)."""
    return any(c.isdigit() for c in secret) and any(c.isalpha() for c in secret)


def _folded(text: str) -> str:
    """`text` lowercased character by character, keeping its length ("İ" lowercases to two
    characters, which would shift every position after it)."""
    return "".join(low if len(low := c.lower()) == 1 else c for c in text)


def shown(text: str, secret: str, limit: int) -> str:
    """`text` cut to `limit` characters for a message, the key taken out first: cut first,
    a key across the cut would be shown all but its tail."""
    return _scrub(text, secret)[:limit]
