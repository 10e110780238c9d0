"""What a logged steering result must match to be served: the session's settings change
with every judge input that changes a score, and stay as logged where none is set."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import write_params
from steerops.config import load_params
from steerops.steering.evaluate import settings_hash
from steerops.steering.session import SteeringSession

TRAIT = "toy/refusal"
TEMPLATE = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|> ' + m['content'] + ' ' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def _settings(tmp_path, toy, judge: dict, instruct=None, base=None, traits=None) -> str:
    folder = tmp_path / f"run{len(list(tmp_path.glob('run*')))}"
    folder.mkdir()
    model = {"id": str(toy / "model")}
    blocks = {
        "judge": {"cache_dir": str(folder / "cache"), **judge},
        "models": {"base": {**model, **(base or {})}, "instruct": {**model, **(instruct or {})}},
    }
    if traits is not None:
        blocks["traits"] = {"root": str(traits), "names": [TRAIT]}
    session = SteeringSession(load_params(write_params(folder, toy, **blocks)), TRAIT, False)
    return settings_hash(session.settings(session.questions))


def test_a_judge_input_that_changes_scores_changes_the_settings(tmp_path, toy_world, monkeypatch):
    monkeypatch.setenv("KEY_XYZ", "sk-test")  # nothing is sent: the judge is only built
    endpoint = {"kind": "openai", "base_url": "https://judge.invalid/v1", "model": "m"}
    endpoint["api_key_env"] = "KEY_XYZ"
    first = _settings(tmp_path, toy_world, endpoint)
    assert _settings(tmp_path, toy_world, endpoint) == first
    # min_prob_mass is applied after the judge's cache (not in its id): a result logged
    # under another threshold holds other None scores
    assert _settings(tmp_path, toy_world, {**endpoint, "min_prob_mass": 0.9}) != first
    # a chat template from params changes the steered model's prompts (the folder's own
    # template is in its fingerprint)
    assert _settings(tmp_path, toy_world, endpoint, instruct={"chat_template": TEMPLATE}) != first
    # the proxy judge reading another variant than the steered one: its dtype and chat
    # template change the likelihoods
    traits = tmp_path / "traits"
    shutil.copytree(toy_world / "traits", traits)
    (traits / TRAIT / "phrases.txt").write_text("sorry\n")
    proxy = {"kind": "proxy", "variant": "base"}
    read = _settings(tmp_path, toy_world, proxy, traits=traits)
    assert _settings(tmp_path, toy_world, proxy, base={"dtype": "bfloat16"}, traits=traits) != read
    templated = {"chat_template": TEMPLATE}
    assert _settings(tmp_path, toy_world, proxy, base=templated, traits=traits) != read
    # the exact toy judge has no threshold: settings logged before stay served
    toy = _settings(tmp_path, toy_world, {"kind": "toy"})
    assert _settings(tmp_path, toy_world, {"kind": "toy", "min_prob_mass": 0.9}) == toy


def test_an_edit_to_the_proxy_judge_s_phrases_changes_the_settings(tmp_path, toy_world):
    """Results scored under the old phrases.txt are not served after an edit to it: another
    phrase, or only a new `!` exclusion line, gives other settings; the same file the same."""
    traits = tmp_path / "traits"
    shutil.copytree(toy_world / "traits", traits)
    phrases = traits / TRAIT / "phrases.txt"
    proxy = {"kind": "proxy", "variant": "base"}
    seen = []
    for text in ("sorry\n", "sorry\ncannot\n", "sorry\ncannot\n!sorry to hear\n", "sorry\n"):
        phrases.write_text(text)
        seen.append(_settings(tmp_path, toy_world, proxy, traits=traits))
    assert seen[3] == seen[0]
    assert len(set(seen[:3])) == 3, seen


def _shipping(tmp_path, toy, name: str, **shipped) -> dict:
    """The toy model, its generation_config.json shipping `shipped`."""
    folder = tmp_path / name
    shutil.copytree(toy / "model", folder)
    config = json.loads((folder / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(json.dumps({**config, **shipped}))
    return {"id": str(folder)}


def test_logits_processing_a_checkpoint_ships_keys_its_results(tmp_path, toy_world):
    """HF generate applied a shipped repetition_penalty before steerops decoded plainly:
    results of such a checkpoint logged then are not served; a checkpoint shipping only
    sampling settings (steering decodes greedily) or nothing keeps the settings it had."""

    def model_settings(model: dict) -> dict:
        folder = tmp_path / f"run{len(list(tmp_path.glob('run*')))}"
        folder.mkdir()
        blocks = {"judge": {"cache_dir": str(folder / "cache"), "kind": "toy"}}
        blocks["models"] = {"base": model, "instruct": model}
        params = load_params(write_params(folder, toy_world, **blocks))
        return SteeringSession(params, TRAIT, False).settings(["q"])["model"]

    penalised = _shipping(tmp_path, toy_world, "penalty", repetition_penalty=1.3)
    assert model_settings(penalised)["plain_decoding_overrides"] == {"repetition_penalty": 1.3}
    sampling = _shipping(tmp_path, toy_world, "sampling", do_sample=True, top_k=64, top_p=0.9)
    assert "plain_decoding_overrides" not in model_settings(sampling)
    assert "plain_decoding_overrides" not in model_settings({"id": str(toy_world / "model")})
    # no generation_config.json: loading applies what config.json holds
    legacy = _shipping(tmp_path, toy_world, "legacy")
    config = json.loads((Path(legacy["id"]) / "config.json").read_text())
    config |= {"repetition_penalty": 1.3, "no_repeat_ngram_size": 3}
    (Path(legacy["id"]) / "config.json").write_text(json.dumps(config))
    (Path(legacy["id"]) / "generation_config.json").unlink()
    overrides = model_settings(legacy)["plain_decoding_overrides"]
    assert overrides == {"repetition_penalty": 1.3, "no_repeat_ngram_size": 3}


def test_the_judge_behind_a_number_is_in_the_run_s_params():
    """The id hashes the prompts; the endpoint, model, label and threshold are spelled out
    (the URL can hold no credentials: refused at load), the key never."""
    from steerops.config.judge import JudgeConfig
    from steerops.steering.evaluate import judge_params

    judge = JudgeConfig(kind="openai", model="m", base_url="http://h:1/v1", version="v2")
    said = judge_params(judge, {"judge_min_prob_mass": 0.25})
    assert said == {
        "judge_kind": "openai",
        "judge_base_url": "http://h:1/v1",
        "judge_model": "m",
        "judge_version": "v2",
        "judge_min_prob_mass": 0.25,
    }
    assert judge_params(JudgeConfig(kind="toy"), {}) == {"judge_kind": "toy"}


def test_two_question_lists_that_join_alike_are_told_apart():
    """A question holding a line break: joined by lines, ["a\nb", "c"] and ["a", "b\nc"]
    read alike, and one list's logged scores would be served for the other's; a list
    without one keeps the hash its logs were written with."""
    import hashlib

    from steerops.steering.session import questions_hash

    assert questions_hash(["a\nb", "c"]) != questions_hash(["a", "b\nc"])
    plain = ["How do I bake bread?", "Name a river."]
    assert questions_hash(plain) == hashlib.md5("\n".join(plain).encode()).hexdigest()
