"""The Optuna study: duplicate and surplus design points, known results in the design, refused
settings."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic import MIN_COH, SOURCE, SyntheticEvaluator, open_study

from steerops.errors import SteeropsError
from steerops.search.loop import run_search
from steerops.search.storage import storage_label
from steerops.search.study import SearchStudy, Space
from steerops.search.trials import to_record


def test_a_design_enqueued_twice_is_evaluated_once(tmp_path):
    """Two workers on a database without the sqlite lock may both enqueue the (identical,
    seeded) startup design; each point is still evaluated once, and the copies do not count."""
    study = open_study(tmp_path, startup_trials=3)
    study.enqueue_startup()
    first = [t.system_attrs["fixed_params"] for t in study.study.get_trials(deepcopy=False)]
    study.study.set_user_attr("startup_enqueued", False)  # the second worker's view
    study.enqueue_startup()
    for params in first:  # what skip_if_exists misses when two workers insert at once
        study.study.enqueue_trial(params, user_attrs={"source": "enqueued"})
    evaluator = SyntheticEvaluator(["q"])
    run_search(study, evaluator, SOURCE, target=5, batch=3, direction="positive", progress=False)
    evaluated = [c for call in evaluator.calls for _, c, _ in call]
    assert len(evaluated) == 5 == len(set(evaluated)) == study.n_done()
    assert {p["coefficient"] for p in first} <= set(evaluated)
    assert {r.source for r in study.records()} >= {"duplicate", "enqueued"}


def test_a_trial_the_judge_refused_in_part_fails_and_is_asked_again_next_run(tmp_path):
    """Scores without the answers the endpoint refused are no result: the trial fails (and
    counts, so a filter that refuses everything cannot keep a run asking), and the next run
    asks its params again first, as steer evaluates such a config again."""
    from optuna.trial import TrialState

    study = open_study(tmp_path, startup_trials=4)
    filtered = SyntheticEvaluator(["q1", "q2"], refuse_above=0.5)
    run_search(study, filtered, SOURCE, target=6, batch=2, direction="positive", progress=False)
    trials = study.study.get_trials(deepcopy=False)
    refused = {t.number: t.params["coefficient"] for t in trials if t.user_attrs.get("refused")}
    assert refused and all(c > 0.5 for c in refused.values())
    assert (
        all(t.state == TrialState.FAIL for t in trials if t.number in refused)
        and study.n_done() == 6
        and study.n_refused() == len(refused)
    )
    # no partial means shown for them either
    assert all(
        (r.trait_delta, r.trait_mean, r.coherence_mean) == (None, None, None)
        for r in study.records()
        if r.number in refused
    )
    # the filter lifted: the next run asks exactly those params first, then stops at 6
    lifted = SyntheticEvaluator(["q1", "q2"])
    run_search(study, lifted, SOURCE, target=6, batch=2, direction="positive", progress=False)
    asked = [c for call in lifted.calls for _, c, _ in call]
    assert sorted(asked) == sorted(refused.values())
    retries = [t for t in study.study.get_trials(deepcopy=False) if "retry_of" in t.user_attrs]
    assert {t.user_attrs["retry_of"] for t in retries} == set(refused)
    assert all(t.state == TrialState.COMPLETE for t in retries) and study.n_done() == 6
    assert study.enqueue_refused() == 0  # once: nothing left to retry


@pytest.mark.parametrize("seed,refuse_above,resolution", [(0, 2.0, 0.0), (1, 0.5, 0.015)])
def test_params_the_judge_refused_are_generated_once_a_run_and_retried_once_next_run(
    tmp_path, capsys, seed, refuse_above, resolution
):
    """The GP sampler never sees a failed trial: past a filter refusing coefficients above 2,
    it proposed the range's edge 3.0 six times, each a full generation refused again (past
    0.5, 2.8363 then 2.8372 and 2.8362, copies within the resolution). A repeat of a refused
    trial's params now fails unasked, naming it, and counts as it does until that trial is
    retried: the next run asks each refused config once (its retry, not one per repeat),
    then new configs in the repeats' place."""
    from optuna.trial import TrialState

    study = open_study(tmp_path, startup_trials=3, seed=seed, resolution=resolution)
    filtered = SyntheticEvaluator(["q1", "q2"], refuse_above=refuse_above)
    stats = run_search(
        study, filtered, SOURCE, target=12, batch=1, direction="positive", progress=False
    )
    asked = [c for call in filtered.calls for _, c, _ in call]
    assert len(asked) == len(set(asked)) < 12  # no config generated twice
    trials = study.study.get_trials(deepcopy=False)
    refused = {t.number: t.params for t in trials if t.user_attrs.get("refused")}
    repeats = {t.number: t for t in trials if "repeats_refused" in t.user_attrs}
    assert repeats and all(t.state == TrialState.FAIL for t in repeats.values())
    # trials.csv names them
    shown = {r.number: r.source for t in trials if (r := to_record(t, 2)) is not None}
    assert {n for n, source in shown.items() if source == "repeat"} == set(repeats)
    for t in repeats.values():
        twin = refused[t.user_attrs["repeats_refused"]]
        assert t.params["coefficient"] == pytest.approx(twin["coefficient"], abs=resolution)
    assert study.n_done() == 12 and study.n_repeated_refused() == len(repeats)
    assert len(asked) + len(repeats) == 12  # they count toward the target ...
    assert "surplus" not in {t.user_attrs["source"] for t in trials}  # ... and fill it exactly
    # one failure line per refused trial, none per repeat; and a repeat that fills the last
    # slot ends the run (no wait for trials running elsewhere)
    err = capsys.readouterr().err
    assert err.count("failed: the judge's endpoint refused") == len(refused)
    assert "waiting for" not in err
    # one line says why the run's target holds configs never asked
    assert stats.repeated_refused == len(repeats)
    assert err.count(f"{len(repeats)} proposal(s) repeated the params of trials") == 1
    lifted = SyntheticEvaluator(["q1", "q2"])
    again_stats = run_search(
        study, lifted, SOURCE, target=12, batch=1, direction="positive", progress=False
    )
    assert (
        again_stats.repeated_refused == 0 and "repeated the params" not in capsys.readouterr().err
    )
    again = [c for call in lifted.calls for _, c, _ in call]
    retries = again[: len(refused)]
    assert sorted(retries) == sorted(p["coefficient"] for p in refused.values())
    assert len(again) == len(refused) + len(repeats)
    assert len(set(asked + again)) == 12  # 12 configs evaluated: new ones, none twice
    assert study.n_done() == 12 and study.enqueue_refused() == 0


def test_an_exhausted_study_enqueues_no_retry_and_its_refused_trials_keep_counting(tmp_path):
    from steerops.search.study import EXHAUSTED

    study = open_study(tmp_path, startup_trials=4)
    filtered = SyntheticEvaluator(["q1", "q2"], refuse_above=0.5)
    run_search(study, filtered, SOURCE, target=6, batch=2, direction="positive", progress=False)
    study.study.set_user_attr(EXHAUSTED, True)
    assert study.enqueue_refused() == 0 and study.n_done() == 6


def test_a_surplus_design_point_goes_back_to_the_queue(tmp_path):
    """Asking past the target fails the surplus trial; an enqueued point it had taken is
    queued again for a later run instead of being lost."""
    from optuna.trial import TrialState

    study = open_study(tmp_path, startup_trials=2)
    study.enqueue_startup()
    design = {
        t.system_attrs["fixed_params"]["coefficient"]
        for t in study.study.get_trials(deepcopy=False)
    }
    (taken,) = study.ask(2, target=1)
    trials = study.study.get_trials(deepcopy=False)
    assert [t.user_attrs["source"] for t in trials if t.state == TrialState.FAIL] == ["surplus"]
    waiting = {
        t.system_attrs["fixed_params"]["coefficient"]
        for t in trials
        if t.state == TrialState.WAITING
    }
    assert waiting == design - {taken.coefficient} and len(waiting) == 1


def test_known_results_stand_in_for_part_of_the_design(tmp_path):
    study = open_study(tmp_path, startup_trials=3)
    assert study.add_known(2, 0.5, 5.0, 50.0, 100.0, 45.0, 2)
    study.enqueue_startup()
    queued = [
        t
        for t in study.study.get_trials(deepcopy=False)
        if t.user_attrs.get("source") == "enqueued"
    ]
    assert len(queued) == 2  # 3 design points, one of them known already


def _design(study) -> list[tuple[int | None, float]]:
    return [
        (t.system_attrs["fixed_params"].get("layer"), t.system_attrs["fixed_params"]["coefficient"])
        for t in study.study.get_trials(deepcopy=False)
        if t.user_attrs.get("source") == "enqueued"
    ]


def test_a_known_result_stands_in_for_the_design_point_of_its_slice(tmp_path):
    """The design never draws next to a known result at its layer: two known results in the
    slices of one layer leave those slices to them, and the slices dealt to the other
    layer are drawn. (Counted off the front, one design point was drawn anywhere, and the
    main job's landed at 0.2516, next to a known 0.25.)"""
    layers = (12, 16)
    fresh = open_study(tmp_path / "a", layers=layers, coef_range=(0.1, 0.3), startup_trials=3)
    fresh.enqueue_startup()
    full = _design(fresh)
    assert len(full) == 3
    own = [layer for layer, _ in full]
    assert own[0] == own[2] != own[1]  # slices dealt round-robin
    known_layer = own[0]
    twin = open_study(tmp_path / "b", layers=layers, coef_range=(0.1, 0.3), startup_trials=3)
    for c in (0.12, 0.25):  # in slices 0 and 2, both dealt to known_layer
        assert twin.add_known(known_layer, c, 10 * c, 50.0, 100.0, 45.0, 2)
    assert twin.add_known(own[1], 0.12, 1.0, 50.0, 100.0, 45.0, 2)  # not slice 1's layer
    twin.enqueue_startup()
    assert _design(twin) == [full[1]]


def test_a_coefficient_within_the_resolution_of_a_tried_one_is_a_repeat(tmp_path):
    """The sampler's model homes in on its best point in ever smaller steps (the main job's
    search tried 0.23341 and 0.23305 beside 0.233333, with the same search-half scores):
    within `resolution` at the same layer a proposal is dropped, as an exact copy is."""

    def evaluated(folder, resolution: float) -> list[float]:
        folder.mkdir()
        study = open_study(folder, layers=(2, 3), startup_trials=1, resolution=resolution, seed=0)
        for layer, c in ((2, 1.0), (2, 1.01), (3, 1.01), (2, 0.99), (2, 1.5)):
            study.enqueue(layer, c)
        evaluator = SyntheticEvaluator(["q"])
        run_search(
            study, evaluator, SOURCE, target=4, batch=1, direction="positive", progress=False
        )
        return [(layer, c) for call in evaluator.calls for layer, c, _ in call]

    # points queued on purpose are dropped only as exact copies, whatever the resolution
    assert evaluated(tmp_path / "exact", 0.0) == [(2, 1.0), (2, 1.01), (3, 1.01), (2, 0.99)]
    assert evaluated(tmp_path / "queued", 0.015) == [(2, 1.0), (2, 1.01), (3, 1.01), (2, 0.99)]


def test_sampled_coefficients_stay_a_resolution_apart(tmp_path, capsys):
    """With a resolution of 0.4 on [1, 2] the sampler's proposals closer than that to a tried
    coefficient are dropped: every evaluated pair is farther apart, and the search stops
    short of its target, saying how near counts as tried."""
    study = open_study(tmp_path, coef_range=(1.0, 2.0), resolution=0.4, seed=0, startup_trials=1)
    evaluator = SyntheticEvaluator(["q"])
    run_search(study, evaluator, SOURCE, target=8, batch=1, direction="positive", progress=False)
    tried = sorted(c for call in evaluator.calls for _, c, _ in call)
    assert 2 <= len(tried) <= 3 and float(np.diff(tried).min()) > 0.4
    assert study.exhausted()
    assert "or within 0.4 of one (search.min_gap" in capsys.readouterr().err


def test_study_refuses_other_settings_and_reports_bad_storage(tmp_path):
    open_study(tmp_path)
    with pytest.raises(SteeropsError, match="min_coherence"):
        SearchStudy(
            f"sqlite:///{tmp_path / 'optuna.db'}",
            "s",
            Space(0.0, 3.0, (2,)),
            50.0,
            {"layers": [2], "min_coherence": 50.0},
        )
    for bad in ("nosuchdb://x", "sqlite:/x.db"):  # no driver; a malformed sqlite URL
        with pytest.raises(SteeropsError, match="search.storage: cannot open"):
            SearchStudy(bad, "s", Space(0.0, 3.0, (2,)), 50.0, {})
    assert (
        storage_label("postgresql://me:secret@db:5432/optuna")
        == "postgresql://me:***@db:5432/optuna"
    )
    # libpq takes the password in the query too
    assert storage_label("postgresql://me@db/optuna?password=secret&sslmode=require") == (
        "postgresql://me@db/optuna"
    )


def test_a_study_of_older_unnamed_constraints_is_refused_to_the_gp_sampler(tmp_path):
    """Trials holding their constraint as older steerops versions stored it (a list): the
    GP sampler failed mid-search on them ("constraint names must be the same"); it is refused
    up front, while TPE, which reads both forms, searches on."""
    import optuna
    from optuna.distributions import FloatDistribution

    url = f"sqlite:///{tmp_path / 's.db'}"
    space = Space(0.1, 0.3, (12,))
    first = SearchStudy(url, "s", space, 68, {"k": 1}, sampler="tpe", seed=0, startup_trials=2)
    for coefficient, coherence, value in ((0.15, 90.0, 20.0), (0.25, 60.0, 60.0)):
        first.study.add_trial(
            optuna.trial.create_trial(
                params={"coefficient": coefficient},
                distributions={"coefficient": FloatDistribution(0.1, 0.3)},
                value=value,
                system_attrs={"constraints": [68 - coherence]},
                user_attrs={"source": "search", "coherence_mean": coherence},
            )
        )
    with pytest.raises(SteeropsError, match="2 trials hold their coherence constraint"):
        SearchStudy(url, "s", space, 68, {"k": 1}, sampler="gp", seed=0, startup_trials=2)
    tpe = SearchStudy(url, "s", space, 68, {"k": 1}, sampler="tpe", seed=0, startup_trials=2)
    for _ in range(3):
        [proposal] = tpe.ask(1, 10)
        tpe.tell(proposal, 50.0, 80.0, 30.0, 1.0)
    assert tpe.n_done() == 5


def test_near_copies_an_older_study_refused_are_asked_once_a_run(tmp_path):
    """An older steerops left refused trials within the resolution of one another (the
    sampler had proposed them again): their retries are queued points, yet once the first
    is refused again, the others are its near copies and fail unasked."""
    import optuna
    from optuna.trial import TrialState

    study = open_study(tmp_path, startup_trials=0, resolution=0.015)
    for c in (2.8363, 2.8372, 2.8362):
        study.study.add_trial(
            optuna.trial.create_trial(
                params={"coefficient": c},
                distributions={"coefficient": study.space.distributions()["coefficient"]},
                state=TrialState.FAIL,
                user_attrs={
                    "source": "search",
                    "layer": 2,
                    "refused": 1,
                    "error": "the judge's endpoint refused 1 answers",
                },
            )
        )
    filtered = SyntheticEvaluator(["q1", "q2"], refuse_above=0.5)
    run_search(study, filtered, SOURCE, target=4, batch=1, direction="positive", progress=False)
    asked = [c for call in filtered.calls for _, c, _ in call]
    near = [c for c in asked if abs(c - 2.8363) <= 0.015]
    assert near == [pytest.approx(2.8363, abs=1e-4)]  # the first retry only
    assert study.n_repeated_refused() == 2


def test_a_coherence_at_the_bar_but_for_float_noise_is_feasible_as_the_page_reads_it(tmp_path):
    """A mean summed in another order lands 1e-14 under the bar it equals: the study's
    feasibility and constraint read it as `stats.coherent` and the printed text do."""
    study = open_study(tmp_path)
    assert study.add_known(2, 0.5, 5.0, 50.0, MIN_COH - 1e-14, 45.0, 2)
    assert study.add_known(2, 0.9, 9.0, 60.0, MIN_COH - 1e-6, 55.0, 2)  # a real shortfall
    trials = {t.params["coefficient"]: t for t in study.study.get_trials(deepcopy=False)}
    assert trials[0.5].user_attrs["feasible"] and trials[0.5].constraints == {"coherence": 0.0}
    assert not trials[0.9].user_attrs["feasible"] and trials[0.9].constraints["coherence"] > 0
