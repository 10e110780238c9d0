"""The factory picks the judge params name."""

from __future__ import annotations

import re

import pytest

from steerops.config import load_params
from steerops.errors import SteeropsError


def test_unknown_judge_kind_is_a_params_error(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("judge:\n  kind: gpt\n")
    with pytest.raises(SteeropsError, match="judge.kind"):
        load_params(path)


def _params(tmp_path, judge: str, models: str = ""):
    path = tmp_path / "params.yaml"
    path.write_text(f"judge: {judge}\n{models}")
    return load_params(path)


def _trait(tmp_path):
    from steerops.traits import Trait

    (tmp_path / "t").mkdir(exist_ok=True)
    return Trait("cat/t", tmp_path / "t", [], [], definition="refuses", questions=["q?"])


OPENAI = "{kind: openai, base_url: 'https://judge.invalid/v1', model: m, api_key_env: KEY_XYZ}"


@pytest.mark.parametrize(
    "judge, models, message",
    [
        (OPENAI, "", "judge.api_key_env: environment variable KEY_XYZ is not set"),
        ("{kind: openai, model: m}", "", "judge.base_url: required"),
        ("{kind: openai, base_url: 'https://x/v1'}", "", "judge.model: required"),
        ("{kind: hf}", "", "judge.variant: required for judge.kind hf"),
        ("{kind: hf, variant: nosuch}", "", "judge.variant: models.nosuch: unknown"),
        ("{kind: proxy, variant: nosuch}", "", "judge.variant: models.nosuch: unknown"),
        (
            "{kind: hf, variant: judge}",
            "models: {judge: {id: org/judge, device: bogus}}\n",
            "models.judge.device: 'bogus' is not a device",
        ),
        (
            "{kind: proxy, variant: judge}",
            "models: {judge: {id: org/judge, device: 'cuda:99'}}\n",
            "models.judge.device: cuda:99 is not available",
        ),
        ("{kind: proxy, variant: judge}", "models: {judge: {id: j}}\n", "phrases.txt"),
    ],
)
def test_check_judge_refuses_what_make_judge_would_without_building_it(
    tmp_path, monkeypatch, judge, models, message
):
    from steerops.judges import check_judge
    from steerops.models import loading

    def refuse(*args, **kwargs):
        raise AssertionError("check_judge loaded a model")

    monkeypatch.delenv("KEY_XYZ", raising=False)
    monkeypatch.setattr(loading, "load_model", refuse)
    if "{id: j}" in models:  # a local model folder: its weights are never read here
        from steerops.toy.tokenizer import build_tokenizer
        from tiny import tiny_model

        tiny_model("llama").save_pretrained(tmp_path / "j")
        build_tokenizer(["a"]).save_pretrained(tmp_path / "j")
    with pytest.raises(SteeropsError, match=re.escape(message)):
        check_judge(_params(tmp_path, judge, models), _trait(tmp_path))


def test_check_judge_reads_the_key_from_the_environment_and_keeps_nothing(tmp_path, monkeypatch):
    from steerops.judges import check_judge

    monkeypatch.setenv("KEY_XYZ", "sk-secret-xyz")
    params = _params(tmp_path, OPENAI)
    assert check_judge(params, _trait(tmp_path)) is None
    assert "sk-secret-xyz" not in repr(params)
    check_judge(_params(tmp_path, "{kind: toy}"))  # the exact judge needs nothing


def test_the_toy_judge_is_refused_on_a_trait_other_than_the_toy_worlds(tmp_path):
    """The default judge (toy) on a real trait would score every answer 0: refused, naming
    the trait and the kinds to use, by the preflight check and by the factory alike."""
    from steerops.judges import check_judge, make_judge
    from steerops.traits import Trait

    params = _params(tmp_path, "{kind: toy}")
    real = _trait(tmp_path)
    for build in (check_judge, make_judge):
        with pytest.raises(SteeropsError) as info:
            build(params, real)
        assert str(info.value) == (
            "judge.kind: toy scores only the toy world's trait toy/refusal, not cat/t: set "
            "judge.kind to proxy, openai or hf (docs/params.md)"
        )
    toy = Trait("toy/refusal", tmp_path / "t", [], [], definition="refuses", questions=["q?"])
    check_judge(params, toy)
    assert make_judge(params, toy).score(["q?"], ["a"])  # judged, whatever the score
