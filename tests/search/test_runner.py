"""The startup design's size; the line of a study with no completed trial."""

from __future__ import annotations


def test_startup_design_size_leaves_the_sampler_half_the_trials():
    from steerops.search.runner import startup_trials

    assert startup_trials(None, trials=16, n_layers=1) == 3
    assert startup_trials(None, trials=16, n_layers=4) == 4
    assert startup_trials(None, trials=16, n_layers=32) == 8
    assert startup_trials(None, trials=2, n_layers=1) == 1
    assert startup_trials(5, trials=4, n_layers=1) == 5  # as given


def test_a_study_of_refused_trials_only_says_so_with_the_repeats_it_failed_unasked(tmp_path):
    """No completed trial because the judge's endpoint refused answers: the line counts the
    refused trials and the repeats of their params failed unasked (a queued copy here)."""
    from types import SimpleNamespace

    import pytest
    from synthetic import SOURCE, SyntheticEvaluator, open_study

    from steerops.errors import SteeropsError
    from steerops.search.loop import run_search
    from steerops.search.runner import finish

    study = open_study(tmp_path, startup_trials=2)
    for _ in range(2):  # a copy, as two workers enqueueing one point at once leave
        study.study.enqueue_trial({"coefficient": 2.5}, user_attrs={"source": "enqueued"})
    refusing = SyntheticEvaluator(["q"], refuse_above=0.0)
    run_search(study, refusing, SOURCE, target=2, batch=1, direction="positive", progress=False)
    assert [len(call) for call in refusing.calls] == [1]  # the copy was not generated
    line = (
        r"study 's' has no completed trial \(the judge's endpoint refused answers of 1 of "
        r"them \(a content filter\?\), and 1 more repeated their params unasked: the "
        r"search's next run asks them again\)"
    )
    with pytest.raises(SteeropsError, match=line):
        finish(None, SimpleNamespace(study="s"), study, None, None, None, None)
