"""A search's study is named by everything its trials measured, the vector files included."""

from __future__ import annotations

from types import SimpleNamespace

from conftest import write_params
from steerops.config import load_params
from steerops.search.runner import make_plan
from steerops.steering.configs import VectorSource

SOURCE = VectorSource("mean_diff", "prompt[-1]", "residual")


class _Evaluator:
    """What `make_plan` reads of a `SteeringEvaluator`: its settings, layers and the md5
    of the vector files a config is evaluated with."""

    settings_hash = "0123456789abcdef"

    def __init__(self, files: dict[str, str]):
        self.files = files
        self.session = SimpleNamespace(trait="toy/refusal", layers=lambda spec: [1, 2])

    def check(self, configs) -> None:
        pass

    def vector_files(self, source: VectorSource) -> dict[str, str]:
        return self.files


def test_vectors_extracted_again_open_a_new_study(tmp_path):
    params = load_params(write_params(tmp_path, tmp_path / "toy"))

    def plan(md5: str):
        evaluator = _Evaluator({"mean_diff|prompt[-1]|residual": md5})
        return make_plan(params, evaluator, SOURCE, ["q1"], ["q2"], tmp_path / "out")

    first, again, other = plan("aaa"), plan("aaa"), plan("bbb")
    assert first.study == again.study and first.settings == again.settings
    assert other.study != first.study
    assert other.settings["vector_files"] == {"mean_diff|prompt[-1]|residual": "bbb"}


def test_a_re_seeded_or_other_sampler_search_is_another_study(tmp_path):
    """Reopening the seed-0 GP study under --seed 1 or --sampler tpe evaluated nothing new
    (or mixed samplers in one study) while best.json claimed the new seed and sampler."""

    def plan(**search):
        path = write_params(tmp_path, tmp_path / "toy", search=search)
        params = load_params(path)
        evaluator = _Evaluator({"mean_diff|prompt[-1]|residual": "aaa"})
        return make_plan(params, evaluator, SOURCE, ["q1"], ["q2"], tmp_path / "out")

    default = plan()
    assert plan(seed=0).study == default.study  # the split's seed: the same study, as named
    assert "sampler_seed" not in default.settings and "sampler" not in default.settings
    reseeded, tpe = plan(seed=1), plan(sampler="tpe")
    assert len({default.study, reseeded.study, tpe.study}) == 3
    assert reseeded.seed == 1 and reseeded.settings["sampler_seed"] == 1
    assert tpe.settings["sampler"] == "tpe"


def test_the_grid_s_latest_sweep_names_the_study_and_the_search_s_own_log_does_not(tmp_path):
    """A study starts from the configs of the grid cell's latest sweep, which are part of its
    name: another grid in between (a DVC experiment) opens another study, and a rerun of
    the first grid finds its own study again, with the same trials to start from. What the
    search itself logged (another grid's study) is never taken as known."""
    from steering_data import baseline_entry, config_entry, settings_for, write_log
    from steerops.io import read_jsonl
    from steerops.steering.store import results_file, scope_of
    from steerops.steering.sweep import write_sweep

    params = load_params(write_params(tmp_path, tmp_path / "toy"))
    questions = [f"q{i}" for i in range(6)]
    settings = settings_for(questions)
    grid = results_file(params.out, "toy/refusal", params.steering.variant, SOURCE.at(1))
    entries = [baseline_entry(settings, questions, [(0.0, 100.0)] * 6)]
    for c in (0.5, 1.0, 2.0):
        entries.append(
            config_entry(settings, "mean_diff", "prompt[-1]", 1, c, [(10 * c, 90.0)] * 6)
        )
    write_log(grid, entries)
    # the search's own log holds a config no grid swept (another study's trial)
    own = tmp_path / "out" / "results.jsonl"
    stray = config_entry(settings, "mean_diff", "prompt[-1]", 1, 1.7, [(17.0, 90.0)] * 6)
    write_log(own, [entries[0], stray])
    evaluator = _Evaluator({"mean_diff|prompt[-1]|residual": "md5"})
    evaluator.scope, evaluator.questions = scope_of(settings), questions
    evaluator.session.weights = lambda config: (10.0 * config.coefficient,)

    def plan_after_sweep(*coefficients: float):
        swept = [
            e["config"]
            for e in read_jsonl(grid)
            if e["type"] == "config" and e["config"]["coefficient"] in coefficients
        ]
        write_sweep(grid.parent, "h", swept)
        return make_plan(params, evaluator, SOURCE, questions, [], tmp_path / "out")

    first = plan_after_sweep(0.5, 2.0)
    assert [(k.layer, k.coefficient) for k in first.known] == [(1, 0.5), (1, 2.0)]
    other = plan_after_sweep(0.5, 1.0)
    assert [k.coefficient for k in other.known] == [0.5, 1.0] and other.study != first.study
    again = plan_after_sweep(0.5, 2.0)
    assert (again.study, again.settings) == (first.study, first.settings)
    assert [k.coefficient for k in again.known] == [0.5, 2.0]


def test_another_trials_target_is_another_study(tmp_path):
    """A study of 8 trials is not the first 8 of a study of 20: the target (and the design
    size it sets) names the study, so a smaller target after a larger run reports its own
    trials, served from the results logs, not the larger run's."""

    def plan(**search):
        params = load_params(write_params(tmp_path, tmp_path / "toy", search=search))
        evaluator = _Evaluator({"mean_diff|prompt[-1]|residual": "aaa"})
        return make_plan(params, evaluator, SOURCE, ["q1"], ["q2"], tmp_path / "out")

    eight, twenty, again = plan(trials=8), plan(trials=20), plan(trials=8)
    assert eight.study != twenty.study and eight.study == again.study
    # an explicit --study is the user's to extend: its checked settings leave these out
    assert eight.settings == twenty.settings
    assert plan(trials=8, startup_trials=2).study != eight.study
    # trials asked together before any is told: the sampler walks another way
    assert plan(trials=8, batch=2).study != eight.study


def test_a_coherence_margin_is_another_study_and_none_keeps_the_name(tmp_path):
    def plan(**search):
        path = write_params(tmp_path, tmp_path / "toy", search=search)
        evaluator = _Evaluator({"mean_diff|prompt[-1]|residual": "aaa"})
        return make_plan(load_params(path), evaluator, SOURCE, ["q1"], ["q2"], tmp_path / "out")

    default, zero, margin = plan(), plan(coherence_margin=0), plan(coherence_margin=10)
    assert zero.study == default.study and "coherence_margin" not in default.settings
    assert margin.study != default.study and margin.settings["coherence_margin"] == 10
    assert (default.search_bar, margin.search_bar) == (68.0, 78.0)
    assert margin.min_coherence == 68.0  # the held-out verdict's bar


def test_coefficients_to_try_first_are_another_study_and_none_keeps_the_name(tmp_path):
    """search.enqueue: a study that has run its trials would never evaluate new points, so
    points to try first name another default study; none leaves the name as it was."""

    def plan(**search):
        path = write_params(tmp_path, tmp_path / "toy", search=search)
        evaluator = _Evaluator({"mean_diff|prompt[-1]|residual": "aaa"})
        return make_plan(load_params(path), evaluator, SOURCE, ["q1"], ["q2"], tmp_path / "out")

    default, empty = plan(), plan(enqueue=[])
    first, same, other = plan(enqueue=[0.5, 1.5]), plan(enqueue=[1.5, 0.5]), plan(enqueue=[0.3])
    assert empty.study == default.study
    assert first.study == same.study and len({default.study, first.study, other.study}) == 3
