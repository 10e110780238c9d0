"""What `steerops steer` prints per grid cell: a layer x coefficient table of trait and
coherence (and n when configs differ in it), the baseline, the verdict with the chosen
config's held-out numbers and where the files are (relative to the working directory)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from steerops import stats
from steerops.steering.outputs import coefficient_text


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _coherence(value: float | None) -> str:
    return "-" if value is None else stats.coherence_text(value)


def cell_table(
    title: str,
    baseline: Any,
    results: list[Any],
    metrics: dict[str, Any],
    folder: str | Path,
) -> str:
    """`results`: ConfigResults of single-vector configs (layer, coefficient)."""
    cells = {(r.config.vectors[0].layer, r.config.coefficient): r for r in results}
    layers = sorted({layer for layer, _ in cells})
    coefficients = sorted({c for _, c in cells})
    # the answers each mean is over: those the judge scored (a judge declining answers of
    # one kind leaves means of the rest)
    counts = {(r.n, r.n - r.n_unscored) for r in results}
    same_n = len(counts) == 1 and all(n == scored for n, scored in counts)
    best = (metrics.get("tried_layer"), metrics.get("tried_coefficient"))
    # `*` marks an answer; `~` the config a verdict other than ok was drawn on, not a pick
    mark = "*" if metrics.get("status") == stats.OK else "~"
    head = (
        f"{title}: trait / coherence per layer x coefficient"
        + (f" (n {counts.pop()[0]} per config)" if same_n else " (nS/N: S of N answers scored)")
        + f"; baseline {_num(baseline.trait_mean)} / {_coherence(baseline.coherence_mean)}"
    )
    rows = [["", *(f"c={coefficient_text(c)}" for c in coefficients)]]
    for layer in layers:
        row = [f"L{layer}"]
        for c in coefficients:
            r = cells.get((layer, c))
            text = "" if r is None else f"{_num(r.trait_mean)} / {_coherence(r.coherence_mean)}"
            if r is not None and not same_n:
                text += f" n{r.n - r.n_unscored}/{r.n}"
            row.append(text + (f" {mark}" if (layer, c) == best else "  "))
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [head] + [
        "  " + "  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.append(f"  {mark} " + verdict_line(metrics))
    if metrics.get("at_largest_coefficient"):
        lines.append(
            "    the grid's largest coefficient at this layer: a larger one may steer more "
            "(extend --coefficients, or run `steerops search`)"
        )
    elif metrics.get("status") == stats.OK and stats.saturated(metrics):
        lines.append(
            "    the trait is at the end of the judge's scale on the selection half: a larger "
            "coefficient cannot steer more, a smaller one may keep the effect at more "
            "coherence (`steerops search` looks below it)"
        )
    lines.append(f"  files: {folder}")
    return "\n".join(lines)


def verdict_line(m: dict[str, Any]) -> str:
    """One line: the verdict and the held-out numbers of the chosen config."""
    note = f" (alias of {m['alias_of']}: identical vectors)" if m.get("alias_of") else ""
    if m.get("tried_layer") is None:  # nothing chosen (or a metrics.json before tried_*)
        return _nothing_chosen(m, note) + unscored_note(m)
    # only an "ok" config is an optimal one; another verdict still shows what was checked
    chosen = f"layer {m['tried_layer']} coefficient {coefficient_text(m['tried_coefficient'])}"
    head = chosen if m["status"] == "ok" else f"no optimal coefficient (chosen: {chosen})"
    status, selection = m["status"], ""
    if status == stats.NO_EFFECT and stats.no_effect_on_selection(m):
        # the choice on the selection half (the largest delta, ties to the more coherent),
        # none with an interval above zero there: not the strongest push when deltas tie
        head = f"no optimal coefficient (its choice on the selection half: {chosen})"
        status = f"{status} on the selection half"
        selection = f" (selection delta {_interval(m, 'selection_trait_delta', 'selection_')})"
    elif status == stats.NO_EFFECT:
        status = f"{status} held out"
    elif status == stats.OPPOSITE:
        status = f"{status} ({stats.opposite_words(m)})"
    under = stats.under_bar_text(
        m.get("heldout_coherence_scored"),
        m.get("heldout_under_bar"),
        m["min_coherence"],
        m.get("heldout_coherence_unscored"),
    )
    unmoved = stats.unmoved_phrase(
        m.get("heldout_under_bar"),
        m["min_coherence"],
        m.get("heldout_under_bar_moved"),
        [m.get(f"heldout_credited_{k}") for k in ("delta", "lo", "hi")],
        m.get("heldout_coherence_unscored"),
    )
    delta = _interval(m, "heldout_trait_delta", "heldout_")
    if stats.degenerate(m["heldout_delta_lo"], m["heldout_delta_hi"]):  # said of this one
        delta += f" ({stats.DEGENERATE_NOTE})"
    line = (
        f"{status}{note}: {head}, chosen on {m['selection_n']} questions{selection}; "
        f"held-out delta {delta}, coherence "
        f"{stats.coherence_text(m['heldout_coherence'])}{under}, n {m['heldout_n']}"
        + (f"; {unmoved}" if unmoved else "")
    )
    if few := stats.few_questions_note(m["heldout_n"]):
        line += f" ({few})"
    return line + unscored_note(m)


def _nothing_chosen(m: dict[str, Any], note: str) -> str:
    """Why no steered config was a candidate (`note`: the alias it is of, if any)."""
    reached = m.get("best_coherence_reached")
    bar = f"{m['min_coherence']:g}"
    if m["status"] == stats.BASELINE_INCOHERENT:
        base = stats.coherence_text(m.get("selection_baseline_coherence"))
        return (
            f"{m['status']}{note}: the unsteered model scores coherence {base} on the "
            f"selection half, under the bar of {bar}, and no steered config reaches it "
            "(check the judge's coherence scale, or lower steering.min_coherence)"
        )
    if m["status"] == stats.UNSCORED:
        what = "a coherence score" if reached is None else "that reached the bar a trait score"
        return (
            f"{m['status']}{note}: the judge gave no steered config {what}: a failure, "
            "not a finding (check the judge)"
        )
    best = "none scored" if reached is None else f"best {stats.coherence_text(reached)}"
    return (
        f"{m['status']}{note}: no steered config reached coherence >= {bar} on the "
        f"selection half ({best})"
    )


def unscored_note(m: dict[str, Any]) -> str:
    """ "; 30 of 240 answers of its steered configs lack a ... score ..." when the judge
    left some unscored: each mean and delta is over the rest, so a judge declining answers
    of one kind (a content filter on harmful ones) can hide an effect or make one."""
    unscored, answers = m.get("n_unscored"), m.get("n_answers")
    if not unscored:
        return ""
    return (
        f"; {unscored} of {answers} answers of its steered configs lack a trait or coherence "
        "score from the judge (each mean leaves out the answers it has no score for: an "
        "effect on them would not show)"
    )


def _interval(m: dict[str, Any], mid: str, half: str) -> str:
    return stats.interval_text(m.get(mid), m.get(f"{half}delta_lo"), m.get(f"{half}delta_hi"))
