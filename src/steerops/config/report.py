"""Params for the research report computed from tracked results."""

from __future__ import annotations

from pydantic import Field

from steerops.config.base import Strict


class ReportConfig(Strict):
    out: str = Field("reports", description="reports folder (relative to the params dir)")
    results: str | None = Field(
        None,
        description="results page written from the run (e.g. docs/results.md, relative to the "
        "params dir); none: not written",
    )
    min_coherence: float | None = Field(
        None,
        ge=0,
        le=100,
        description="coherence a config needs to count (0-100); default: the bar the cells "
        "were steered with when they agree (a run steered with --min-coherence is reported "
        "at it), else this params file's steering.min_coherence",
    )
    resplits: int = Field(
        20,
        ge=0,
        le=200,
        description="other splits of the same questions (seeds seed+1 ...) the choice is made "
        "again on, to say how much it owes to which questions were held out (0-200; 0: none)",
    )
