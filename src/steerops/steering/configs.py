"""Steering configs in the user's units, and what evaluating one gives.

A config names its vectors (layer, method, position, component) and one coefficient, in
`steering.coefficient_unit`. The evaluator turns the coefficient into an absolute weight on
each unit vector (the layer's mean norm and the sign of `steering.direction` included), and
a result records both the config and those weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import overload

from steerops import stats
from steerops.specs import MethodName, Position


@dataclass(frozen=True)
class VectorSource:
    """One stored vector set: a method's vectors at a position, of a component."""

    method: str
    position: str  # canonical spec text
    component: str

    @classmethod
    def of(cls, method: MethodName | str, position: Position | str, component: str) -> VectorSource:
        return cls(str(method), str(position), component)

    def at(self, layer: int) -> VectorRef:
        return VectorRef(layer, self.component, self.position, self.method)


@dataclass(frozen=True)
class VectorRef:
    """One vector: its layer and source."""

    layer: int
    component: str
    position: str
    method: str

    @property
    def source(self) -> VectorSource:
        return VectorSource(self.method, self.position, self.component)

    @property
    def file_key(self) -> str:
        """How results logs name the vector file this vector comes from."""
        return vector_file_key(self.method, self.position, self.component)


def vector_file_key(method: str, position: str, component: str) -> str:
    return f"{method}|{position}|{component}"


@dataclass(frozen=True)
class Config:
    """Vectors added together, each scaled by `coefficient` in the coefficient unit."""

    vectors: tuple[VectorRef, ...]
    coefficient: float

    @classmethod
    def single(cls, source: VectorSource, layer: int, coefficient: float) -> Config:
        return cls((source.at(layer),), float(coefficient))


@dataclass
class ConfigResult:
    config: Config | None  # None for the baseline
    trait_mean: float | None
    coherence_mean: float | None
    n: int
    responses: list[dict]  # [{question, response, trait, coherence}]; empty when cached
    n_unscored: int = 0  # responses the judge could not score (excluded from the means)
    # of those, responses the endpoint refused to judge (not cached): never served again
    n_refused: int = 0
    trait_delta: float | None = None
    cached: bool = False  # served from the results log
    # served from an entry logged under the same settings (a run that logged it and may
    # have died before writing its response files), not copied from other settings
    logged_here: bool = False
    weights: tuple[float, ...] = field(default=())  # absolute weight per vector, sign included
    # (trait, coherence) per question in question order, served results included
    scores: list[tuple[float | None, float | None]] = field(default_factory=list)


def grid_cells(
    methods: list[MethodName], positions: list[Position]
) -> list[tuple[MethodName, Position]]:
    """Every (method, position) cell of a sweep, positions outermost (the stages' `--method X`
    makes a one-item list)."""
    return [(method, position) for position in positions for method in methods]


def summarize(scores: list[tuple[float | None, float | None]]) -> dict:
    """Means over scored responses; unscorable ones (None) are counted, not averaged."""
    traits = [t for t, _ in scores if t is not None]
    coherences = [c for _, c in scores if c is not None]
    return {
        "trait_mean": sum(traits) / len(traits) if traits else None,
        "coherence_mean": sum(coherences) / len(coherences) if coherences else None,
        "n": len(scores),
        "n_unscored": sum(t is None or c is None for t, c in scores),
    }


@overload
def delta(value: float, base: float, direction: str) -> float: ...
@overload
def delta(value: float | None, base: float | None, direction: str) -> float | None: ...
def delta(value: float | None, base: float | None, direction: str) -> float | None:
    """Trait change from the baseline in the steering direction: positive means more of what
    the steering aims for (as every half's delta and the search's objective)."""
    if value is None or base is None:
        return None
    return value - base if direction == "positive" else base - value


def trait_delta(
    scores: list[tuple[float | None, float | None]], base: ConfigResult, direction: str
) -> float | None:
    """The trait change from the baseline in the steering direction over the questions both
    scored (paired, as every half's delta and its interval); a difference of means when the
    baseline's per-question scores are not at hand."""
    if len(base.scores) != len(scores):
        return delta(summarize(scores)["trait_mean"], base.trait_mean, direction)
    return stats.paired_mean(scores, base.scores, stats.direction_sign(direction))
