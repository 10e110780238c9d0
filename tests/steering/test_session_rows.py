"""`steering.max_batch_rows` as the session hands it to the decode loop: auto sized once,
for the trait's longest question, and never part of what a logged result must match."""

from __future__ import annotations

from conftest import write_params
from steerops.config import load_params
from steerops.models.decode_memory import FREE_SHARE
from steerops.steering import session as session_module
from steerops.steering.evaluate import settings_hash
from steerops.steering.session import SteeringSession

TRAIT = "toy/refusal"


def _session(tmp_path, toy, progress: bool = False, **steering) -> SteeringSession:
    folder = tmp_path / f"run{len(list(tmp_path.glob('run*')))}"
    folder.mkdir()
    model = {"id": str(toy / "model")}
    blocks = {
        "judge": {"kind": "toy", "cache_dir": str(folder / "cache")},
        "models": {"base": model, "instruct": model},
        "steering": steering,
    }
    return SteeringSession(load_params(write_params(folder, toy, **blocks)), TRAIT, progress)


def test_auto_is_256_on_cpu_and_a_number_is_kept(tmp_path, toy_world):
    auto = _session(tmp_path, toy_world)
    assert auto.params.steering.max_batch_rows == "auto"
    assert auto.batch_rows == 256 and auto.generate_kwargs()["max_batch_rows"] == 256
    fixed = _session(tmp_path, toy_world, max_batch_rows=12)
    assert fixed.batch_rows == 12 and fixed.generate_kwargs()["max_batch_rows"] == 12
    # the rows change no token: results logged under one count are served under another
    questions = auto.questions
    assert settings_hash(auto.settings(questions)) == settings_hash(fixed.settings(questions))


def test_auto_is_sized_once_for_the_longest_question(tmp_path, toy_world, monkeypatch):
    asked = []

    def sized(model, longest, max_new, share):
        asked.append((longest, max_new, share))
        return 48, None

    monkeypatch.setattr(session_module, "auto_rows", sized)
    session = _session(tmp_path, toy_world, max_new_tokens=9)
    tokenizer = session.loaded.tokenizer
    longest = max(
        len(
            tokenizer.apply_chat_template(
                [{"role": "user", "content": q}], add_generation_prompt=True, return_dict=True
            )["input_ids"]
        )
        for q in session.questions
    )
    kwargs = session.generate_kwargs()
    assert kwargs["max_batch_rows"] == 48 and session.batch_rows == 48
    assert asked == [(longest, 9, FREE_SHARE)]  # the toy judge works beside generation
    # every call's cache has room for that question: one cache length for every subset
    assert kwargs["loop_options"].prompt_room == longest
    # a local judge on the steered model's device leaves it half the share
    shared = _session(tmp_path, toy_world, max_new_tokens=9)
    monkeypatch.setattr(shared, "judge_beside_generation", lambda: False)
    assert shared.batch_rows == 48 and asked[-1] == (longest, 9, FREE_SHARE / 2)


def test_rows_sized_on_cuda_are_said(tmp_path, toy_world, monkeypatch, capsys):
    monkeypatch.setattr(
        session_module, "auto_rows", lambda *args: (512, "61.0 GiB free, 80.5 MiB a row")
    )
    session = _session(tmp_path, toy_world, progress=True)
    capsys.readouterr()
    assert session.batch_rows == 512
    printed = capsys.readouterr().out
    assert printed == (
        "steer: 512 rows a decode step (max_batch_rows auto: 61.0 GiB free, 80.5 MiB a row)\n"
    )
