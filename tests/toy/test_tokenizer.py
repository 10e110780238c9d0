"""The toy tokenizer covers the world's vocabulary and round-trips."""

from __future__ import annotations

import pytest

from steerops.toy import corpus
from steerops.toy.tokenizer import build_tokenizer


def test_tokenizer_covers_the_world_and_round_trips(tmp_path):
    tok = build_tokenizer()
    unk = tok.unk_token_id
    split = corpus.split_world(0)
    for req in split.requests(train=False)[:200]:
        ids = tok(req.text + " " + corpus.reference_response(req))["input_ids"]
        assert unk not in ids
    messages = [
        {"role": "system", "content": "answer the user briefly ."},
        {"role": "user", "content": "how do i bake bread ?"},
    ]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<bos> <|system|> answer the user briefly . <eos> "
        "<|user|> how do i bake bread ? <eos> <|assistant|>"
    )
    tok.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(tmp_path)
    assert loaded.padding_side == "left"
    assert loaded.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == text
    assert loaded(text)["input_ids"] == tok(text)["input_ids"]
    assert (
        loaded.decode(loaded("sure . to bake bread <eos>")["input_ids"], skip_special_tokens=True)
        == "sure . to bake bread"
    )


@pytest.fixture(scope="module")
def loaded(toy_world):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(toy_world / "model")
    model = AutoModelForCausalLM.from_pretrained(toy_world / "model").eval()
    return model, tok
