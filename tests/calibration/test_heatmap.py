"""heatmap.png: where a dim passed the massive rule is outlined, and the rule is on the bar."""

from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from steerops.calibration import heatmap


def _record() -> dict:
    """Dim 507 massive at layers 1-2 of 3 only (as SmolLM2's, at 11-27 of 30)."""
    layers, dims = [0, 1, 2], [507, 17]
    return {
        "variant": "instruct",
        "settings": {"massive_ratio": 1000.0, "massive_threshold": 100.0},
        "aggregate": {
            "massive_heatmap": {
                "layers": layers,
                "dims": dims,
                "massive": [507],
                "ratio": [[500.0, 3.0], [5000.0, 4.0], [2500.0, 2.0]],
            },
            "heatmap": {"layers": layers, "dims": dims, "relative": [[9.0, 1.0]] * 3},
            "massive_by_layer": {"0": [], "1": [507], "2": [507]},
            "global_dims": [507],
        },
    }


def test_the_cells_that_passed_the_rule_are_outlined(tmp_path, monkeypatch):
    figures = []
    real = Figure.savefig

    def keep(self, *args, **kwargs):
        figures.append(self)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    heatmap.plot_heatmap(_record(), tmp_path / "heatmap.png")
    (fig,) = figures
    left = fig.axes[0]
    boxes = [p.get_xy() for p in left.patches if isinstance(p, Rectangle) and not p.fill]
    # (column - 0.5, row - 0.5): dim 507 (column 0) at layers 1 and 2, not at layer 0
    assert sorted(boxes) == [(-0.5, 0.5), (-0.5, 1.5)]
    bar = next(ax for ax in fig.axes if ax.get_ylabel().startswith("max / median"))
    assert bar.get_ylabel() == "max / median (massive: > 1000 and |x| > 100)"
    assert [line.get_ydata()[0] for line in bar.lines] == [1000.0]
    assert (tmp_path / "heatmap.png").is_file()
