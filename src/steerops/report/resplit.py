"""The report's choice made again on other splits of the same questions.

The recommended config is chosen on one half of the questions and reported on the other.
Which questions fall in which half is one seeded draw: with 20 held-out questions, another
draw can choose another layer or coefficient, or give the same one another held-out delta.
Every config was scored on every question, so other splits need no new answers: for each
seed after the main one, every cell of the (model, trait) chooses again on its selection
half (`stats.choose`, with the same intervals and bar), the report's choice among the cells
is made again (`tables.selection_choice`), and its held-out verdict and delta are read on
that split's other half. The tally says how much the choice owes to the draw."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from steerops import stats
from steerops.report.markdown import cell, where
from steerops.report.tables import (
    GROUP,
    choices,
    near_copies_of,
    same_cell,
    same_value,
    selection_choice,
)


@dataclass(frozen=True)
class Resplit:
    """The choice on `splits` other splits (seeds `first_seed` ...): how often each config
    was chosen (`chosen`: its words, "this config" for the report's, with a count; splits
    that chose nothing are `nothing`), how often the choice was ok held out, and the
    held-out deltas of the choices made."""

    splits: int
    first_seed: int
    chosen: tuple[tuple[str, int], ...]  # most often first; the report's config first of ties
    nothing: int
    ok: int
    deltas: tuple[float, ...]  # held-out delta of each split's choice (none: no choice)

    @property
    def same_config(self) -> int:
        return dict(self.chosen).get(THIS, 0)


THIS = "this config"


def resplit(
    frame: pd.DataFrame,
    choice: pd.Series,
    threshold: float,
    fraction: float,
    seed: int,
    splits: int,
    near: frozenset[str] = frozenset(),
) -> Resplit | None:
    """The report's choice (`choice`, a `gap_analysis` row) made again on `splits` other
    splits of its (model, trait)'s questions, seeds seed+1 ... seed+splits; None with none
    asked or no per-question scores (`load_results`' `scores`). `near` names the near
    copies of the choice's method (`gap_analysis`' `near_copy_of`), worded as such."""
    cells = frame[same_cell(frame, choice, ["model", "trait"]) & (frame["alias_of"] == "")]
    if splits <= 0 or cells.empty or "scores" not in cells:
        return None
    if not all(isinstance(x, Mapping) for x in cells["scores"]):
        return None  # a frame not read from results logs: nothing to split
    groups = [(key, rows.to_dict("records")) for key, rows in cells.groupby(GROUP, sort=True)]
    tally: Counter[str] = Counter()
    ok, deltas = 0, []
    for s in range(seed + 1, seed + 1 + splits):
        picked = _choice_at(groups, threshold, fraction, s)
        tally[_words(picked, choice, near)] += 1
        if picked is not None:
            ok += picked["status"] == stats.OK
            delta = stats.as_number(picked["heldout_trait_delta"])
            if delta is not None:
                deltas.append(delta)
    nothing = tally.pop(NOTHING, 0)
    chosen = sorted(tally.items(), key=lambda kv: (-kv[1], kv[0] != THIS, kv[0]))
    return Resplit(splits, seed + 1, tuple(chosen), nothing, ok, tuple(deltas))


def resplits(
    frame: pd.DataFrame,
    gap: pd.DataFrame,
    threshold: float,
    fraction: float,
    seed: int,
    splits: int,
) -> dict[tuple[str, str], Resplit | None]:
    """`resplit` of each (model, trait)'s choice (`tables.selection_choice` of its
    `gap_analysis` rows), keyed (model, trait) as text."""
    return {
        pair: resplit(
            frame, choice, threshold, fraction, seed, splits, near_copies_of(mine, choice["method"])
        )
        for pair, mine, choice in choices(gap)
    }


def _choice_at(
    groups: list[tuple[Any, list[dict]]], threshold: float, fraction: float, seed: int
) -> pd.Series | None:
    """The report's choice among the cells when the questions are split with `seed`."""
    gap = []
    halves: dict[tuple, tuple[list[str], list[str]]] = {}  # per question list, as each log
    for key, rows in groups:
        at = []
        for r in rows:
            questions = tuple(r["scores"])
            if questions not in halves:
                halves[questions] = stats.split_questions(list(questions), fraction, seed)
            at.append(_AtSplit(r, halves[questions], seed))
        pick, status = stats.choose(at, threshold)
        gap.append(
            {
                **dict(zip(GROUP, key, strict=True)),
                "alias_of": "",
                "status": status,
                **{k: (pick or {}).get(k) for k in ("layer", "coefficient")},
                "selection_delta": (pick or {}).get("selection_trait_delta"),
                "selection_coherence": (pick or {}).get("selection_coherence_mean"),
                "selection_delta_lo": (pick or {}).get("selection_delta_lo"),
                "heldout_trait_delta": (pick or {}).get("heldout_trait_delta"),
            }
        )
    return selection_choice(pd.DataFrame(gap))


class _AtSplit(Mapping):
    """A config's numbers on each half of one split, as `stats.choose` reads them (the
    names `stats.half_stats` gives, no sign-flip p: the choice and its verdict need only
    the intervals). Each is worked out when first read: the choice reads the intervals of
    the selection half's coherent configs and the held-out numbers of its pick only. A key
    `stats.choose` starts reading that this row does not give reads as missing (None
    through `Mapping.get`): `test_resplit` compares every field with `config_rows`'."""

    def __init__(self, row: dict, halves: tuple[list[str], list[str]], seed: int):
        self.row, self.seed = row, seed
        self.halves = dict(zip(("selection", "heldout"), halves, strict=True))
        self.known: dict[str, Any] = {"layer": row["layer"], "coefficient": row["coefficient"]}
        self.diffs: dict[str, np.ndarray] = {}

    def __getitem__(self, key: str) -> Any:
        if key not in self.known:
            self._work_out(key)
        return self.known[key]

    def __iter__(self):
        return iter(["layer", "coefficient", "selection_baseline_coherence", *_HALF_KEYS])

    def __len__(self) -> int:
        return 3 + len(_HALF_KEYS)

    def _work_out(self, key: str) -> None:
        name, _, field = key.partition("_")
        if key == "selection_baseline_coherence":
            base = self.row["baseline_scores"]
            self.known[key] = stats.mean_of([base[q][1] for q in self.halves["selection"]])
        elif name not in self.halves or key not in _HALF_KEYS:
            raise KeyError(key)
        elif field in ("delta_lo", "delta_hi"):
            self._means(name)
            spread = stats.delta_interval(self.diffs[name], self.seed)
            self.known[f"{name}_delta_lo"], self.known[f"{name}_delta_hi"] = spread.lo, spread.hi
        else:
            self._means(name)

    def _means(self, name: str) -> None:
        if name in self.diffs:
            return
        at = self.halves[name]
        scores, base = self.row["scores"], self.row["baseline_scores"]
        traits = [scores[q][0] for q in at]
        sign = stats.as_number(self.row.get("sign")) or 1.0
        d = stats.paired_differences(traits, [base[q][0] for q in at], sign)
        self.diffs[name] = d
        self.known.update(
            {
                f"{name}_n": len(d),
                f"{name}_trait_mean": stats.mean_of(traits),
                f"{name}_coherence_mean": stats.mean_of([scores[q][1] for q in at]),
                f"{name}_trait_delta": float(d.mean()) if len(d) else None,
                f"{name}_p": None,
            }
        )


_HALF_KEYS = [
    f"{name}_{field}"
    for name in ("selection", "heldout")
    for field in ("n", "trait_mean", "coherence_mean", "trait_delta", "delta_lo", "delta_hi", "p")
]


NOTHING = "nothing"


def _words(picked: pd.Series | None, choice: pd.Series, near: frozenset[str] = frozenset()) -> str:
    """A split's choice as the tally names it: "this config" (the report's), the layer
    and coefficient of another config of its cell, a near copy of the choice's method at
    this config (`near`), or another cell's config in full."""
    if picked is None:
        return NOTHING
    same_config = same_value(picked["layer"], choice["layer"]) and same_value(
        picked["coefficient"], choice["coefficient"]
    )
    config = f"layer {cell(picked['layer'])}, coefficient {cell(picked['coefficient'])}"
    if any(str(picked[k]) != str(choice[k]) for k in GROUP):
        in_cell = all(str(picked[k]) == str(choice[k]) for k in GROUP if k != "method")
        if same_config and in_cell and str(picked["method"]) in near:
            return f"its near copy `{picked['method']}` at this config"
        return f"{where(picked)} ({config})"
    return THIS if same_config else config


def resplit_words(r: Resplit | None) -> str | None:
    """The tally as one line of "In short"; None without one."""
    if r is None:
        return None
    last = r.first_seed + r.splits - 1
    seeds = f"seed {r.first_seed}" if r.splits == 1 else f"seeds {r.first_seed}-{last}"
    parts = [f"{said} on {n}" for said, n in r.chosen]
    parts += [f"nothing on {r.nothing}"] if r.nothing else []
    said = (
        f"on {r.splits} other split{'s' if r.splits != 1 else ''} of the same questions "
        f"({seeds}), the selection half chose {', '.join(parts)}"
    )
    chosen = r.splits - r.nothing
    if chosen:
        said += f"; the split's choice was ok held out on {r.ok} of {chosen}"
    if r.deltas:
        d = np.asarray(r.deltas)
        of = f" (of {len(d)})" if len(d) < chosen else ""
        said += (
            f", its held-out delta{of}, ok or not, from {stats.delta_text(float(d.min()))} to "
            f"{stats.delta_text(float(d.max()))} (median {stats.delta_text(float(np.median(d)))})"
        )
    # the splits share their questions: an effect peculiar to them holds on every split
    return (
        f"{said} (the splits share their questions: how much the choice owes to the draw, "
        "not replications)"
    )
