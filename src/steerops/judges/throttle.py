"""How many requests an endpoint judge keeps in flight while the endpoint rate-limits it.

Each request thread retries a 429 on its own schedule (`transport.RetryPolicy`), but
`judge.concurrency` threads that each back off alone keep the endpoint at its limit and
spend their retries on more 429s. A `Throttle` is shared by one judge's threads: a 429
halves the requests allowed in flight (down to one) and holds every thread's next request
for the wait that reply set; each run of as many successes as are allowed lets one more
in, up to `judge.concurrency` (additive increase, multiplicative decrease, as TCP does).
Only a 429 of a request sent since the last decrease decreases again, so one burst of
429s halves once. Below the level that last drew a 429 it grows back a place per run of
successes; from one under it, only per `_PROBE_RUNS` runs, so a steady limit is probed now
and then rather than hit every few requests.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass

_POLL_S = 0.25  # how often a held thread looks at its stop events
_PROBE_RUNS = 8  # runs of successes per place gained at the level that last drew a 429


class Throttle:
    def __init__(self, limit: int, url: str = "") -> None:
        self.limit = self.allowed = max(1, limit)
        self.url = url
        self.in_flight = 0
        self.lowest = self.limit  # the fewest allowed so far (said once, when first lowered)
        self._until = 0.0  # monotonic time before which no request starts
        self._streak = 0
        self._ceiling = self.limit  # one above the most allowed that drew no 429 since
        self._generation = 0  # decreases so far: a 429 of an older request is no news
        self._cond = threading.Condition()

    def acquire(self, *stops: threading.Event) -> int | None:
        """Wait for a free place (and the end of any hold), then take it; returns the
        generation to hand back to `release`, or None (no place taken) once a stop event
        is set."""
        with self._cond:
            while True:
                if any(stop.is_set() for stop in stops):
                    return None
                hold = self._until - time.monotonic()
                if hold <= 0 and self.in_flight < self.allowed:
                    self.in_flight += 1
                    return self._generation
                self._cond.wait(min(hold, _POLL_S) if hold > 0 else _POLL_S)

    def release(
        self, generation: int, *, ok: bool = False, throttled: bool = False, hold_s: float = 0.0
    ) -> None:
        """Give the place back: `throttled` (the reply was a 429) lowers what is allowed and
        holds every next request for `hold_s`; an answer (`ok`) counts toward one more."""
        lowered = None
        with self._cond:
            self.in_flight -= 1
            if throttled:
                self._until = max(self._until, time.monotonic() + hold_s)
                if generation == self._generation:
                    self._generation += 1
                    self._streak = 0
                    self._ceiling = self.allowed
                    self.allowed = max(1, self.allowed // 2)
                    if self.allowed < self.lowest:
                        if self.lowest == self.limit:
                            lowered = self.allowed
                        self.lowest = self.allowed
            elif ok:
                self._streak += 1
                near = self.allowed + 1 >= self._ceiling  # the next place drew a 429 last
                run = self.allowed * (_PROBE_RUNS if near else 1)
                if self._streak >= run and self.allowed < self.limit:
                    self.allowed += 1
                    self._ceiling = max(self._ceiling, self.allowed)
                    self._streak = 0
            self._cond.notify_all()
        if lowered is not None:  # said once a run: the first time the endpoint pushed back
            print(
                f"judge: {self.url} is rate-limiting (HTTP 429): {lowered} requests in flight "
                f"instead of judge.concurrency {self.limit}, more again as they succeed",
                file=sys.stderr,
            )


@dataclass
class Outcome:
    """What one request came to, filled in while it is in flight (`transport.in_flight`)."""

    ok: bool = False  # an answer
    throttled: bool = False  # an HTTP 429
    hold_s: float = 0.0  # how long every next request waits (the 429's retry delay)
