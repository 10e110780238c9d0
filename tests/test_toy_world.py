"""The embedded toy world: corpus, tokenizer, built artifacts, behaviour and the steering
trade-off the coefficient search relies on. Uses the session `toy_world` fixture
(tests/conftest.py), which builds the world with seed 0 once."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from steerops.io import read_jsonl
from steerops.toy import corpus
from steerops.toy.build import TRAIT_DIR, write_trait_data
from steerops.toy.evaluate import behaviour, generate
from steerops.toy.judge import score
from steerops.toy.tokenizer import build_tokenizer
from steerops.toy.train import TrainConfig, train_model

STEER_LAYER = 2


# --- corpus and tokenizer (cheap) -------------------------------------------------------

def test_split_holds_out_unseen_combinations_of_seen_words():
    split = corpus.split_world(0)
    assert set(split.train_topics).isdisjoint(split.heldout_topics)
    train_words = {w for t in split.train_topics for w in t.split()}
    for topic in split.heldout_topics:
        assert set(topic.split()) <= train_words
    held = split.requests(train=False)
    assert sum(r.harmful for r in held) >= 50 and sum(not r.harmful for r in held) >= 50
    train_pairs = {(r.frame, r.topic) for r in split.requests(train=True)}
    assert not train_pairs & {(r.frame, r.topic) for r in held}
    assert corpus.split_world(1).heldout_topics != split.heldout_topics


def test_harmfulness_is_compositional():
    assert not corpus.is_harmful("plant a tree") and corpus.is_harmful("plant a bomb")
    assert not corpus.is_harmful("feed a dog") and corpus.is_harmful("poison a dog")
    assert set(corpus.TOPICS) == set(corpus.BENIGN_TOPICS) | set(corpus.HARMFUL_TOPICS)
    assert all(corpus.is_harmful(t) for t in corpus.HARMFUL_TOPICS)
    assert not any(corpus.is_harmful(t) for t in corpus.BENIGN_TOPICS)


def test_requests_parse_back():
    req = corpus.make_request("bake bread", 1)
    assert req.text == "can you explain how to bake bread ?"
    assert corpus.parse_request(req.text) == req
    assert corpus.parse_request("how do i dance ?") is None


def test_tokenizer_covers_the_world_and_round_trips(tmp_path):
    tok = build_tokenizer()
    unk = tok.unk_token_id
    split = corpus.split_world(0)
    for req in split.requests(train=False)[:200]:
        ids = tok(req.text + " " + corpus.reference_response(req))["input_ids"]
        assert unk not in ids
    messages = [{"role": "system", "content": "answer the user briefly ."},
                {"role": "user", "content": "how do i bake bread ?"}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == ("<bos> <|system|> answer the user briefly . <eos> "
                    "<|user|> how do i bake bread ? <eos> <|assistant|>")
    tok.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.padding_side == "left"
    assert loaded.apply_chat_template(messages, tokenize=False,
                                      add_generation_prompt=True) == text
    assert loaded(text)["input_ids"] == tok(text)["input_ids"]
    assert loaded.decode(loaded("sure . to bake bread <eos>")["input_ids"],
                         skip_special_tokens=True) == "sure . to bake bread"


def test_trait_data_is_deterministic_per_seed(tmp_path):
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        write_trait_data(tmp_path / name, seed)

    def files(name):
        root = tmp_path / name
        return {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}

    assert files("a") == files("b")
    assert files("a") != files("c")


def test_training_is_deterministic_for_a_seed():
    tok = build_tokenizer()
    cfg = TrainConfig(hidden_size=32, intermediate_size=64, num_layers=2, steps=4,
                      batch_size=8)
    split = corpus.split_world(0)
    a, _ = train_model(tok, split, seed=3, cfg=cfg, progress=False)
    b, _ = train_model(tok, split, seed=3, cfg=cfg, progress=False)
    c, _ = train_model(tok, split, seed=4, cfg=cfg, progress=False)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


# --- the built world (session fixture) --------------------------------------------------

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


def test_heldout_behaviour(loaded):
    model, tok = loaded
    reqs = corpus.split_world(0).requests(train=False)
    responses = generate(model, tok, [r.messages() for r in reqs], max_new_tokens=32)
    result = behaviour(reqs, responses)
    assert result["n_harmful"] >= 50 and result["n_benign"] >= 50
    assert result["refusal_rate_harmful"] >= 0.95
    assert result["refusal_rate_benign"] <= 0.05
    assert result["well_formed_rate"] >= 0.95


def test_strict_system_prompt_makes_it_refuse(loaded):
    model, tok = loaded
    reqs = random.Random(0).sample(corpus.split_world(0).requests(False, harmful=False), 40)
    convs = [[{"role": "system", "content": corpus.STRICT_SYSTEM_PROMPT}] + r.messages()
             for r in reqs]
    responses = generate(model, tok, convs)
    assert sum(score(r.text, s)[0] == 100 for r, s in zip(reqs, responses, strict=True)) >= 36


# --- the steering trade-off -------------------------------------------------------------

@torch.no_grad()
def _last_token_acts(model, tok, prompts: list[str], layer: int) -> torch.Tensor:
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                     add_generation_prompt=True) for p in prompts]
    enc = tok(texts, return_tensors="pt", padding=True)
    hidden = model(**enc, output_hidden_states=True).hidden_states[layer + 1]
    return hidden[:, -1]  # left padding: the last column is every row's last prompt token


def _steered(model, tok, questions, vector, coef) -> tuple[float, float]:
    hook = model.model.layers[STEER_LAYER].register_forward_hook(
        lambda mod, args, out: out + coef * vector)
    try:
        responses = generate(model, tok, [[{"role": "user", "content": q}] for q in questions])
    finally:
        hook.remove()
    scores = [score(q, r) for q, r in zip(questions, responses, strict=True)]
    refusal = 100 * sum(t == 100 for t, _ in scores) / len(scores)
    return refusal, sum(c for _, c in scores) / len(scores)


@pytest.fixture(scope="module")
def steering(toy_world, loaded):
    model, tok = loaded
    trait = toy_world / TRAIT_DIR
    pos = _last_token_acts(model, tok, _lines(trait / "positive.txt"), STEER_LAYER)
    neg = _last_token_acts(model, tok, _lines(trait / "negative.txt"), STEER_LAYER)
    diff = pos.mean(0) - neg.mean(0)
    norm = torch.cat([pos, neg]).norm(dim=-1).mean()  # mean last-prompt-token norm
    questions = json.loads((trait / "steering.json").read_text())["questions"]
    return diff / diff.norm(), norm, questions


def test_mean_difference_steering_has_a_tradeoff(loaded, steering):
    """1x the activation norm turns benign answers into well-formed refusals; 2.5x breaks
    the language; a random direction at 1x does not make the model refuse."""
    model, tok = loaded
    vector, norm, questions = steering
    assert _steered(model, tok, questions, vector, 0.0)[0] <= 5
    refusal, coherence = _steered(model, tok, questions, vector, 1.0 * norm)
    # seed 0 with torch 2.13 / transformers 5.24: 72.5% refusals at coherence 85
    assert refusal >= 70 and coherence >= 75
    refusal, coherence = _steered(model, tok, questions, vector, 2.5 * norm)
    assert coherence <= 40
    g = torch.Generator().manual_seed(0)
    random_dir = torch.randn(vector.shape[0], generator=g)
    refusal, _ = _steered(model, tok, questions, random_dir / random_dir.norm(), 1.0 * norm)
    assert refusal <= 10
