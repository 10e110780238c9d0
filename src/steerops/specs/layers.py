"""Layer specs: comma-separated terms, each `all`, `N`, `A-B` (inclusive), `A-B:STEP`, or a
percentage of the depth in place of a number (`30%-60%`, `50%`). A range's end is clamped to
the last layer (a start or a single layer past it is an error), terms may overlap; the
result is sorted and deduplicated.

`Layers` is a checked spec (its syntax is known good before any model is loaded); the layers
it selects depend on the model's depth (`Layers.resolve`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from steerops.errors import SteeropsError

_LAYER_TERM = re.compile(r"^(\d+%?)(?:-(\d+%?))?(?::(\d+))?$", re.ASCII)  # plain decimals


@dataclass(frozen=True)
class Layers:
    text: str  # the spec as written (YAML numbers and lists joined with ',')

    def __str__(self) -> str:
        return self.text

    def resolve(self, num_layers: int, key: str = "layers") -> list[int]:
        """The layers selected in a model of `num_layers` blocks; an error names `key`, the
        params key the spec came from (and so, on the command line, its flag)."""
        try:
            return parse_layers(self.text, num_layers)
        except SteeropsError as exc:  # every message starts with "layers"
            raise SteeropsError(key + str(exc).removeprefix("layers")) from None


def layers_spec(spec: str | int | list | Layers) -> Layers:
    """A syntax-checked layer spec; YAML reads `15` as an int and `[5, 10]` as a list."""
    if isinstance(spec, Layers):
        return spec
    check_layers(spec)
    if isinstance(spec, list | tuple):
        return Layers(",".join(str(v) for v in spec))
    return Layers(str(spec))


def check_layers(spec: str | int | list[int] | Layers) -> None:
    """Syntax check of a layer spec before the model (and its depth) is known."""
    spec = spec.text if isinstance(spec, Layers) else spec
    for term in _layer_terms(spec):
        if term != "all" and not isinstance(term, int):
            _parse_layer_term(term)


def parse_layers(spec: str | int | list[int] | Layers, num_layers: int) -> list[int]:
    """Layer indices (sorted, unique) selected by `spec` in a model of `num_layers` blocks."""
    spec = spec.text if isinstance(spec, Layers) else spec
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
            hi = lo if hi_part is None else _layer_number(hi_part[0], hi_part[1], num_layers)
            is_range = hi_part is not None or lo_pct
        if hi < lo:
            raise SteeropsError(f"layers: bad term {term!r} (range start is after its end)")
        if lo < 0 or lo > last or (not is_range and hi > last):
            raise SteeropsError(f"layers: {term!r} is out of range (the model has layers 0-{last})")
        chosen.update(range(lo, min(hi, last) + 1, step))
    if not chosen:
        raise SteeropsError(f"layers {spec!r}: selects no layer")
    return sorted(chosen)


def _layer_terms(spec: str | int | list[int]) -> list[str | int]:
    if isinstance(spec, bool):
        raise SteeropsError(f"layers {spec!r}: expected a layer spec such as 5-20 or all")
    if isinstance(spec, int):
        if spec < 0:
            raise SteeropsError(f"layers: bad term {spec!r} (layers count from 0)")
        return [spec]
    if isinstance(spec, list | tuple):
        if not spec:
            raise SteeropsError("layers []: selects no layer")
        terms: list[str | int] = []
        for item in spec:
            if isinstance(item, bool) or not isinstance(item, int | str):
                raise SteeropsError(f"layers: bad term {item!r}")
            terms.extend(_layer_terms(item))
        return terms
    if not isinstance(spec, str):
        raise SteeropsError(f"layers {spec!r}: expected a layer spec such as 5-20 or all")
    # spaces around a comma, dash, colon or % are layout; inside a number they would join two
    # ("1 2" is not layer 12)
    texts = [re.sub(r"\s*([-:%])\s*", r"\1", t.strip()) for t in spec.split(",")]
    if not spec.strip() or any(t == "" for t in texts):
        raise SteeropsError(f"layers {spec!r}: empty term")
    for t in texts:
        if re.search(r"\s", t):
            raise SteeropsError(
                f"layers {spec!r}: bad term {t!r} (separate layers with commas: 1,2)"
            )
    return [t.lower() if t.lower() == "all" else t for t in texts]


def _parse_layer_term(term: str) -> tuple[tuple[str, bool], tuple[str, bool] | None, int]:
    match = _LAYER_TERM.match(term)
    if not match:
        raise SteeropsError(
            f"layers: bad term {term!r} (use all, 15, 5,10, 5-20, 0-30:5 or 30%-60%)"
        )
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
