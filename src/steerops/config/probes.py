"""Params for preference probes (ridge on scalar scores) and the OOD analysis."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveFloat

from steerops.config.base import LayerSpec, PositionSpec, Strict
from steerops.specs import Component, Layers, parse_position


class OodConfig(Strict):
    conditions: str | None = Field(
        "data/toy/probes/conditions.json",
        description="JSON: baseline {id, system_prompt} + conditions "
        "[{id, system_prompt, target, version, role}]",
    )
    rates: str | None = Field(
        "data/toy/probes/rates.csv", description="CSV condition_id,task_id,rate (baseline included)"
    )
    probe_run: str | None = Field(None, description="probe run dir; default: latest.json's")
    layer: int | None = Field(None, description="probe layer; default: the run's best layer")
    permutations: int = Field(10000, ge=1, description="permutations of the p-value")
    top_k: int = Field(5, ge=1, description="targets listed per condition")
    tasks: Literal["heldout", "all"] = Field(
        "heldout",
        description="tasks the statistics are computed on: heldout (those the probe was "
        "neither fitted nor selected on) or all (optimistic: includes fitted tasks)",
    )
    pair_roles: list[str] = Field(
        default_factory=lambda: ["A", "C"],
        min_length=2,
        max_length=2,
        description="(positive, negative) roles",
    )


class ProbesConfig(Strict):
    variant: str = Field("instruct", description="model variant (from `models`)")
    tasks: str = Field(
        "data/toy/probes/tasks.jsonl",
        description="task set JSONL (task_id, prompt or messages, optional system_prompt)",
    )
    tasks_name: str | None = Field(
        None, description="task-set name in output paths; default: the tasks file's stem"
    )
    scores: str = Field("data/toy/probes/scores.csv", description="task_id,mu[,sigma]")
    condition: str = Field(
        "baseline",
        description="activation condition the probe trains on: baseline (each task keeps "
        "its own system prompt), or a condition of the conditions file (its system prompt "
        "replaces the task's)",
    )
    position: PositionSpec = Field(
        parse_position("prompt[-1]"), description="token position, e.g. prompt[-1]"
    )
    layers: LayerSpec = Field(Layers("all"), description="layers probed, e.g. all, 5-20")
    component: Component = Field("residual", description="activation component")
    alphas: list[PositiveFloat] = Field(
        default_factory=lambda: [10.0**k for k in range(-3, 7)],
        min_length=1,
        description="ridge alphas swept",
    )
    standardize: bool = Field(True, description="ridge on z-scored activations")
    heldout_fraction: float = Field(
        0.4, gt=0.0, lt=1.0, description="held out, split into sweep and final halves"
    )
    cv_folds: int | None = Field(None, ge=2, description="k-fold CV instead of the hold-out")
    group_by: str | None = Field(
        None,
        min_length=1,
        description="a field of the task set's JSONL (e.g. topic): tasks sharing its value "
        "stay on one side of every split and fold, so held-out figures are on groups the "
        "probe never saw, not new phrasings of fitted ones; null: split by task",
    )
    split_seed: int | None = Field(None, ge=0, description="default: the top-level seed")
    comparisons: str | None = Field(
        None, description="JSONL task_a,task_b,winner: pairwise accuracy on held-out pairs"
    )
    confounds: str | None = Field(
        None, description="CSV task_id + categorical columns regressed out of the scores"
    )
    prior_mu: float = Field(10.0, gt=0, description="Thurstonian prior sd of mu")
    prior_log_sigma: float = Field(0.5, gt=0, description="Thurstonian prior sd of log sigma")
    thurstonian_max_iter: int = Field(
        2000, ge=1, description="Thurstonian fit: optimiser iterations at most (L-BFGS-B)"
    )
    ood: OodConfig = Field(default_factory=OodConfig)
