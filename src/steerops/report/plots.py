"""Report plots, one facet per (model, trait, position, component), written deterministically (no
timestamps in the PNG metadata).

Coefficient curves: per method, every coefficient at the layer chosen on the selection half,
with held-out numbers (delta with its 95% interval, coherence); each line is labelled with
its layer at its end, so every point is one grid config (`coefficient_curves.csv` lists
them); the cell's choice is ringed when its verdict is ok and crossed out otherwise.
Cleaning curve: dims cleaned as categories, one dodged series per base method with
intervals, over the steps some series has; hollow markers where the verdict is not "ok".
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from steerops import stats  # noqa: E402
from steerops.io import save_png  # noqa: E402
from steerops.report.control import CONTROL  # noqa: E402
from steerops.report.tables import CURVE_STEPS, KEY, same_cell, selection_choice  # noqa: E402
from steerops.steering.plots import mark_choice  # noqa: E402

_PNG_META = {"Software": None}
MARKERS = "osD^vP*Xh<>"
CURVE_COLUMNS = KEY + [
    "method",
    "layer",
    "coefficient",
    "series",
    "cell_status",
    "chosen",
    "n",
    "delta",
    "delta_lo",
    "delta_hi",
    "coherence",
    "heldout_coherent",
]


def save(fig, path: Path) -> None:
    save_png(fig, path, metadata=_PNG_META, bbox_inches="tight")


def _style(names: list[str]) -> dict[str, dict]:
    """A distinct colour and marker per name, the same in every facet."""
    cmap = plt.get_cmap("tab20" if len(names) > 10 else "tab10")
    return {
        name: {"color": cmap(i % cmap.N), "marker": MARKERS[i % len(MARKERS)]}
        for i, name in enumerate(names)
    }


def curve_points(frame: pd.DataFrame, gap: pd.DataFrame, min_coherence: float) -> pd.DataFrame:
    """Every config on each method's curve: the coefficients at its chosen layer (or, with
    nothing chosen, at the layer reaching the best selection-half coherence; the random
    direction at the layer of the report's choice beside it, to compare); aliases are
    drawn once, under the name they alias. `cell_status` is the cell's verdict, not the
    point's: `chosen` marks the cell's choice and `heldout_coherent` each point's own
    coherence against the threshold."""
    rows = []
    for _, cell in gap[gap["alias_of"] == ""].iterrows():
        configs = frame[(frame[KEY + ["method"]] == cell[KEY + ["method"]]).all(axis=1)]
        layer = _layer(cell["layer"])
        at = _control_layer(gap, cell)
        if at is not None and (configs["layer"] == at).any():
            layer = at  # the random direction beside the choice, at its layer
        elif pd.isna(layer):
            steered = configs[configs["coefficient"] != 0]
            by = steered.sort_values("selection_coherence_mean", ascending=False, kind="stable")
            layer = by.iloc[0]["layer"] if len(by) else configs.iloc[0]["layer"]
        for _, c in configs[configs["layer"] == layer].sort_values("coefficient").iterrows():
            rows.append(
                {
                    **{k: cell[k] for k in KEY + ["method"]},
                    "layer": layer,
                    "coefficient": c["coefficient"],
                    "series": f"{cell['method']} @ {cell['position']} L{layer}",
                    "cell_status": cell["status"],
                    "chosen": _layer(cell["layer"]) == layer
                    and cell["coefficient"] == c["coefficient"],
                    "n": c["heldout_n"],
                    "delta": c["heldout_trait_delta"],
                    "delta_lo": c["heldout_delta_lo"],
                    "delta_hi": c["heldout_delta_hi"],
                    "coherence": c["heldout_coherence_mean"],
                    "heldout_coherent": stats.coherent(c["heldout_coherence_mean"], min_coherence),
                }
            )
    points = pd.DataFrame(rows, columns=CURVE_COLUMNS)
    # a cell the judge scored nothing of holds None throughout: NaN, as a gap in a line is
    numbers = ["n", "delta", "delta_lo", "delta_hi", "coherence"]
    points[numbers] = points[numbers].astype(float)
    return points


def _control_layer(gap: pd.DataFrame, cell: pd.Series):
    """For the random-direction control's cell: the layer of its (model, trait)'s choice
    when that choice is in the same position and component (`tables.selection_choice`),
    so the two lines share their layer; None otherwise."""
    if str(cell["method"]) != CONTROL:
        return None
    choice = selection_choice(gap[same_cell(gap, cell, ["model", "trait"])])
    if choice is None or any(str(choice[k]) != str(cell[k]) for k in KEY):
        return None
    return _layer(choice["layer"])


def _layer(value):
    """A layer as the frame holds it (an int; "1+2" for multi-vector configs)."""
    try:
        return int(value) if float(value) == int(float(value)) else value
    except (TypeError, ValueError):
        return value


def coefficient_curves(points: pd.DataFrame, min_coherence: float, path: Path) -> None:
    """Held-out trait delta (with interval) and coherence vs coefficient: a column of two
    panels per (model, trait, position, component), a line per method at its chosen layer
    (the random-direction control at the choice's layer: `curve_points`)."""
    groups = sorted(points.groupby(KEY).groups) if len(points) else [("",) * len(KEY)]
    style = _style(sorted(points["method"].unique()) if len(points) else [])
    fig, axes = plt.subplots(
        2, len(groups), figsize=(5.5 * len(groups), 7), sharex=True, squeeze=False
    )
    for col, key in enumerate(groups):
        top, bottom = axes[0][col], axes[1][col]
        rows = points[(points[KEY] == list(key)).all(axis=1)] if len(points) else points
        for methods, line in _same_lines(rows):
            s = style[methods[0]]
            err = [line["delta"] - line["delta_lo"], line["delta_hi"] - line["delta"]]
            label = " = ".join(methods)
            top.errorbar(line["coefficient"], line["delta"], yerr=err, capsize=2, label=label, **s)
            bottom.plot(line["coefficient"], line["coherence"], **s)
            if "heldout_coherent" in line:  # under the bar held out: hollow, not a candidate
                # (not a point whose coherence the judge did not score)
                under = line["heldout_coherent"].eq(False) & line["coherence"].notna()
                hollow = {"s": 45, "facecolors": "white", "edgecolors": s["color"], "zorder": 4}
                hollow["marker"] = s["marker"]
                top.scatter(line["coefficient"][under], line["delta"][under], **hollow)
                bottom.scatter(line["coefficient"][under], line["coherence"][under], **hollow)
            chosen = line[line["chosen"].astype(bool)]
            ok = chosen["cell_status"] == stats.OK
            mark_choice(top, chosen["coefficient"][ok], chosen["delta"][ok], True, s["color"])
            mark_choice(top, chosen["coefficient"][~ok], chosen["delta"][~ok], False, s["color"])
            last = line.iloc[-1]
            top.annotate(
                f"L{last['layer']}",
                (last["coefficient"], last["delta"]),
                fontsize=7,
                color=s["color"],
                xytext=(4, 0),
                textcoords="offset points",
            )
        top.axhline(0, color="grey", linewidth=0.8)
        bottom.axhline(min_coherence, color="red", linestyle="--", linewidth=1)
        top.set_title(" | ".join(str(k) for k in key), fontsize=9)
        top.set_ylabel("held-out trait delta (95% interval)")
        bottom.set_ylabel("held-out coherence")
        bottom.set_xlabel("coefficient")
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
    legend = (
        "method (line end: layer;\nring: chosen, ok; ×: chosen, not ok;\n"
        "hollow: under the bar held out)"
    )
    _legend_outside(fig, axes, legend)
    fig.suptitle(f"Trait and coherence vs coefficient (red: min coherence {min_coherence:g})")
    fig.tight_layout()
    save(fig, path)


def _same_lines(rows: pd.DataFrame) -> list[tuple[list[str], pd.DataFrame]]:
    """One line per distinct curve, with every method that drew it: methods whose points
    are equal (e.g. a cleaned variant that removed nothing and its preclean twin) would
    otherwise hide one line under another."""
    drawn = ["layer", "coefficient", "delta", "delta_lo", "delta_hi", "coherence", "chosen"]
    drawn += [c for c in ("cell_status", "heldout_coherent") if c in rows]
    lines: dict[str, tuple[list[str], pd.DataFrame]] = {}
    for method, line in rows.groupby("method", sort=True):
        points = line[drawn].to_csv(index=False)
        lines.setdefault(points, ([], line))[0].append(str(method))
    return list(lines.values())


def cleaning_curve(curve: pd.DataFrame, path: Path) -> None:
    """Held-out delta of each base method's chosen config vs dims cleaned (of the set
    `dim_set` names: massive, or the largest-mean), as
    categories, one facet per (model, trait, position, component); methods with a single step
    (nothing to compare) are left out. Below, the paired gain of each cleaned step over the
    uncleaned method (what "does cleaning help" asks: overlapping intervals above can hide
    one, and hide that two near copies scored alike); a near copy's gain, which cannot tell
    whether the dims matter, is greyed and said so."""
    series = curve.groupby(KEY + ["method"]).filter(lambda rows: len(rows) > 1)
    # only the steps some series has: an empty category would read as a point on the line
    present = set(series["dims_cleaned"]) if len(series) else set()
    order = [dims for dims, _ in CURVE_STEPS if dims in present]
    groups = sorted(series.groupby(KEY).groups) if len(series) else [("",) * len(KEY)]
    style = _style(sorted(series["method"].unique()) if len(series) else [])
    fig, axes = plt.subplots(
        2, len(groups), figsize=(5.5 * len(groups), 6.5), sharex="col", squeeze=False
    )
    for col, key in enumerate(groups):
        ax, gain_ax = axes[0][col], axes[1][col]
        rows = series[(series[KEY] == list(key)).all(axis=1)] if len(series) else series
        methods = sorted(rows["method"].unique()) if len(rows) else []
        for k, method in enumerate(methods):
            line = rows[rows["method"] == method]
            line = line.assign(x=[order.index(d) for d in line["dims_cleaned"]]).sort_values("x")
            x = line["x"] + (k - (len(methods) - 1) / 2) * 0.12  # dodge the series
            s = style[method]
            err = [line["delta"] - line["delta_lo"], line["delta_hi"] - line["delta"]]
            ax.errorbar(x, line["delta"], yerr=err, capsize=2, label=method, **s)
            hollow = line["status"] != "ok"
            ax.scatter(
                x[hollow],
                line["delta"][hollow],
                s=60,
                facecolors="white",
                edgecolors=s["color"],
                marker=s["marker"],
                zorder=3,
            )
            for at, (_, row) in zip(x, line.iterrows(), strict=True):
                note = _removed_note(row)
                if note:
                    ax.annotate(
                        note,
                        (at, row["delta"]),
                        xytext=(5, -11),
                        textcoords="offset points",
                        fontsize=7,
                        color=s["color"],
                    )
            _paired_gain(gain_ax, line, x, s)
        ax.set_xticks(range(len(order)), order)
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.set_ylabel("held-out trait delta (95% interval)")
        ax.set_title(" | ".join(str(k) for k in key), fontsize=9)
        ax.grid(alpha=0.3, axis="y")
        gain_ax.axhline(0, color="grey", linewidth=0.8)
        low, high = gain_ax.get_ylim()  # a gain of 0 [0, 0] on a scale of points, not 0.04
        gain_ax.set_ylim(min(low, -5.0), max(high, 5.0))
        # the set cleaned (`cleaning.dim_set`): "massive" only where it is that set
        sets = sorted({str(d) for d in rows.get("dim_set", pd.Series(dtype=str)).dropna() if d})
        gain_ax.set_xlabel(f"dims cleaned ({' / '.join(sets)} set)" if sets else "dims cleaned")
        gain_ax.set_ylabel("gain over uncleaned, paired\n(95% over a method's variants)")
        gain_ax.grid(alpha=0.3, axis="y")
    _legend_outside(fig, axes, "method (hollow: not ok;\nbelow, near copy)")
    fig.suptitle("Cleaning curve")
    fig.tight_layout()
    save(fig, path)


def _paired_gain(ax, line: pd.DataFrame, x: pd.Series, style: dict) -> None:
    """The cleaned steps' paired gains (`gain`, `gain_lo`, `gain_hi`) with their intervals;
    a near copy's in grey, hollow, labelled: its gain cannot tell whether the dims matter."""
    if not {"gain", "gain_lo", "gain_hi"} <= set(line.columns):
        return
    for at, (_, row) in zip(x, line.iterrows(), strict=True):
        gain = pd.to_numeric(row["gain"], errors="coerce")
        if pd.isna(gain):
            continue
        near = str(row.get("gain_note") or "").startswith("near copy")
        colour = "grey" if near else style["color"]
        err = [[gain - row["gain_lo"]], [row["gain_hi"] - gain]]
        look = {"marker": style["marker"], "color": colour, "capsize": 3}
        look |= {"mfc": "white"} if near else {}
        ax.errorbar([at], [gain], yerr=err, **look)
        if near:
            ax.annotate(
                "near copy: cannot tell",
                (at, gain),
                xytext=(6, 4),
                textcoords="offset points",
                fontsize=7,
                color="grey",
            )


def _removed_note(row: pd.Series) -> str:
    """What a cleaned point removed ("1 dim, 0.76% of |v|^2"): a flat curve after removing
    a sliver of the vector says nothing about the dims."""
    dims, share = row.get("dims_removed"), row.get("removed_share")
    if str(row.get("dims_cleaned")) == "0" or pd.isna(dims) or pd.isna(share):
        return ""
    return f"{int(dims)} dim{'s' if int(dims) != 1 else ''}, {float(share):.2%} of |v|²"


def _legend_outside(fig, axes, title: str) -> None:
    """One legend for every facet, right of the plots (never over the data)."""
    handles = {h.get_label(): h for ax in axes[0] for h in ax.get_legend_handles_labels()[0]}
    if handles:
        fig.legend(
            [handles[k] for k in sorted(handles)],
            sorted(handles),
            loc="center left",
            bbox_to_anchor=(1.0, 0.5),
            fontsize=8,
            title=title,
        )
