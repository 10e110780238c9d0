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
        "layers": {
            "0": {"massive": {}},
            "1": {"massive": {"507": {"token": "<|im_start|>", "position": 0}}},
            "2": {"massive": {"507": {"token": "<|im_start|>", "position": 0}}},
        },
    }


def _drawn(tmp_path, monkeypatch, record):
    figures = []
    real = Figure.savefig

    def keep(self, *args, **kwargs):
        figures.append(self)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    heatmap.plot_heatmap(record, tmp_path / "heatmap.png")
    (fig,) = figures
    return fig


def test_the_cells_that_passed_the_rule_are_outlined(tmp_path, monkeypatch):
    fig = _drawn(tmp_path, monkeypatch, _record())
    left = fig.axes[0]
    boxes = [p.get_xy() for p in left.patches if isinstance(p, Rectangle) and not p.fill]
    # (column - 0.5, row - 0.5): dim 507 (column 0) at layers 1 and 2, not at layer 0
    assert sorted(boxes) == [(-0.5, 0.5), (-0.5, 1.5)]
    bar = next(ax for ax in fig.axes if ax.get_ylabel().startswith("max / median"))
    assert bar.get_ylabel() == "max / median (massive: > 1000 and |x| > 100)"
    assert [line.get_ydata()[0] for line in bar.lines] == [1000.0]
    assert (tmp_path / "heatmap.png").is_file()


def test_a_massive_dim_is_labelled_with_the_token_its_peak_sits_at(tmp_path, monkeypatch):
    """The massive dim's label names its peak's token and position (the attention sink's
    <|im_start|> at 0 on SmolLM2), "several tokens" when its layers peak at different ones;
    a dim that is not massive is its number alone."""
    labels = [
        t.get_text() for t in _drawn(tmp_path, monkeypatch, _record()).axes[0].get_xticklabels()
    ]
    assert labels == ["507! <|im_start|>@0", "17"]
    record = _record()
    record["layers"]["2"]["massive"]["507"] = {"token": "\n", "position": 5}
    (tmp_path / "again").mkdir()
    fig = _drawn(tmp_path / "again", monkeypatch, record)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()][0] == "507! several tokens"


def test_a_short_models_colour_bar_labels_fit_in_the_image(tmp_path, monkeypatch):
    """Three layers make a figure shorter than the left bar's label (the rule spelled out):
    the saved image still holds each label whole."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.image import imread

    fig = _drawn(tmp_path, monkeypatch, _record())
    height, width = imread(tmp_path / "heatmap.png").shape[:2]
    FigureCanvasAgg(fig)
    fig.set_dpi(120)  # the dpi the image was saved at
    renderer = fig.canvas.get_renderer()
    bars = [
        ax
        for ax in fig.axes
        if ax.get_ylabel() in ("relative |mean|",) or ax.get_ylabel().startswith("max / median")
    ]
    assert len(bars) == 2
    for bar in bars:
        label = bar.yaxis.label.get_window_extent(renderer)
        assert label.height < height and label.width < width
    assert max(bar.yaxis.label.get_window_extent(renderer).height for bar in bars) > (
        fig.get_figheight() * 120
    )  # longer than the figure is tall: a plain save would cut it
