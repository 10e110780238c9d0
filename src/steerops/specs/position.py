"""Token positions: `FRAME[SELECTOR]` with FRAME one of `prompt` (the chat-formatted prompt,
generation prompt included), `response` (the response's tokens) or `all` (both), and
SELECTOR a Python index (`-1`) or slice (`:5`, `2:-1`, `::2`) applied inside the frame. A
window of several tokens is mean-pooled by the extractor; an empty window drops the example.

Every spelling of one selection parses to one canonical `Position` (its `text` names output
folders, metrics and logs), so `prompt[+1]`, `prompt[01]` and `prompt[1:2]` are all
`prompt[1]`. Two spellings are the same selection when they pick the same token indices, in
the same order, from a frame of every length. The rules, applied at parse time:

- numbers are plain decimals (no `+`, no leading zeros, `-0` is `0`); no spaces;
- defaults are left out: a step of 1 or an empty step, a start of 0 with a positive step, a
  start of -1 with a negative step (`[0:]`, `[::1]`, `[::]` are `[:]`);
- a step wider than the window ever is (at any frame length) is cut to that width;
- a slice that reads the same single token as an index at every length is that index
  (`[-1:]`, `[3:4]`, `[0::-1]`, `[-2:-3:-1]`); one that reads one token at most and can be
  read forwards is (`[0:-4:-1]` is `[-3:1]`);
- a slice that reads from the front forwards, or from the end backwards, stops just past
  its last token (`[:11:3]` and `[:12:3]` are `[:10:3]`: tokens 0, 3, 6, 9);
- a selector that reads no token at any length (`[4:2]`, `[:0]`) is an error.

Order counts: `[::-1]` and `[:]` pool the same tokens but stay distinct specs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from steerops.errors import SteeropsError

FRAMES = ("prompt", "response", "all")

_POSITION = re.compile(r"^(\w+)\[(.*)\]$")


@dataclass(frozen=True)
class Position:
    text: str  # canonical spelling, used in paths and metadata
    frame: str
    index: int | None = None  # set for a single index (`prompt[-1]`)
    start: int | None = None  # otherwise a slice (None where the default applies)
    stop: int | None = None
    step: int | None = None

    def __str__(self) -> str:
        return self.text

    @property
    def needs_response(self) -> bool:
        return self.frame != "prompt"

    @property
    def slug(self) -> str:
        """A filesystem-safe, readable name: `response[:5]` -> `response_to5`."""
        return position_slug(self)

    def window(self, prompt_len: int, response_len: int) -> range:
        """Token indices (into prompt + response ids) this position reads; may be empty."""
        frame = {
            "prompt": range(0, prompt_len),
            "response": range(prompt_len, prompt_len + response_len),
            "all": range(0, prompt_len + response_len),
        }[self.frame]
        if self.index is not None:
            return _index_window(frame, self.index)
        return frame[self.start : self.stop : self.step]


def position_slug(position: str | Position) -> str:
    """A filesystem-safe, readable name for a position spec, from its canonical spelling:
    `response[:5]` -> `response_to5` (and so does `response[0:5:1]`)."""
    slug = parse_position(position).text.replace("]", "").replace("[", "_")
    slug = slug.replace(":", "to").replace("-", "m")
    return re.sub(r"[^A-Za-z0-9_.]", "_", slug)


def parse_position(spec: str | Position) -> Position:
    """Parse `prompt[-1]`, `response[:5]`, `all[:]`... into its canonical form; errors name
    the bad part."""
    if isinstance(spec, Position):
        return spec
    if not isinstance(spec, str):
        raise SteeropsError(f"position {spec!r}: expected text such as prompt[-1]")
    match = _POSITION.match(re.sub(r"\s+", "", spec))
    if not match:
        raise SteeropsError(
            f"position {spec!r}: expected FRAME[INDEX or SLICE], e.g. prompt[-1] or response[:5]"
        )
    frame, selector = match.groups()
    if frame not in FRAMES:
        raise SteeropsError(f"position {spec!r}: unknown frame {frame!r} (use {', '.join(FRAMES)})")
    parts = selector.split(":")
    if len(parts) > 3:
        raise SteeropsError(f"position {spec!r}: bad selector {selector!r} (too many ':')")
    numbers = [_position_int(spec, p) for p in parts]
    if len(parts) == 1:
        if numbers[0] is None:
            raise SteeropsError(f"position {spec!r}: empty selector (use [:] for the frame)")
        return _index_position(frame, numbers[0])
    start, stop, step = (numbers + [None])[:3]
    if step == 0:
        raise SteeropsError(f"position {spec!r}: slice step cannot be zero")
    return _slice_position(spec, frame, start, stop, step or 1)


def _position_int(spec: str, part: str) -> int | None:
    if part == "":
        return None
    if not re.fullmatch(r"[+-]?[0-9]+", part):
        raise SteeropsError(f"position {spec!r}: bad number {part!r}")
    return int(part)


def _index_position(frame: str, index: int) -> Position:
    return Position(f"{frame}[{index}]", frame, index=index)


def _index_window(frame: range, index: int) -> range:
    if -len(frame) <= index < len(frame):
        i = frame[index]
        return range(i, i + 1)
    return range(0)


def _slice_position(spec: str, frame: str, start: int | None, stop: int | None, step: int):
    """The canonical Position of `frame[start:stop:step]` (see the module's rules)."""
    default_start = 0 if step > 0 else -1
    if start == default_start:
        start = None
    lengths = _deciding_lengths(start, stop)

    def same(other: Callable[[range], range]) -> bool:
        return all(range(n)[start:stop:step] == other(range(n)) for n in lengths)

    spans = [_span(start, stop, step, n) for n in lengths]
    if spans[-1] <= spans[-2]:  # bounded: `widest` is the most it ever spans (over all n)
        widest = max(spans)
        if widest <= 0:
            raise SteeropsError(f"position {spec!r}: selects no token at any length")
        if abs(step) >= widest:  # one token at most at any length: any wider step is the same
            step = widest if step > 0 else -widest
            index = default_start if start is None else start
            if same(lambda r: _index_window(r, index)):
                return _index_position(frame, index)
            if step < 0 and start is not None and stop is not None:
                forward = slice(stop + 1, start + 1)  # e.g. [0:-4:-1] is [-3:1]
                if stop < 0 <= start and same(lambda r: r[forward]):
                    start, stop, step = forward.start, forward.stop, 1
    first = (0 if step > 0 else -1) if start is None else start
    if stop is not None and (first >= 0) == (stop >= 0) == (step > 0):
        # reads from the front forwards or from the end backwards, so no clamp shifts its
        # tokens: stop just past the last one
        last = first + (abs(stop - first) - 1) // abs(step) * step
        stop = last + (1 if step > 0 else -1)
    shown_step = None if step == 1 else step
    selector = ":".join(
        "" if n is None else str(n) for n in [start, stop, shown_step][: 3 if shown_step else 2]
    )
    return Position(f"{frame}[{selector}]", frame, start=start, stop=stop, step=shown_step)


def _deciding_lengths(start: int | None, stop: int | None) -> list[int]:
    """Frame lengths on which windows of slices made of `start`, `stop` (and numbers within
    1 of them) are equal only if they are equal at every length, and that show a window's
    widest span. A clamp to the frame switches, and a window turns empty, only where the
    length is within 2 of 0, |start|, |stop|, their sum or their difference; between two such
    lengths every bound moves linearly. Two lengths past each of them (the last two past
    all of them) pin down each stretch; the whole range would cost `prompt[:10**9]` 10**9."""
    a, b = abs(start or 0), abs(stop or 0)
    return sorted({n for c in {0, a, b, a + b, abs(a - b)} for n in range(c - 3, c + 5) if n >= 0})


def _span(start: int | None, stop: int | None, step: int, n: int) -> int:
    lo, hi, _ = slice(start, stop, step).indices(n)
    return hi - lo if step > 0 else lo - hi


def max_response_tokens(spec: str | Position) -> int | None:
    """How many response tokens `spec` can read: 0 for prompt positions, N for bounded
    windows (`response[:5]` -> 5, `response[3]` -> 4), None when it depends on the end of
    the response (`response[-1]`, `response[:]`, `response[-8:5]`). For `all[...]` an upper
    bound."""
    pos = parse_position(spec)
    if not pos.needs_response:
        return 0
    if pos.index is not None:
        return pos.index + 1 if pos.index >= 0 else None
    # a bound counted from the end (`response[-8:5]`) moves with the response's length
    if pos.step is not None and pos.step < 0:  # reads from `start` backwards
        if pos.stop is not None and pos.stop < 0:
            return None
        return pos.start + 1 if pos.start is not None and pos.start >= 0 else None
    if pos.start is not None and pos.start < 0:
        return None
    return pos.stop if pos.stop is not None and pos.stop >= 0 else None
