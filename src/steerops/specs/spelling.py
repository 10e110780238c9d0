"""The one spelling of a method or position written down somewhere else (a results log, an
older output): records keep the spelling they were written with, e.g. `mean_diff_dims07-3`
or `prompt[-1:]` from before the grammar gave each method and position one spelling, so
readers compare the canonical forms. Text that does not parse (a method registered in
another process) is returned as it is.
"""

from __future__ import annotations

from steerops.errors import SteeropsError
from steerops.specs.methods import parse_method
from steerops.specs.position import parse_position

_SEEN: dict[tuple[str, str], str] = {}  # (kind, text) -> canonical text


def canonical_method(name: str) -> str:
    """`mean_diff_dims07-3` -> `mean_diff_dims3-7`."""
    return _canonical("method", name)


def canonical_position(text: str) -> str:
    """`prompt[-1:]` -> `prompt[-1]`."""
    return _canonical("position", text)


def _canonical(kind: str, text: str) -> str:
    if (kind, text) not in _SEEN:
        try:
            parsed = parse_method(text).name if kind == "method" else parse_position(text).text
        except SteeropsError:
            return text  # not remembered: a method registered later parses then
        _SEEN[kind, text] = parsed
    return _SEEN[kind, text]
