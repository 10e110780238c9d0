"""A stand-in for the steering evaluator whose trait and coherence are closed-form functions of
the coefficient, so a search's feasible optimum is known exactly; and study helpers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from steerops.search.study import SearchStudy, Space
from steerops.search.trials import TrialRecord
from steerops.steering.configs import VectorSource

SOURCE = VectorSource("mean_diff", "prompt[-1]", "residual")


MIN_COH = 68.0


NORMS = {1: 4.0, 2: 10.0, 3: 25.0}


GAIN = {1: 0.5, 2: 1.0, 3: 0.8}


def synthetic_trait(layer: int, c: float) -> float:
    return 100.0 * GAIN[layer] * min(1.0, c / 2.0)  # keeps rising past the coherence cliff


def synthetic_coherence(layer: int, c: float) -> float:
    return float(np.clip(100.0 - 150.0 * (c - 1.2), 0.0, 100.0))  # < 68 above c = 1.4133


FEASIBLE_EDGE = 1.2 + (100.0 - MIN_COH) / 150.0


BASELINE_TRAIT = 5.0


@dataclass
class Result:
    config: object
    trait_mean: float | None
    coherence_mean: float | None
    n: int
    responses: list = field(default_factory=list)
    weights: tuple = ()
    cached: bool = False  # served from a log
    logged_here: bool = False  # ... that this search wrote
    sign: float = 1.0  # the steering direction's: -1 to suppress the trait
    n_refused: int = 0  # answers the judge's endpoint refused to judge

    @property
    def trait_delta(self) -> float | None:
        """Against the baseline, every question scored: paired and unpaired agree."""
        if self.trait_mean is None:
            return None
        return self.sign * (self.trait_mean - BASELINE_TRAIT)

    @property
    def scores(self) -> list:
        """The same (trait, coherence) on every question."""
        return [(self.trait_mean, self.coherence_mean)] * self.n


class SyntheticEvaluator:
    """The steering evaluator's interface (configs in the user's units, results with their
    weights) with closed-form scores; records what it was asked."""

    def __init__(
        self,
        questions,
        fail_on_call: int | None = None,
        direction: str = "positive",
        refuse_above: float | None = None,
    ):
        self.questions = list(questions)
        self.refuse_above = refuse_above  # configs past it get one answer refused
        self.sign = 1.0 if direction == "positive" else -1.0
        self.calls: list[list[tuple[int, float, float]]] = []
        self.fail_on_call = fail_on_call
        self.settings_hash = "synthetic"

    def baseline(self):
        return Result(None, BASELINE_TRAIT, 100.0, len(self.questions))

    def run_params(self):
        return {"settings_hash": self.settings_hash, "n_questions": len(self.questions)}

    def unsteered(self, config):
        return config.coefficient == 0

    def evaluate(self, configs):
        if self.fail_on_call is not None and len(self.calls) + 1 == self.fail_on_call:
            raise KeyboardInterrupt
        batch = [
            (c.vectors[0].layer, c.coefficient, c.coefficient * NORMS[c.vectors[0].layer])
            for c in configs
        ]
        self.calls.append(batch)
        return [
            Result(
                c,
                synthetic_trait(layer, coef),
                synthetic_coherence(layer, coef),
                len(self.questions),
                weights=(weight,),
                sign=self.sign,
                n_refused=int(self.refuse_above is not None and coef > self.refuse_above),
            )
            for c, (layer, coef, weight) in zip(configs, batch, strict=True)
        ]


def open_study(
    tmp_path, layers=(2,), name="s", coef_range=(0.0, 3.0), resolution=0.0, **kw
) -> SearchStudy:
    settings = {"layers": list(layers), "min_coherence": MIN_COH}
    return SearchStudy(
        f"sqlite:///{tmp_path / 'optuna.db'}",
        name,
        Space(*coef_range, layers, resolution),
        MIN_COH,
        settings,
        **kw,
    )


def record(number, delta, coherence, state="complete", coefficient=1.0):
    return TrialRecord(
        number,
        2,
        coefficient,
        coefficient * 10,
        delta + BASELINE_TRAIT,
        coherence,
        delta,
        coherence >= MIN_COH,
        state,
        "search",
        4,
    )


def summary_context(root, storage: str):
    """The params and plan `results.best_summary` reads, for a study 's' of layer 2 searched
    on [0, 3] (one search and one held-out question)."""
    from types import SimpleNamespace

    params = SimpleNamespace(
        root=root,
        steering=SimpleNamespace(
            variant="v", vector_variant="v", direction="positive", coefficient_unit="norm"
        ),
        search=SimpleNamespace(sampler="gp", coef_min=0.0, coef_max=3.0),
    )
    plan = SimpleNamespace(
        search_questions=["q"],
        heldout_questions=["h"],
        trait="t",
        source=SOURCE,
        min_coherence=MIN_COH,
        margin=0.0,
        search_bar=MIN_COH,
        study="s",
        storage=storage,
        seed=0,
        layers=[2],
        settings={"settings_hash": "h"},
    )
    return params, plan
