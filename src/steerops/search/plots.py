"""search.png: coefficient vs trait delta and vs coherence on the search half; feasible trials
apart from infeasible ones, and, over several layers, coloured by layer; the chosen trial
beside its held-out result (with its interval) and the search's verdict, since a choice on
the search half can fail held out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from steerops.io import save_png
from steerops.search.trials import TrialRecord


def plot_search(
    path: Path,
    records: list[TrialRecord],
    chosen: TrialRecord | None,
    min_coherence: float,
    title: str,
    best: dict | None = None,
) -> None:
    """`best`: best.json, for the held-out result, the verdict and the coefficient unit."""
    save_png(search_figure(records, chosen, min_coherence, title, best), path)  # selects Agg


def search_figure(
    records: list[TrialRecord],
    chosen: TrialRecord | None,
    min_coherence: float,
    title: str,
    best: dict | None = None,
) -> Any:
    """The figure. One layer: feasible trials green, infeasible red. Trials over several
    layers: colour by layer (a colour bar), feasible as dots and infeasible as crosses, since
    a coefficient means a different strength at each layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    done = [r for r in records if r.state == "complete" and r.trait_delta is not None]
    layers = sorted({r.layer for r in done})
    by_layer = len(layers) > 1
    fig, (ax_delta, ax_coh) = plt.subplots(
        1, 2, figsize=(10.8 if by_layer else 10, 4), sharex=True, layout="constrained"
    )
    shade: dict[str, Any] = (
        {"cmap": "viridis", "vmin": min(layers), "vmax": max(layers)} if by_layer else {}
    )
    # (feasible, colour with one layer, marker over several, legend label)
    kinds = (
        (True, "tab:green", "o", f"coherence >= {min_coherence:g}"),
        (False, "tab:red", "X", "infeasible"),
    )
    drawn = None
    handles: list[Any] = []
    for ok, colour, marker, label in kinds:
        look: dict[str, Any] = {"marker": marker if by_layer else "o", "s": 30 if by_layer else 24}
        key_colour, key_marker = ("grey", marker) if by_layer else (colour, "o")
        handles.append(
            Line2D([], [], color=key_colour, marker=key_marker, linestyle="", label=label)
        )
        pts = [r for r in done if bool(r.feasible) == ok]
        if not pts:
            continue
        xs = [r.coefficient for r in pts]
        look |= {"c": [r.layer for r in pts], **shade} if by_layer else {"c": colour}
        drawn = ax_delta.scatter(xs, [r.trait_delta for r in pts], **look)
        ax_coh.scatter(xs, [r.coherence_mean for r in pts], **look)
    if by_layer and drawn is not None:
        bar = fig.colorbar(drawn, ax=[ax_delta, ax_coh], label="layer")
        if len(layers) <= 10:
            bar.set_ticks(layers)  # the layers searched, not fractions between them
        else:
            bar.locator = MaxNLocator(integer=True)
            bar.update_ticks()
    if chosen is not None and chosen.trait_delta is not None:
        star = {"marker": "*", "s": 240, "facecolors": "none", "edgecolors": "black"}
        x = [chosen.coefficient]
        handles.append(
            ax_delta.scatter(
                x, [chosen.trait_delta], label=f"chosen (layer {chosen.layer})", **star
            )
        )
        ax_coh.scatter(x, [chosen.coherence_mean], **star)
        held = (best or {}).get("heldout")
        if held and held.get("trait_delta") is not None:
            handles.append(_held_out(ax_delta, ax_coh, chosen.coefficient, held, best or {}))
    ax_coh.axhline(min_coherence, color="grey", linestyle="--", linewidth=1)
    verdict_bar = (best or {}).get("min_coherence")
    if verdict_bar is not None and verdict_bar != min_coherence:  # a margin: the held-out bar
        ax_coh.axhline(verdict_bar, color="grey", linestyle=":", linewidth=1)
        ax_coh.annotate(
            f"held-out bar {verdict_bar:g}",
            (0.01, verdict_bar),
            xycoords=("axes fraction", "data"),
            fontsize=8,
            color="grey",
            va="bottom",
        )
    ax_delta.axhline(0, color="grey", linewidth=0.8)  # no effect
    low, high = ax_delta.get_ylim()
    ax_delta.set_ylim(min(0.0, low), max(0.0, high))
    unit = (best or {}).get("coefficient_unit")
    xlabel = f"coefficient ({unit})" if unit else "coefficient"
    n = ((best or {}).get("search") or {}).get("n_questions")
    half = f"search half, {n} questions" if n else "search half"
    verdict = (best or {}).get("status")
    ax_delta.set(xlabel=xlabel, ylabel=f"trait delta vs baseline ({half})", title=title)
    ax_coh.set(
        xlabel=xlabel,
        ylabel=f"coherence ({half})",
        ylim=(-2, 102),
        title=f"constraint: coherence >= {min_coherence:g}",
    )
    if verdict:  # a star on the search half is not a recommendation: say what held out
        ok = verdict == "ok"
        fig.suptitle(
            f"search: {verdict}"
            if chosen is None
            else f"search: chosen on the search half; held out: {verdict}",
            color="black" if ok else "tab:red",
            fontsize=10,
        )
    ax_delta.legend(handles=handles, fontsize=8)
    return fig


def _held_out(ax_delta, ax_coh, x: float, held: dict, best: dict) -> Any:
    """The chosen config on the held-out half: its delta with the 95% interval, and its
    coherence, as hollow diamonds (red when the verdict is not ok)."""
    colour = "tab:blue" if best.get("status") == "ok" else "tab:red"
    delta, lo, hi = held["trait_delta"], held.get("delta_lo"), held.get("delta_hi")
    errors = None if lo is None or hi is None else [[delta - lo], [hi - delta]]
    look = {"fmt": "D", "color": colour, "mfc": "white", "capsize": 3, "markersize": 6}
    drawn = ax_delta.errorbar([x], [delta], yerr=errors, **look)
    if held.get("coherence_mean") is not None:
        ax_coh.errorbar([x], [held["coherence_mean"]], **look)
    drawn.set_label(f"held out (n {held.get('n')}): {best.get('status')}")
    return drawn
