"""A few held-out answers of the recommended config beside the unsteered model's, read from
the steering cell's saved responses (`steering.save_responses`): a trait score says what
the judge read, the text says whether it is the trait. Chosen by rule, not by hand: the
first held-out questions (in the split's order) that moved along the steering, then one
scored under the coherence bar, one that moved against it and one that did not move."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from steerops import stats
from steerops.io import read_json
from steerops.report.tables import GROUP, at_config, same_cell, same_value, selection_choice
from steerops.steering.store import RESPONSES_DIR, joined, steering_dir

BASELINE = "baseline.json"  # the unsteered model's answers, beside the configs'
WIDTH = 160  # characters of an answer shown: enough to read what it does


def examples(
    params, frame: pd.DataFrame, choice: pd.Series | None, threshold: float
) -> pd.DataFrame:
    """Rows (question, how it moved, unsteered and steered answer with their scores) of the
    chosen config's held-out answers; empty when there is no choice or its responses were
    not kept under the settings its scores were logged with."""
    rows = _chosen_rows(frame, choice)
    if rows is None:
        return pd.DataFrame()
    row = rows.iloc[0]
    folder = (
        steering_dir(
            params.out,
            row["trait"],
            row["variant"],
            row["position"],
            row["component"],
            row["method"],
        )
        / RESPONSES_DIR
    )
    steered = _answers(folder, row, lambda d: _config_is(d, row))
    # the baseline's file serves every sweep that differs only in steering settings: taken
    # when its trait scores are the ones these deltas were measured against
    unsteered = _answers(folder, row, lambda d: True, BASELINE, _baseline_of(row))
    if steered is None or unsteered is None:
        return pd.DataFrame()
    deltas = row["heldout_deltas"] if isinstance(row["heldout_deltas"], dict) else {}
    coherences = row["heldout_coherences"] if isinstance(row["heldout_coherences"], dict) else {}
    picked = _pick(deltas, coherences, steered, threshold)
    return pd.DataFrame(
        [
            {
                "question": q,
                "moved": why,
                "unsteered": _text(unsteered[q]),
                "steered": _text(steered[q]),
            }
            for q, why in picked
            if q in unsteered
        ]
    )


def _chosen_rows(frame: pd.DataFrame, choice: pd.Series | None) -> pd.DataFrame | None:
    """The frame's rows of the chosen config (its cell, layer and coefficient)."""
    if choice is None or frame.empty:
        return None
    same = same_cell(frame, choice, GROUP) & at_config(
        frame, choice["layer"], choice["coefficient"]
    )
    rows = frame[same]
    return rows if len(rows) else None


def _config_is(saved: dict, row: pd.Series) -> bool:
    """Whether a responses file holds the row's config (its layer, "4+8" for vectors at
    layers 4 and 8, and its coefficient): files are named by both, read by what they hold."""
    config = saved.get("config") or {}
    vectors = config.get("vectors") or []
    layers = [v.get("layer") for v in vectors if isinstance(v, dict)]
    return (
        bool(vectors)
        and len(layers) == len(vectors)
        and same_value(joined(layers), row["layer"])
        and same_value(config.get("coefficient"), row["coefficient"])
    )


def _answers(
    folder: Path,
    row: pd.Series,
    wanted,
    name: str | None = None,
    traits: dict[str, float] | None = None,
) -> dict | None:
    """{question: saved answer} of the first file in `folder` (`name`, else every config
    file) that `wanted` accepts and was written under the row's settings, or whose trait
    scores are `traits` on those questions; None if none. A damaged or malformed file
    shows no examples, never wrong ones."""
    files = [folder / name] if name else sorted(p for p in folder.glob("L*_c*.json"))
    for path in files:
        try:
            saved = read_json(path) if path.is_file() else None
        except (OSError, ValueError):
            continue
        answers = _readable(saved)
        if answers is None or not wanted(saved):
            continue
        same = bool(row["settings"]) and saved.get("settings_hash") == row["settings"]
        if same or (traits and _scores_match(answers, traits)):
            return answers
    return None


def _readable(saved: Any) -> dict[str, dict] | None:
    """A responses file's {question: answer}, or None when it is not one."""
    if not isinstance(saved, dict) or not isinstance(saved.get("responses"), list):
        return None
    answers = [a for a in saved["responses"] if isinstance(a, dict) and "question" in a]
    return {str(a["question"]): a for a in answers} if answers else None


def _baseline_of(row: pd.Series) -> dict[str, float]:
    """The unsteered trait per held-out question the row's deltas were measured against
    (a delta is the steered trait minus it, in the steering direction)."""
    traits, deltas = row.get("heldout_traits"), row.get("heldout_deltas")
    sign = stats.as_number(row.get("sign")) or 1.0
    if not isinstance(traits, dict) or not isinstance(deltas, dict):
        return {}
    out = {}
    for q, delta in deltas.items():
        trait, d = stats.as_number(traits.get(q)), stats.as_number(delta)
        if trait is not None and d is not None:
            out[q] = trait - sign * d
    return out


def _scores_match(answers: dict[str, dict], traits: dict[str, float]) -> bool:
    """Whether a file's trait scores are `traits` on every one of those questions."""
    return all(q in answers and _close(answers[q].get("trait"), t) for q, t in traits.items())


def _close(value: Any, expected: float) -> bool:
    number = stats.as_number(value)
    return number is not None and abs(number - expected) <= 1e-6 * max(1.0, abs(expected))


def _pick(deltas: dict, coherences: dict, steered: dict, threshold: float) -> list[tuple[str, str]]:
    """Up to five held-out questions, in the split's order: two that moved along the
    steering (coherent first), one along it but scored under the coherence bar or given no
    coherence score (as the credited delta counts it), one against it, one unmoved. Moves of
    `stats.MOVED_LITTLE` points or more come first, and a smaller one (a graded judge's) is
    labelled with its size."""

    def under(q: str) -> bool:  # under the bar, or not scored for coherence: not coherent
        return not stats.coherent(coherences.get(q), threshold)

    moved = [(q, stats.as_number(d)) for q, d in deltas.items() if q in steered]
    size = dict(moved)

    def first(qs: list[str], n: int) -> list[str]:
        # a graded judge's wobble only where no move of MOVED_LITTLE or more is there
        return sorted(qs, key=lambda q: abs(size[q] or 0.0) < stats.MOVED_LITTLE)[:n]

    def way(q: str, word: str) -> str:
        d = size[q] or 0.0
        return word if abs(d) >= stats.MOVED_LITTLE else f"{word}, by {abs(d):g}"

    along = first([q for q, d in moved if d is not None and d > 0 and not under(q)], 2)
    broken = first([q for q, d in moved if d is not None and d > 0 and under(q)], 1)
    against = first([q for q, d in moved if d is not None and d < 0], 1)
    still = [q for q, d in moved if d == 0][:1]
    said = [(q, way(q, "along")) for q in along]
    said += [
        (q, f"{way(q, 'along')}, {_not_coherent(coherences.get(q), threshold)}") for q in broken
    ]
    return said + [(q, way(q, "against")) for q in against] + [(q, "not at all") for q in still]


def _not_coherent(coherence: Any, threshold: float) -> str:
    """Why an answer that moved along the steering is not a coherent example."""
    if stats.as_number(coherence) is None:
        return "not scored for coherence"
    return f"under {threshold:g}"


def _text(answer: dict[str, Any]) -> str:
    """An answer cut to `WIDTH` characters on one line, with its trait and coherence."""
    text = " ".join(str(answer.get("response", "")).split())
    if len(text) > WIDTH:
        text = text[: WIDTH - 1] + "…"
    trait = stats.as_number(answer.get("trait"))
    scores = f"trait {'n/a' if trait is None else f'{trait:g}'}, coherence "
    scores += stats.coherence_text(answer.get("coherence"), 1)
    return f"“{text}” ({scores})"


def example_sections(params, frame: pd.DataFrame, gap: pd.DataFrame, threshold: float) -> list:
    """[(model, trait, the choice, its examples)] per (model, trait) the gap analysis holds,
    for the choice `tables.selection_choice` makes (as "In short" does)."""
    out = []
    for (model, trait), mine in gap.groupby(["model", "trait"], sort=True):
        choice = selection_choice(mine)
        if choice is not None:
            out.append((model, trait, choice, examples(params, frame, choice, threshold)))
    return out
