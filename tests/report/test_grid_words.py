"""The grid's cliff note beside the search: its trials narrow where coherence is lost on the
search half, and its own choice between the grid's two coefficients says whether the held-out
half agrees."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd

from steerops import stats
from steerops.report.grid_words import grid_words

# layer 12: 0.2 coherent on the selection half, 0.25 not
GRID = {
    "layers": ["12"],
    "coefficients": ["0.2", "0.25"],
    "coherent": {("12", 0.2): True, ("12", 0.25): False},
}
CHOICE = SimpleNamespace(layer=12, coefficient=0.2)
TRIALS = pd.DataFrame(
    {
        "layer": [12, 12, 12],
        "coefficient": [0.2, 0.2333, 0.2345],
        "trait_delta": [50.0, 70.0, 70.0],
        "coherence_mean": [90.0, 70.5, 68.4],
        "state": ["complete"] * 3,
    }
)


def _cliff(search) -> str:
    return grid_words(CHOICE, GRID, TRIALS, search)[1]


def test_the_search_s_choice_between_the_two_gives_its_held_out_verdict():
    search = {"layer": 12, "coefficient": 0.23333333, "status": stats.INCOHERENT}
    search |= {"search_coherence": 70.519, "heldout_coherence": 65.17}
    search |= {"heldout_coherence_lo": 47.9, "heldout_coherence_hi": 81.52}
    assert _cliff(search).endswith(
        "coherence is lost between the two (the search's trials between them narrow where on "
        "the search half, but its choice between them, 0.2333 (coherence 70.51 there) is "
        "incoherent held out (65.17 [47.90, 81.52]): a mean coherence this near the bar does "
        "not locate the edge (a margin over it, `search.coherence_margin`, keeps the search's "
        "choice clear of it))"
    )
    ok = _cliff(search | {"status": stats.OK})
    assert ok.endswith(
        "narrow where, on the search half; its choice between them, 0.2333, is ok held out)"
    )
    other = _cliff(search | {"status": stats.NO_EFFECT})
    assert other.endswith("but its choice between them, 0.2333, is no effect)")


def test_a_search_choice_outside_the_two_or_at_another_layer_adds_nothing():
    plain = "(the search's trials between them narrow where)"
    assert _cliff(None).endswith(plain)
    for search in (
        {"layer": 12, "coefficient": 0.2, "status": stats.INCOHERENT},  # at the grid's step
        {"layer": 12, "coefficient": 0.3, "status": stats.INCOHERENT},  # past the next
        {"layer": 16, "coefficient": 0.23, "status": stats.INCOHERENT},  # another layer
        {"layer": 12, "coefficient": -0.23, "status": stats.INCOHERENT},  # the other way
        {"layer": None, "coefficient": None, "status": "trait unscored"},  # nothing chosen
    ):
        assert _cliff(search).endswith(plain), search
    # without trials between the two, the search is not pointed at at all
    far = TRIALS[TRIALS["coefficient"] == 0.2]
    cliff = grid_words(CHOICE, GRID, far, {"layer": 12, "coefficient": 0.23, "status": "ok"})[1]
    assert cliff.endswith("(a finer grid or `steerops search` finds where)")


def test_configs_of_earlier_sweeps_are_disclosed_beside_the_choice(tmp_path):
    """A grid revised after an earlier sweep: the cell's log still holds that sweep's
    configs, whose held-out numbers were computed, so the choice is not a first look."""
    import json

    from report_data import synthetic_grid, write_params
    from steering_data import cell_log
    from steerops.config import load_params
    from steerops.report import tables
    from steerops.report.answer import answer_lines
    from steerops.report.grid_words import grids
    from steerops.report.load import load_results, load_search_summaries
    from steerops.steering.sweep import write_sweep

    spec = {"mean_diff": ([10, 40, 70, 90], [95, 90, 80, 50])}
    synthetic_grid(tmp_path, spec)
    params = load_params(write_params(tmp_path))

    def said() -> str:
        frame = load_results(params)
        gap = tables.gap_analysis(frame, 68)
        lines = answer_lines(
            gap, load_search_summaries(params), pd.DataFrame(), 68, grids(frame, 68)
        )
        return "\n".join(lines)

    assert "earlier sweeps" not in said()  # one sweep (no record: every config is the cell's)
    log = cell_log(tmp_path / "outputs", "mean_diff", "prompt[-1]")
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    configs = [e for e in entries if e["type"] == "config"]
    kept = [e["config"] for e in configs if e["config"]["coefficient"] in (0.0, 0.5, 1.0, 1.5)]
    write_sweep(log.parent, configs[0]["settings_hash"], kept)  # the latest sweep: four
    # left out: coefficient 2.0 at layer 2, which an earlier sweep steered
    assert (
        "the cell's results log also holds 1 config of earlier sweeps under the same settings"
        in said()
    )
