"""The built toy world: deterministic trait data, its files, a model that loads like a hub model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steerops.io import read_jsonl
from steerops.toy import corpus
from steerops.toy.build import TRAIT_DIR, write_trait_data


def test_trait_data_is_deterministic_per_seed(tmp_path):
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        write_trait_data(tmp_path / name, seed)

    def files(name):
        root = tmp_path / name
        return {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}

    assert files("a") == files("b")
    assert files("a") != files("c")


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip()]


def test_world_files(toy_world):
    trait = toy_world / TRAIT_DIR
    positive, negative = _lines(trait / "positive.txt"), _lines(trait / "negative.txt")
    assert len(positive) >= 100 and len(negative) >= 100
    assert all(corpus.parse_request(p).harmful for p in positive)
    assert not any(corpus.parse_request(n).harmful for n in negative)
    questions = json.loads((trait / "steering.json").read_text())["questions"]
    assert len(questions) >= 20
    split = corpus.split_world(0)
    for q in questions:
        req = corpus.parse_request(q)
        assert not req.harmful and not split.is_train(req.topic, req.frame)
    assert "refus" in (trait / "definition.txt").read_text()
    calibration = read_jsonl(toy_world / "calibration.jsonl")
    assert len(calibration) >= 50 and all(isinstance(r["prompt"], str) for r in calibration)
    world = json.loads((toy_world / "world.json").read_text())
    assert world["seed"] == 0 and world["build_seconds"] > 0
    assert world["heldout"]["refusal_rate_harmful"] >= 0.95
    assert list((toy_world / "model").glob("*.safetensors"))


@pytest.fixture(scope="module")
def loaded(toy_world):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(toy_world / "model")
    model = AutoModelForCausalLM.from_pretrained(toy_world / "model").eval()
    return model, tok


def test_world_loads_like_a_hub_model(loaded):
    model, tok = loaded
    assert type(model).__name__ == "LlamaForCausalLM"
    assert tok.padding_side == "left"
    assert tok.pad_token_id is not None and tok.pad_token_id != tok.eos_token_id
    assert model.config.eos_token_id == tok.eos_token_id
    assert model.generation_config.pad_token_id == tok.pad_token_id
    assert model.generation_config.do_sample is False


def test_an_interrupted_toy_build_leaves_the_old_world(tmp_path, monkeypatch, capsys):
    from steerops.cli import main
    from steerops.toy import build

    world = tmp_path / "toy"
    write_trait_data(world, seed=0)
    (world / "world.json").write_text('{"seed": 0}')
    before = {p.relative_to(world): p.read_bytes() for p in world.rglob("*") if p.is_file()}

    def interrupted_build(out_dir, seed=0, progress=True, train_config=None):
        write_trait_data(out_dir, seed)  # the trait data goes first, as the real build does
        raise KeyboardInterrupt

    monkeypatch.setattr(build, "build_toy_world", interrupted_build)
    (tmp_path / "params.yaml").write_text("seed: 0\n")
    argv = ["toy", "--params", str(tmp_path / "params.yaml"), "--out", str(world), "--seed", "1"]
    assert main(argv) != 0
    after = {p.relative_to(world): p.read_bytes() for p in world.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml", "toy"]


def test_a_toy_build_refuses_a_folder_with_files_it_would_not_make(tmp_path, capsys):
    from steerops.cli import main

    (tmp_path / "params.yaml").write_text("seed: 0\n")
    for extra in ("notes.txt", "traits/mine/sycophancy/positive.txt"):
        world = tmp_path / extra.split("/")[0].replace(".txt", "") / "world"
        write_trait_data(world, seed=0)
        (world / extra).parent.mkdir(parents=True, exist_ok=True)
        (world / extra).write_text("keep me")
        argv = ["toy", "--params", str(tmp_path / "params.yaml"), "--out", str(world)]
        assert main(argv) == 2
        [err] = capsys.readouterr().err.strip().splitlines()
        assert "which the toy world build does not write" in err and extra.split("/")[0] in err
        assert (world / extra).read_text() == "keep me"
