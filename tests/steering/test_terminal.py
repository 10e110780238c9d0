"""The verdict line `steerops steer` prints under each cell's table."""

from __future__ import annotations

from types import SimpleNamespace

from steerops.stats import FEW_HELDOUT
from steerops.steering.terminal import cell_table, verdict_line


def _metrics(status: str, n: int = 20, **more) -> dict:
    """A cell's metrics.json: `layer`/`coefficient` repeat the tried config when ok."""
    tried = {"layer": 12, "coefficient": 0.2}
    for key in ("layer", "coefficient"):
        tried[key] = more.pop(key, tried[key])
    return {
        "status": status,
        "tried_layer": tried["layer"],
        "tried_coefficient": tried["coefficient"],
        **(tried if status == "ok" else {"layer": None, "coefficient": None}),
        "selection_n": n,
        "selection_trait_delta": 60.0,
        "selection_delta_lo": 30.0,
        "selection_delta_hi": 85.0,
        "heldout_trait_delta": 50.0,
        "heldout_delta_lo": 20.0,
        "heldout_delta_hi": 75.0,
        "heldout_coherence": 83.2,
        "heldout_n": n,
        "min_coherence": 68.0,
        **more,
    }


def test_only_an_ok_verdict_names_its_config_as_the_answer():
    ok = verdict_line(_metrics("ok"))
    assert ok.startswith("ok: layer 12 coefficient 0.2, chosen on 20 questions; held-out")
    assert "[+20.0, +75.0], coherence 83.2, n 20" in ok and "optimal" not in ok
    for status, said in (("no effect", "no effect held out"), ("incoherent held out",) * 2):
        line = verdict_line(_metrics(status))
        assert line.startswith(
            f"{said}: no optimal coefficient (chosen: layer 12 coefficient 0.2), chosen on 20"
        )


def test_coefficients_that_print_alike_are_told_apart():
    line = verdict_line(_metrics("ok", coefficient=1.5000001))
    assert line.startswith("ok: layer 12 coefficient 1.5000001, chosen")


def test_too_few_held_out_questions_are_called_out():
    assert "too few" not in verdict_line(_metrics("ok", n=FEW_HELDOUT))
    few = verdict_line(_metrics("ok", n=2, heldout_delta_lo=50.0, heldout_delta_hi=50.0))
    assert "n 2 (only 2 held-out questions: too few for the interval" in few


def test_no_coherent_config_gives_the_best_coherence_reached():
    line = verdict_line(
        _metrics(
            "needs finer coefficients", layer=None, coefficient=None, best_coherence_reached=41.25
        )
    )
    assert line == (
        "needs finer coefficients: no steered config reached coherence >= 68 on the "
        "selection half (best 41.2)"
    )


def test_no_coherent_config_says_when_no_grid_can_help():
    """The unsteered model under the bar too, or a judge that read nothing: the line says
    what to check, not that coefficients should be finer."""
    none = {"layer": None, "coefficient": None}
    line = verdict_line(
        _metrics(
            "baseline incoherent",
            **none,
            best_coherence_reached=12.0,
            selection_baseline_coherence=30.5,
        )
    )
    assert line.startswith("baseline incoherent: the unsteered model scores coherence 30.5")
    assert "lower steering.min_coherence" in line and "finer" not in line
    line = verdict_line(_metrics("trait unscored", **none, best_coherence_reached=None))
    assert line == (
        "trait unscored: the judge gave no steered config a coherence score: a failure, not "
        "a finding (check the judge)"
    )


def _result(layer: int, coefficient: float, n_unscored: int = 0) -> SimpleNamespace:
    vector = SimpleNamespace(layer=layer)
    config = SimpleNamespace(vectors=[vector], coefficient=coefficient)
    return SimpleNamespace(
        config=config, trait_mean=50.0, coherence_mean=80.0, n=20, n_unscored=n_unscored
    )


def test_answers_the_judge_left_unscored_show_in_the_grid_and_the_verdict():
    """A content filter declining the steered answers leaves means of the rest: the grid
    gives each config's scored count instead of one n, and the verdict counts them."""
    results = [_result(12, 0.2), _result(12, 0.25, n_unscored=15)]
    baseline = SimpleNamespace(trait_mean=5.0, coherence_mean=99.0)
    metrics = _metrics("no effect", n_unscored=15, n_answers=40)
    table = cell_table("cell", baseline, results, metrics, "f").splitlines()
    assert "(nS/N: S of N answers scored)" in table[0] and "n 20 per config" not in table[0]
    row = ["L12", "50.0", "/", "80.0", "n20/20", "~", "50.0", "/", "80.0", "n5/20"]
    assert table[2].split() == row
    tail = (
        "of 40 answers of its steered configs lack a trait or coherence score from the judge "
        "(each mean leaves out the answers it has no score for: an effect on them would not "
        "show)"
    )
    assert table[3].endswith(f"; 15 {tail}")
    # where it matters most: a verdict of no trait score at all says how many
    unscored = _metrics("trait unscored", layer=None, coefficient=None, n_unscored=40)
    line = verdict_line({**unscored, "n_answers": 40, "best_coherence_reached": 90.0})
    assert line.endswith(f"; 40 {tail}")
    whole = cell_table("cell", baseline, [_result(12, 0.2)], _metrics("ok"), "f")
    assert "(n 20 per config)" in whole and "unscored" not in whole


def test_an_optimum_at_the_grid_s_largest_coefficient_is_called_out():
    results = [_result(layer, c) for layer in (12, 16) for c in (0.2, 0.25)]
    baseline = SimpleNamespace(trait_mean=5.0, coherence_mean=99.0)
    edge = "the grid's largest coefficient at this layer"
    for at_edge in (True, False):
        metrics = _metrics("ok", coefficient=0.25, at_largest_coefficient=at_edge)
        assert (edge in cell_table("cell", baseline, results, metrics, "f")) == at_edge
    # at the judge's ceiling a larger coefficient cannot steer more: a smaller one is advised
    ceiling = _metrics("ok", coefficient=0.25, selection_trait_mean=100.0)
    table = cell_table("cell", baseline, results, ceiling, "f")
    assert edge not in table and "a smaller one may keep the effect" in table
    assert "smaller" not in cell_table("cell", baseline, results, _metrics("ok"), "f")


def test_an_interval_of_no_width_is_not_read_as_precision():
    line = verdict_line(_metrics("no effect", heldout_delta_lo=0.0, heldout_delta_hi=0.0))
    # said right after the interval it is about (a credited delta may follow, with width)
    assert (
        "[+0.0, +0.0] (every question gave the same delta: an interval of no width, "
        "not precision), coherence" in line
    )
    assert "no width" not in verdict_line(_metrics("ok"))


def test_no_effect_on_the_selection_half_shows_the_interval_that_decided_it():
    """No coherent config with an interval above zero on the selection half: the strongest
    is "no effect" even when its held-out interval is above zero; the line says which half
    decided and shows that half's interval."""
    line = verdict_line(
        _metrics(
            "no effect",
            selection_trait_delta=10.0,
            selection_delta_lo=-5.0,
            selection_delta_hi=25.0,
        )
    )
    assert "no effect on the selection half" in line
    assert "selection delta +10.0 [-5.0, +25.0]" in line
    held = verdict_line(
        _metrics("no effect", selection_delta_lo=5.0, heldout_delta_lo=-3.0, heldout_delta_hi=9.0)
    )
    assert "no effect held out" in held and "selection delta" not in held


def test_only_an_ok_config_is_starred_as_the_answer():
    """`*` marks the answer; a config a no-effect verdict was drawn on gets `~`, and the
    line calls it the selection half's choice, not the answer (nor the strongest push:
    with tied deltas it is the more coherent)."""
    results = [_result(12, c) for c in (0.2, 0.25)]
    baseline = SimpleNamespace(trait_mean=5.0, coherence_mean=99.0)
    ok = cell_table("cell", baseline, results, _metrics("ok"), "f").splitlines()
    assert ok[2].split() == ["L12", "50.0", "/", "80.0", "*", "50.0", "/", "80.0"]
    assert ok[3].startswith("  * ok: layer 12")
    flat = _metrics("no effect", selection_delta_lo=0.0)
    table = cell_table("cell", baseline, results, flat, "f").splitlines()
    assert "*" not in "\n".join(table) and table[2].split()[4] == "~"
    assert table[3].startswith(
        "  ~ no effect on the selection half: no optimal coefficient (its choice on the "
        "selection half: layer 12 coefficient 0.2)"
    )


def test_an_opposite_effect_says_which_halves_moved_the_other_way():
    """Every coherent config moved the trait the other way (a sign to check), or the chosen
    one's selection-half effect reversed held out (the halves disagree)."""
    against = _metrics(
        "opposite effect",
        selection_trait_delta=-40.0,
        selection_delta_lo=-65.0,
        selection_delta_hi=-15.0,
        heldout_trait_delta=-60.0,
        heldout_delta_lo=-85.0,
        heldout_delta_hi=-35.0,
    )
    line = verdict_line(against)
    assert line.startswith("opposite effect (the trait moved against the steering direction")
    assert "`steering.direction`" in line and "no optimal coefficient" in line
    reversed_ = verdict_line(against | {"selection_delta_lo": 10.0})
    assert "the selection half's effect reversed held out" in reversed_
    assert "steering.direction" not in reversed_
