"""The number probe: one request that tells a judge writing numbers digit by digit from one
writing whole numbers, and decides nothing on any other reply."""

from __future__ import annotations

import pytest

from fake_endpoint import FakeServer
from steerops.judges.number_probe import PROMPT, first_token, writes_digit_by_digit


@pytest.fixture
def server():
    fake = FakeServer()
    yield fake
    fake.close()


def ask(server: FakeServer) -> bool:
    url = server.url + "/chat/completions"
    return writes_digit_by_digit(url, "judge-mini", {"Authorization": "Bearer k"}, 5.0, "k")


@pytest.mark.parametrize(
    "tokens, digit_by_digit",
    [
        (["5", "7"], True),  # Llama 2, Mistral, Gemma: one digit a token
        (["\u25815", "7"], True),  # a SentencePiece word start before the digit
        ([" 5", "7"], True),
        (["57"], False),  # GPT-4o/4.1, Llama 3: whole numbers
        (["Sure", "!"], False),  # words decide nothing
        (["7"], False),
    ],
)
def test_the_first_token_tells_the_tokenizer(server, tokens, digit_by_digit):
    server.number = tokens
    assert ask(server) is digit_by_digit
    (body,) = server.requests
    assert body["messages"] == [{"role": "user", "content": PROMPT}]
    assert body["model"] == "judge-mini" and body["logprobs"] is True


@pytest.mark.parametrize("failure", [500, 400, "drop", "garbled"])
def test_a_failed_probe_decides_nothing_and_is_not_retried(server, failure):
    server.number = ["5", "7"]
    server.script = [failure]
    assert ask(server) is False
    assert len(server.requests) == 1


def test_a_reply_without_logprobs_decides_nothing(server):
    server.number, server.logprobs = ["5", "7"], False
    assert ask(server) is False
    assert first_token({"choices": [{"message": {"content": "57"}}]}) is None
    assert first_token({"choices": [{"logprobs": {"content": [{"token": 5}]}}]}) is None
    assert first_token({"choices": [{"logprobs": {"content": [{"token": " 57 "}]}}]}) == "57"
