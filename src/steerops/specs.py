"""The two small grammars users write on the command line: token positions and layers.

Position: `FRAME[SELECTOR]` with FRAME one of `prompt` (the chat-formatted prompt, generation
prompt included), `response` (the response's tokens) or `all` (both), and SELECTOR a Python
index (`-1`) or slice (`:5`, `2:-1`, `::2`) applied inside the frame. A window of several
tokens is mean-pooled by the extractor; an empty window drops the example.

Layers: comma-separated terms, each `all`, `N`, `A-B` (inclusive), `A-B:STEP`, or a
percentage of the depth in place of a number (`30%-60%`, `50%`). Ranges are clamped to the
model, terms may overlap; the result is sorted and deduplicated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from steerops.errors import SteeropsError

FRAMES = ("prompt", "response", "all")

_POSITION = re.compile(r"^(\w+)\[(.*)\]$")
_LAYER_TERM = re.compile(r"^(\d+%?)(?:-(\d+%?))?(?::(\d+))?$")


@dataclass(frozen=True)
class Position:
    text: str  # canonical spelling (no spaces), used in paths and metadata
    frame: str
    index: int | None = None  # set for a single index (`prompt[-1]`)
    start: int | None = None  # otherwise a slice
    stop: int | None = None
    step: int | None = None

    @property
    def needs_response(self) -> bool:
        return self.frame != "prompt"

    def window(self, prompt_len: int, response_len: int) -> range:
        """Token indices (into prompt + response ids) this position reads; may be empty."""
        frame = {"prompt": range(0, prompt_len),
                 "response": range(prompt_len, prompt_len + response_len),
                 "all": range(0, prompt_len + response_len)}[self.frame]
        if self.index is not None:
            if -len(frame) <= self.index < len(frame):
                i = frame[self.index]
                return range(i, i + 1)
            return range(0)
        return frame[self.start:self.stop:self.step]


def parse_position(spec: str) -> Position:
    """Parse `prompt[-1]`, `response[:5]`, `all[:]`...; errors name the bad part."""
    if not isinstance(spec, str):
        raise SteeropsError(f"position {spec!r}: expected text such as prompt[-1]")
    text = re.sub(r"\s+", "", spec)
    match = _POSITION.match(text)
    if not match:
        raise SteeropsError(f"position {spec!r}: expected FRAME[INDEX or SLICE], "
                            "e.g. prompt[-1] or response[:5]")
    frame, selector = match.groups()
    if frame not in FRAMES:
        raise SteeropsError(f"position {spec!r}: unknown frame {frame!r} "
                            f"(use {', '.join(FRAMES)})")
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
    pos = parse_position(spec) if isinstance(spec, str) else spec
    if not pos.needs_response:
        return 0
    if pos.index is not None:
        return pos.index + 1 if pos.index >= 0 else None
    if pos.step is not None and pos.step < 0:  # reads from `start` backwards
        return pos.start + 1 if pos.start is not None and pos.start >= 0 else None
    return pos.stop if pos.stop is not None and pos.stop >= 0 else None


def check_layers(spec: str | int | list[int]) -> None:
    """Syntax check of a layer spec before the model (and its depth) is known."""
    for term in _layer_terms(spec):
        if term != "all" and not isinstance(term, int):
            _parse_layer_term(term)


def parse_layers(spec: str | int | list[int], num_layers: int) -> list[int]:
    """Layer indices (sorted, unique) selected by `spec` in a model of `num_layers` blocks."""
    if num_layers < 1:
        raise SteeropsError(f"layers {spec!r}: the model has no decoder layers")
    last = num_layers - 1
    chosen: set[int] = set()
    for term in _layer_terms(spec):
        if term == "all":
            chosen.update(range(num_layers))
            continue
        if isinstance(term, int):
            lo, hi, step, is_range = term, term, 1, False
        else:
            (lo_text, lo_pct), hi_part, step = _parse_layer_term(term)
            lo = _layer_number(lo_text, lo_pct, num_layers)
            hi = lo if hi_part is None else _layer_number(*hi_part, num_layers)
            is_range = hi_part is not None or lo_pct
        if hi < lo:
            raise SteeropsError(f"layers: bad term {term!r} (range start is after its end)")
        if lo < 0 or lo > last or (not is_range and hi > last):
            raise SteeropsError(f"layers: {term!r} is out of range (the model has layers "
                                f"0-{last})")
        chosen.update(range(lo, min(hi, last) + 1, step))
    if not chosen:
        raise SteeropsError(f"layers {spec!r}: selects no layer")
    return sorted(chosen)


def _layer_terms(spec: str | int | list[int]) -> list[str | int]:
    if isinstance(spec, bool):
        raise SteeropsError(f"layers {spec!r}: expected a layer spec such as 5-20 or all")
    if isinstance(spec, int):
        return [spec]
    if isinstance(spec, list | tuple):
        terms: list[str | int] = []
        for item in spec:
            if isinstance(item, bool) or not isinstance(item, int | str):
                raise SteeropsError(f"layers: bad term {item!r}")
            terms.extend(_layer_terms(item))
        return terms
    if not isinstance(spec, str):
        raise SteeropsError(f"layers {spec!r}: expected a layer spec such as 5-20 or all")
    terms = re.sub(r"\s+", "", spec).split(",")
    if not spec.strip() or any(t == "" for t in terms):
        raise SteeropsError(f"layers {spec!r}: empty term")
    return [t.lower() if t.lower() == "all" else t for t in terms]


def _parse_layer_term(term: str):
    match = _LAYER_TERM.match(term)
    if not match:
        raise SteeropsError(f"layers: bad term {term!r} (use all, 15, 5,10, 5-20, 0-30:5 "
                            "or 30%-60%)")
    lo, hi, step = match.groups()
    if step is not None and hi is None:
        raise SteeropsError(f"layers: bad term {term!r} (a step needs a range, e.g. 0-30:5)")
    if step is not None and int(step) == 0:
        raise SteeropsError(f"layers: bad term {term!r} (step must be >= 1)")
    for part in (lo, hi):
        if part is not None and part.endswith("%") and int(part[:-1]) > 100:
            raise SteeropsError(f"layers: bad term {term!r} ({part} is over 100%)")
    lo_part = (lo.rstrip("%"), lo.endswith("%"))
    hi_part = None if hi is None else (hi.rstrip("%"), hi.endswith("%"))
    if hi_part is not None and lo_part[1] == hi_part[1] and int(lo_part[0]) > int(hi_part[0]):
        raise SteeropsError(f"layers: bad term {term!r} (range start is after its end)")
    return lo_part, hi_part, int(step or 1)


def _layer_number(text: str, percent: bool, num_layers: int) -> int:
    # A percentage of the depth: 50% of 34 layers is layer 17; 100% is the last layer.
    value = int(text)
    return min(value * num_layers // 100, num_layers - 1) if percent else value
