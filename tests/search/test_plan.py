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
