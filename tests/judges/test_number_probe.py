"""The number probe: one request that tells a judge writing numbers digit by digit from one
writing whole numbers, and decides nothing on any other reply."""

from __future__ import annotations

import pytest

from fake_endpoint import FakeServer
from steerops.judges.number_probe import PROMPT, answer_tokens, writes_digit_by_digit


@pytest.fixture
def server():
    fake = FakeServer()
    yield fake
    fake.close()


def ask(server: FakeServer, timeout_s: float = 5.0) -> bool:
    url = server.url + "/chat/completions"
    return writes_digit_by_digit(url, "judge-mini", {"Authorization": "Bearer k"}, timeout_s, "k")


@pytest.mark.parametrize(
    "tokens, digit_by_digit",
    [
        (["5", "7"], True),  # Llama 2, Mistral, Gemma, Qwen: one digit a token
        (["\u25815", "7"], True),  # a SentencePiece word start before the digit
        (["\u01205", "7"], True),  # a byte-level BPE one
        ([" 5", "7"], True),
        (["57"], False),  # GPT-4o/4.1, Llama 3: whole numbers
        (["5"], False),  # a lone digit: a reply cut short, not a tokenizer
        (["5", "."], False),
        (["Sure", "!"], False),  # words decide nothing
        (["7", "5"], False),
    ],
)
def test_the_two_tokens_tell_the_tokenizer(server, tokens, digit_by_digit):
    server.number = tokens
    assert ask(server) is digit_by_digit
    (body,) = server.requests
    assert body["messages"] == [{"role": "user", "content": PROMPT}]
    assert body["model"] == "judge-mini" and body["logprobs"] is True
    assert server.headers[-1]["Authorization"] == "Bearer k"


@pytest.mark.parametrize("failure", [500, 400, 429, "drop", "garbled", "slow"])
def test_a_failed_probe_decides_nothing_and_is_not_retried(server, failure):
    server.number = ["5", "7"]
    server.script = [failure]
    assert ask(server, timeout_s=0.5) is False  # "slow" answers after 1 s: past the timeout
    assert len(server.requests) == 1


def test_a_reply_without_logprobs_decides_nothing(server):
    server.number, server.logprobs = ["5", "7"], False
    assert ask(server) is False
    assert answer_tokens({"choices": [{"message": {"content": "57"}}]}) == []
    assert answer_tokens({"choices": [{"logprobs": {"content": [{"token": 5}]}}]}) == []
    assert answer_tokens({"choices": [{"logprobs": {"content": [{"token": " 57 "}]}}]}) == ["57"]
