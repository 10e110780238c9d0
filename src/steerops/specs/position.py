"""Token positions: `FRAME[SELECTOR]` with FRAME one of `prompt` (the chat-formatted prompt,
generation prompt included), `response` (the response's tokens) or `all` (both), and
SELECTOR a Python index (`-1`) or slice (`:5`, `2:-1`, `::2`) applied inside the frame. A
window of several tokens is mean-pooled by the extractor; an empty window drops the example.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from steerops.errors import SteeropsError

FRAMES = ("prompt", "response", "all")

_POSITION = re.compile(r"^(\w+)\[(.*)\]$")


@dataclass(frozen=True)
class Position:
    text: str  # canonical spelling (no spaces), used in paths and metadata
    frame: str
    index: int | None = None  # set for a single index (`prompt[-1]`)
    start: int | None = None  # otherwise a slice
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
        return position_slug(self.text)

    def window(self, prompt_len: int, response_len: int) -> range:
        """Token indices (into prompt + response ids) this position reads; may be empty."""
        frame = {
            "prompt": range(0, prompt_len),
            "response": range(prompt_len, prompt_len + response_len),
            "all": range(0, prompt_len + response_len),
        }[self.frame]
        if self.index is not None:
            if -len(frame) <= self.index < len(frame):
                i = frame[self.index]
                return range(i, i + 1)
            return range(0)
        return frame[self.start : self.stop : self.step]


def position_slug(position: str | Position) -> str:
    """A filesystem-safe, readable name for a position spec: `response[:5]` -> `response_to5`."""
    slug = str(position).replace(" ", "").replace("]", "").replace("[", "_")
    slug = slug.replace(":", "to").replace("-", "m")
    return re.sub(r"[^A-Za-z0-9_.]", "_", slug)


def parse_position(spec: str | Position) -> Position:
    """Parse `prompt[-1]`, `response[:5]`, `all[:]`...; errors name the bad part."""
    if isinstance(spec, Position):
        return spec
    if not isinstance(spec, str):
        raise SteeropsError(f"position {spec!r}: expected text such as prompt[-1]")
    text = re.sub(r"\s+", "", spec)
    match = _POSITION.match(text)
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
        return Position(text, frame, index=numbers[0])
    start, stop, step = (numbers + [None])[:3]
    if step == 0:
        raise SteeropsError(f"position {spec!r}: slice step cannot be zero")
    return Position(text, frame, start=start, stop=stop, step=step)


def _position_int(spec: str, part: str) -> int | None:
    if part == "":
        return None
    if not re.fullmatch(r"[+-]?\d+", part):
        raise SteeropsError(f"position {spec!r}: bad number {part!r}")
    return int(part)


def max_response_tokens(spec: str | Position) -> int | None:
    """How many response tokens `spec` can read: 0 for prompt positions, N for bounded
    windows (`response[:5]` -> 5, `response[3]` -> 4), None when it depends on the end of
    the response (`response[-1]`, `response[:]`). For `all[...]` an upper bound."""
    pos = parse_position(spec)
    if not pos.needs_response:
        return 0
    if pos.index is not None:
        return pos.index + 1 if pos.index >= 0 else None
    if pos.step is not None and pos.step < 0:  # reads from `start` backwards
        return pos.start + 1 if pos.start is not None and pos.start >= 0 else None
    return pos.stop if pos.stop is not None and pos.stop >= 0 else None
