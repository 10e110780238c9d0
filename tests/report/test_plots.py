"""The report's figures: what a reader can tell apart in them."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.collections import PathCollection

from steerops.report import plots

KEY = {"model": "m", "trait": "t/x", "position": "prompt[-1]", "component": "residual"}


def _points(method: str, deltas: list[float], status: str = "ok") -> list[dict]:
    return [
        {
            **KEY,
            "method": method,
            "layer": 3,
            "coefficient": c,
            "delta": d,
            "delta_lo": d - 10,
            "delta_hi": d + 10,
            "coherence": 80.0,
            "chosen": c == 1.0,
            "cell_status": status,
        }
        for c, d in zip((0.5, 1.0), deltas, strict=True)
    ]


def test_methods_with_the_same_curve_share_one_labelled_line(tmp_path, monkeypatch):
    """Two methods whose points are equal draw one line named by both: drawn apart, the
    second hid the first (the main job's mean_diff_cleaned under mean_diff_preclean)."""
    figures = []
    monkeypatch.setattr(plots, "save", lambda fig, path: figures.append(fig))
    points = pd.DataFrame(
        _points("mean_diff", [10, 30])
        + _points("mean_diff_cleaned", [10, 40])
        + _points("mean_diff_preclean", [10, 40])
    )
    plots.coefficient_curves(points, 68.0, tmp_path / "curves.png")
    (fig,) = figures
    labels = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert labels == ["mean_diff", "mean_diff_cleaned = mean_diff_preclean"]
    top = fig.axes[0]
    assert len(top.containers) == 2  # one error-bar line each


def _marked(ax) -> dict[str, list[tuple[float, float]]]:
    """The chosen points drawn on a panel (the large markers), by marker: ring or cross."""
    marks: dict[str, list[tuple[float, float]]] = {"ring": [], "cross": []}
    for collection in ax.collections:
        offsets = [tuple(map(float, p)) for p in collection.get_offsets()]
        if not isinstance(collection, PathCollection) or collection.get_sizes()[0] != 160:
            continue
        is_cross = len(collection.get_paths()[0].vertices) == 4  # a circle has 26
        marks["cross" if is_cross else "ring"] += offsets
    return marks


def test_only_an_ok_choice_is_ringed(tmp_path, monkeypatch):
    """A cell whose choice has no effect is crossed out, not ringed as the one to use."""
    figures = []
    monkeypatch.setattr(plots, "save", lambda fig, path: figures.append(fig))
    points = pd.DataFrame(
        _points("mean_diff", [10, 50]) + _points("random_baseline", [0, 5], "no effect")
    )
    plots.coefficient_curves(points, 68.0, tmp_path / "curves.png")
    (fig,) = figures
    assert _marked(fig.axes[0]) == {"ring": [(1.0, 50.0)], "cross": [(1.0, 5.0)]}


def test_points_under_the_bar_held_out_are_hollow(tmp_path, monkeypatch):
    """The main job's 0.25 points (deltas 70 and 80, coherence 63.5 and 60.8 held out)
    looked like the best: a point under the bar is drawn hollow, on both panels."""
    figures = []
    monkeypatch.setattr(plots, "save", lambda fig, path: figures.append(fig))
    rows = _points("mean_diff", [50, 70]) + _points("random_baseline", [0, 5])
    for row in rows:
        row["heldout_coherent"] = row["coefficient"] == 0.5
    rows[-1]["coherence"] = float("nan")  # not scored held out: not "under the bar"
    plots.coefficient_curves(pd.DataFrame(rows), 68.0, tmp_path / "curves.png")
    (fig,) = figures
    for ax, y in ((fig.axes[0], 70.0), (fig.axes[1], 80.0)):
        hollow = [
            tuple(map(float, p))
            for c in ax.collections
            if isinstance(c, PathCollection) and c.get_sizes()[0] == 45
            for p in c.get_offsets()
        ]
        assert hollow == [(1.0, y)]


def _curve_point(dims: str, delta: float, **more) -> dict:
    """One cleaning-curve row of mean_diff: `dims` cleaned, an ok delta with an interval of
    +-5 around it."""
    return {
        **KEY,
        "method": "mean_diff",
        "dims_cleaned": dims,
        "status": "ok",
        "delta": delta,
        "delta_lo": delta - 5,
        "delta_hi": delta + 5,
        **more,
    }


def test_cleaning_curve_shows_only_the_steps_run(tmp_path, monkeypatch):
    """With one massive dim the variants are 0 and all: the steps between have no point and
    are not drawn as categories the line runs through."""
    figures = []
    monkeypatch.setattr(plots, "save", lambda fig, path: figures.append(fig))
    curve = pd.DataFrame(
        [_curve_point("0", 50.0, dim_set=np.nan), _curve_point("all", 40.0, dim_set="top_mean")]
    )
    plots.cleaning_curve(curve, tmp_path / "cleaning.png")
    (fig,) = figures
    ax, below = fig.axes[:2]  # the categories are labelled under the gain panel they share
    assert [t.get_text() for t in below.get_xticklabels()] == ["0", "all"]
    assert below.get_xlabel() == "dims cleaned (top_mean set)"  # not "massive" when it is not
    (line,) = ax.get_lines()[:1]
    assert list(line.get_xdata()) == [0, 1]


def test_a_cleaned_point_says_what_it_removed(tmp_path, monkeypatch):
    """A flat cleaning curve after removing 0.76% of the vector reads as "cleaning changes
    nothing" unless the point says how little it removed."""
    figures = []
    monkeypatch.setattr(plots, "save", lambda fig, path: figures.append(fig))
    curve = pd.DataFrame(
        [
            _curve_point(dims, 50.0, dims_removed=removed, removed_share=share)
            for dims, removed, share in (("0", 0, None), ("1", 1, 0.007571), ("all", 3, 0.25))
        ]
    )
    plots.cleaning_curve(curve, tmp_path / "cleaning.png")
    (fig,) = figures
    notes = [t.get_text() for t in fig.axes[0].texts]
    assert notes == ["1 dim, 0.76% of |v|²", "3 dims, 25.00% of |v|²"]


def test_a_cell_the_judge_scored_nothing_of_plots_as_a_gap(tmp_path):
    """Every held-out number None (a judge that read nothing): the report drew its curve
    with None + float and died with a traceback; the cell is a gap (alone, or beside a
    scored one)."""
    configs = [
        {
            **KEY,
            "method": method,
            "layer": 3,
            "coefficient": c,
            "heldout_n": n,
            "heldout_trait_delta": delta,
            "heldout_delta_lo": None if delta is None else delta - 5,
            "heldout_delta_hi": None if delta is None else delta + 5,
            "heldout_coherence_mean": None if delta is None else 80.0,
            "selection_coherence_mean": None if delta is None else 80.0,
        }
        for method, n, delta in (("mean_diff", 0, None), ("probe", 10, 20.0))
        for c in (0.5, 1.0)
    ]
    gap = pd.DataFrame(
        [
            {**KEY, "method": "mean_diff", "alias_of": "", "layer": None, "coefficient": None}
            | {"status": "trait unscored"},
            {**KEY, "method": "probe", "alias_of": "", "layer": 3, "coefficient": 1.0}
            | {"status": "ok"},
        ]
    )
    for methods in (["mean_diff"], ["mean_diff", "probe"]):
        frame = pd.DataFrame([c for c in configs if c["method"] in methods])
        points = plots.curve_points(frame, gap[gap["method"].isin(methods)], 68.0)
        assert points[points["method"] == "mean_diff"]["delta"].isna().all()
        path = tmp_path / f"{len(methods)}.png"
        plots.coefficient_curves(points, 68.0, path)
        assert path.stat().st_size > 0


def test_cleaning_curve_draws_the_paired_gain_and_greys_a_near_copy(tmp_path, monkeypatch):
    """The main job's cleaned mean_diff is a near copy (0.76% of |v|^2): its paired gain,
    0 [0, 0], is drawn below the deltas in grey and said to tell nothing; an informative
    gain keeps the method's colour."""
    figures = []
    monkeypatch.setattr(plots, "save", lambda fig, path: figures.append(fig))
    near = {"gain": 0.0, "gain_lo": 0.0, "gain_hi": 0.0, "gain_note": "near copy: the dims..."}
    told = {"gain": -20.0, "gain_lo": -35.0, "gain_hi": -5.0, "gain_note": ""}
    for cleaned, expect_grey in ((near, True), (told, False)):
        curve = pd.DataFrame([_curve_point("0", 50.0), _curve_point("all", 50.0, **cleaned)])
        plots.cleaning_curve(curve, tmp_path / "cleaning.png")
        fig = figures.pop()
        gain_ax = fig.axes[1]
        [bars] = gain_ax.containers
        assert bars.lines[0].get_xydata().tolist() == [[1.0, cleaned["gain"]]]
        (segment,) = bars.lines[2][0].get_segments()
        assert segment[:, 1].tolist() == [cleaned["gain_lo"], cleaned["gain_hi"]]
        grey = bars.lines[0].get_color() == "grey"
        assert grey == expect_grey
        said = [t.get_text() for t in gain_ax.texts]
        assert said == (["near copy: cannot tell"] if expect_grey else [])
        assert gain_ax.get_ylim()[0] <= -5 and gain_ax.get_ylim()[1] >= 5


def test_the_random_direction_is_drawn_at_the_choice_s_layer():
    """The control's line shares the choice's layer, whatever layer its own strongest
    config was at, and marks nothing: nothing was chosen for it."""
    from steerops.report.plots import curve_points

    key = {"model": "m", "trait": "t", "position": "p", "component": "residual"}
    gap = pd.DataFrame(
        [
            key
            | {"method": "mean_diff", "alias_of": "", "status": "ok", "layer": 12}
            | {"coefficient": 0.2, "selection_delta": 50.0, "selection_delta_lo": 20.0},
            key
            | {"method": "random_baseline", "alias_of": "", "status": "no effect"}
            | {"layer": 17, "coefficient": 0.2, "selection_delta": 5.0}
            | {"selection_delta_lo": 0.0},
        ]
    )
    configs = [
        key
        | {"method": m, "layer": layer, "coefficient": c, "selection_coherence_mean": 90.0}
        | {"heldout_n": 20, "heldout_trait_delta": d, "heldout_delta_lo": d - 10}
        | {"heldout_delta_hi": d + 10, "heldout_coherence_mean": 90.0}
        for m, d in (("mean_diff", 50.0), ("random_baseline", 0.0))
        for layer in (12, 17)
        for c in (0.2, 0.25)
    ]
    points = curve_points(pd.DataFrame(configs), gap, 68.0)
    control = points[points["method"] == "random_baseline"]
    assert set(control["layer"]) == {12} and not control["chosen"].any()
    ours = points[points["method"] == "mean_diff"]
    assert set(ours["layer"]) == {12} and ours["chosen"].sum() == 1
