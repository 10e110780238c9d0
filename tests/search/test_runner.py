"""The startup design's size."""

from __future__ import annotations


def test_startup_design_size_leaves_the_sampler_half_the_trials():
    from steerops.search.runner import startup_trials

    assert startup_trials(None, trials=16, n_layers=1) == 3
    assert startup_trials(None, trials=16, n_layers=4) == 4
    assert startup_trials(None, trials=16, n_layers=32) == 8
    assert startup_trials(None, trials=2, n_layers=1) == 1
    assert startup_trials(5, trials=4, n_layers=1) == 5  # as given
