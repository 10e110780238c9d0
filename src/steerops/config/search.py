"""Params for the Optuna coefficient search under the coherence constraint."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from steerops.config.base import LayerSpec, Methods, Positions, Strict


class SearchConfig(Strict):
    trials: int = Field(
        24,
        ge=1,
        description="distinct configs evaluated per study (the target; fewer when the "
        "sampler proposes only configs already evaluated: the range is exhausted)",
    )
    batch: int = Field(8, ge=1, description="trials asked and evaluated together")
    min_gap: float = Field(
        0.005,
        ge=0,
        lt=1,
        description="share of the coefficient range: a coefficient the sampler proposes "
        "within it of one already tried at its layer is a repeat, not evaluated (its model "
        "homes in on its best point in steps that change no response); 0: only exact repeats",
    )
    sampler: Literal["gp", "tpe"] = Field("gp", description="Optuna sampler")
    storage: str | None = Field(
        None,
        description="SQLAlchemy URL (sqlite, postgresql, mysql) or journal:///PATH "
        "(Optuna's journal file); default sqlite optuna.db",
    )
    study: str | None = Field(
        None, description="study name; default: built from the searched settings"
    )
    coef_min: float = Field(
        0.0,
        description="low end, in steering.coefficient_unit (x the layer's mean per-token norm)",
    )
    coef_max: float = Field(3.0, description="upper end of the coefficient range")
    heldout_fraction: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="share of the questions held out (seeded by `seed`); steer and report use it "
        "too",
    )
    methods: Methods = Field(
        default_factory=list,
        description="vector methods, one study each with every position (empty: steering.methods)",
    )
    positions: Positions = Field(
        default_factory=list,
        description="positions the vectors were extracted at (empty: steering.positions)",
    )
    layers: LayerSpec | None = Field(
        None, description="layers searched (categorical when several); default steering.layers"
    )
    min_coherence: float | None = Field(
        None,
        ge=0,
        le=100,
        description="feasible if coherence >= this; default steering.min_coherence",
    )
    coherence_margin: float = Field(
        0.0,
        ge=0,
        le=50,
        description="points over min_coherence a trial needs on the search half to be "
        "feasible (the constraint the sampler sees) and chosen; the held-out verdict keeps "
        "min_coherence. A choice at the bar's edge on one half often falls under it on the "
        "other (the search maximises against the edge). A margin is a new study",
    )
    seed: int | None = Field(
        None,
        ge=0,
        le=2**32 - 1,  # the samplers' numpy RandomState
        description="sampler seed; default `seed` (the search/held-out question split always "
        "follows the top-level `seed`)",
    )
    startup_trials: int | None = Field(
        None,
        ge=1,
        description="seeded stratified coefficients evaluated before the "
        "sampler's model takes over, one in each equal slice of the range (a slice that "
        "holds a known result at its layer is left to it); default: one per searched layer "
        "(at least 3), at most half of `trials`",
    )
    enqueue: list[float] = Field(
        default_factory=list,
        description="coefficients evaluated first, at every searched layer (e.g. grid points)",
    )
    known_results: str | None = Field(
        None,
        description="steering results.jsonl to import as known trials; default: the "
        "configs of the steer stage cell's latest sweep, with scores on the search half "
        "under the search's settings (the search's own log serves its trials, never seeds "
        "them)",
    )
    import_known: bool = Field(
        True, description="import known results (off: search from scratch, e.g. for benchmarks)"
    )
    heartbeat_s: int = Field(30, ge=1, description="trial heartbeat period")
    grace_s: int = Field(
        120,
        ge=1,
        description="a running trial with no heartbeat for this long is taken over by "
        "another worker (at once if its worker ended on this machine)",
    )
    max_retry: int = Field(
        3, ge=0, description="takeovers of a trial whose worker died, then it fails for good"
    )

    @field_validator("coef_min", "coef_max")
    @classmethod
    def _not_negative(cls, value: float, info) -> float:
        # the search values a trial by its delta in the steering direction: steering the
        # other way is that direction's sign, not a negative coefficient (which steer takes)
        if value < 0:
            raise ValueError(
                "negative: a search's coefficients are magnitudes; to steer the other way "
                "set steering.direction: negative (--direction negative)"
            )
        if value == 0 and info.field_name == "coef_max":
            raise ValueError("zero: the range needs a top above 0")
        return value

    @model_validator(mode="after")
    def _range(self) -> SearchConfig:
        if self.coef_max <= self.coef_min:
            raise ValueError("coef_max must be greater than coef_min")
        if self.grace_s <= self.heartbeat_s:  # a live worker's trial would be taken over
            raise ValueError(
                f"grace_s ({self.grace_s}) must exceed heartbeat_s ({self.heartbeat_s}): a "
                "live worker beats only that often"
            )
        for c in self.enqueue:
            if not self.coef_min <= c <= self.coef_max:
                raise ValueError(
                    f"enqueue: coefficient {c:g} is outside the searched range "
                    f"[{self.coef_min:g}, {self.coef_max:g}] (coef_min, coef_max)"
                )
        return self
