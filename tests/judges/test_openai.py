"""The OpenAI-compatible judge against a chat-completions server on loopback.

The fake server reads the score distribution it should answer with from the response being
judged ("trait: 80=0.6 90=0.3 | coherence: 100=0.9"), so expected scores are computed here
independently with numpy. It counts requests, records bodies and headers, and can be
scripted to fail (HTTP status, slow answer past the client timeout, dropped connection).
"""

from __future__ import annotations

import json
import math
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np
import pytest

from fake_endpoint import FakeServer, distribution, judge_block
from steerops.config import Params
from steerops.errors import SteeropsError
from steerops.judges import Judge, make_judge
from steerops.judges.cache import CACHE_FILE, JudgeCache
from steerops.traits import Trait

KEY = "sk-test-0123456789abcdef-secret"


def expected(response: str, kind: str, min_mass: float) -> float | None:
    """Independent reference: weighted mean over tokens that are integers 0-100."""
    values, probs = [], []
    for tok, p in distribution(response, kind):
        t = tok.strip()
        if t.isdigit() and int(t) <= 100:
            values.append(int(t))
            probs.append(p)
    mass = float(np.sum(probs)) if probs else 0.0
    return None if mass < min_mass or not probs else float(np.dot(values, probs) / mass)


@pytest.fixture
def server():
    s = FakeServer()
    yield s
    s.close()


@pytest.fixture
def trait(tmp_path) -> Trait:
    return Trait(
        "test/refusal",
        tmp_path,
        [],
        [],
        ["q"],
        None,
        "The assistant declines to help with the request.",
    )


def params_for(tmp_path: Path, server: FakeServer, **judge) -> Params:
    return Params.model_validate({"judge": judge_block(server, tmp_path / "cache", **judge)})


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv("STEEROPS_TEST_JUDGE_KEY", KEY)


RESPONSES = [
    "trait: 80=0.6 90=0.3 sure=0.05 | coherence: 100=0.9 _100=0.05",
    "trait: 0=0.5 _7=0.2 7=0.1 101=0.1 | coherence: 55=0.4 60=0.4 -5=0.1",
    "trait: 30=0.1 maybe=0.8 | coherence: 100=0.3 no=0.6",  # trait mass 0.1 -> None
    "trait: 100=0.99 | coherence: 12=0.25 13=0.01",
]


def test_scores_are_probability_weighted_means(tmp_path, server, trait, key):
    judge = make_judge(params_for(tmp_path, server), trait)
    assert isinstance(judge, Judge) and judge.id.startswith("openai:judge-mini:")
    questions = [f"question {i}" for i in range(len(RESPONSES))]
    scores = judge.score(questions, RESPONSES)
    for (trait_score, coherence), response in zip(scores, RESPONSES, strict=True):
        for got, kind in ((trait_score, "trait"), (coherence, "coherence")):
            want = expected(response, kind, 0.25)
            assert (got is None) == (want is None), (response, kind)
            if want is not None:
                assert got == pytest.approx(want, abs=1e-9)
    assert scores[2][0] is None and scores[1][1] == pytest.approx((55 * 0.4 + 60 * 0.4) / 0.8)
    assert len(server.requests) == 2 * len(RESPONSES)
    body = server.requests[0]
    assert body["model"] == "judge-mini" and body["max_tokens"] == 6
    assert body["temperature"] == 0 and body["logprobs"] is True and body["top_logprobs"] == 20
    sent = [r["messages"][-1]["content"] for r in server.requests]
    assert any("question 3" in s and RESPONSES[3] in s for s in sent)
    assert all(h["Authorization"] == f"Bearer {KEY}" for h in server.headers)


def test_min_prob_mass_threshold_applies_on_read(tmp_path, server, trait, key):
    responses = ["trait: 40=0.2 x=0.7 | coherence: 90=0.3 x=0.6"]
    strict = make_judge(params_for(tmp_path, server, min_prob_mass=0.25), trait)
    assert strict.score(["q"], responses) == [(None, pytest.approx(90.0))]
    loose = make_judge(params_for(tmp_path, server, min_prob_mass=0.1), trait)
    assert loose.score(["q"], responses) == [(pytest.approx(40.0), pytest.approx(90.0))]
    assert len(server.requests) == 2  # the second judge read the cached (mean, mass)


def test_retries_on_429_5xx_timeout_and_dropped_connection(tmp_path, server, trait, key):
    # the late reply far past the timeout, so an ordinary reply on a loaded machine is not
    server.script = [429, 500, "drop", 503, ("late", 3.0, None)]
    judge = make_judge(params_for(tmp_path, server, concurrency=1, timeout_s=1.0), trait)
    scores = judge.score(["q"], [RESPONSES[0]])
    assert scores[0][0] == pytest.approx(expected(RESPONSES[0], "trait", 0.25))
    assert len(server.requests) == 5 + 2  # five failures, then both prompts answered


SLASHED = "sk-proj/AbC+def&x<y>0123456789SECRET"  # a key with characters encoders escape


def _go_json(key: str) -> str:  # Go's encoder: `&<>` as \u escapes
    text = json.dumps({"detail": f"invalid key {key}"})
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


@pytest.mark.parametrize(
    "action",
    [
        ("reason", 401),  # an empty body: the status line's reason phrase is the detail
        ("escaped", 401, lambda k: json.dumps({"detail": f"invalid key {k}"})),
        ("escaped", 401, lambda k: json.dumps({"detail": k}).replace("/", "\\/")),
        ("escaped", 401, _go_json),
        ("escaped", 401, lambda k: f"<a href='/keys?k={urllib.parse.quote(k, safe='')}'>"),
        ("escaped", 401, lambda k: "".join(f"\\u{ord(c):04X}" if c in "+&<>" else c for c in k)),
        ("escaped", 401, lambda k: json.dumps(k).replace("/", "\\/").replace("&", "\\u0026")),
        ("escaped", 500, lambda k: json.dumps({"detail": f"invalid key {k}"})),  # retried
    ],
    ids=["reason-phrase", "json", "json-slash", "json-go", "percent", "dotnet", "php", "retried"],
)
def test_a_key_the_server_echoes_in_any_encoding_is_not_shown(
    tmp_path, server, trait, monkeypatch, action
):
    monkeypatch.setenv("STEEROPS_TEST_JUDGE_KEY", SLASHED)
    server.script = [action] * 3
    judge = make_judge(params_for(tmp_path, server, concurrency=1, max_retries=2), trait)
    with pytest.raises(SteeropsError, match="HTTP (401|500)") as err:
        judge.score(["q"], [RESPONSES[0]])
    assert "***" in str(err.value)
    for part in ("AbC", "SECRET", "0123456789"):
        assert part not in str(err.value)


def test_a_key_echoed_cut_short_or_in_another_case_is_not_shown():
    from steerops.judges.transport import shown

    for echo in (KEY[:24], KEY[5:-1], KEY.upper(), "Bearer " + KEY[:-3]):
        text = shown(f"Incorrect API key provided: {echo}. See the docs", KEY, 400)
        assert "***" in text and text.endswith(". See the docs")
        assert not any(KEY[i : i + 8].lower() in text.lower() for i in range(len(KEY) - 7))
    assert shown("no key here: sk-other-999", KEY, 400) == "no key here: sk-other-999"
    # a placeholder key of words keeps the server's words (no runs scrubbed), whole it goes
    placeholder = "sk-no-key-required"
    assert shown("'messages' is required", placeholder, 400) == "'messages' is required"
    assert shown(f"bad key {placeholder}", placeholder, 400) == "bad key ***"
    # a character whose lowercase is longer ("İ") shifts no position after it
    text = shown("\u0130\u0130\u0130 key " + KEY[3:15] + " rejected", KEY, 400)
    assert text == "\u0130\u0130\u0130 key *** rejected"


def test_gives_up_after_max_retries(tmp_path, server, trait, key):
    server.script = [500, 502, 503]
    judge = make_judge(params_for(tmp_path, server, concurrency=1, max_retries=2), trait)
    with pytest.raises(SteeropsError, match="failed after 3 attempts") as err:
        judge.score(["q"], [RESPONSES[0]])
    assert KEY not in str(err.value) and "***" in str(err.value)
    assert len(server.requests) == 3


def test_client_error_fails_at_once_without_leaking_the_key(tmp_path, server, trait, key):
    server.script = [401]
    judge = make_judge(params_for(tmp_path, server, concurrency=1), trait)
    with pytest.raises(SteeropsError, match="HTTP 401") as err:
        judge.score(["q"], [RESPONSES[0]])
    assert KEY not in str(err.value) and KEY not in repr(judge)
    assert len(server.requests) == 1


# the cut at 200 characters falls after "Bearer " + 8 or more of the key's characters
# (150), inside the key at every length a run of fewer than 8 would leave (187-192; runs of
# 8 or more are scrubbed whole anyway), and before it (195)
@pytest.mark.parametrize("pad", [150, 185, 187, 188, 189, 190, 191, 192, 195])
def test_a_key_echoed_across_the_messages_cut_is_not_shown_in_part(
    tmp_path, server, trait, key, pad, capsys
):
    """The error text is cut to 200 characters for the message: the key comes out before
    the cut, else the part of it before the cut is shown (here in the warning line of a
    refused prompt)."""
    server.script = [("echo_after", pad)]
    judge = make_judge(params_for(tmp_path, server, concurrency=1), trait)
    judge.score(["q"], [RESPONSES[0]])
    err = capsys.readouterr().err
    assert "HTTP 400: xxxx" in err and KEY[:6] not in err
    assert "Bearer " + KEY[0] not in err  # not even the key's first character


def test_rerun_costs_zero_requests_and_key_is_not_stored(tmp_path, server, trait, key):
    questions = [f"q{i}" for i in range(len(RESPONSES))]
    first = make_judge(params_for(tmp_path, server), trait).score(questions, RESPONSES)
    assert len(server.requests) == 8
    again = make_judge(params_for(tmp_path, server), trait)
    assert again.score(questions, RESPONSES) == first
    assert len(server.requests) == 8 and again.calls == 0
    # A new question costs exactly its two prompts; duplicates in one call are sent once.
    again.score(["new", "new"], [RESPONSES[0], RESPONSES[0]])
    assert len(server.requests) == 10
    files = list((tmp_path / "cache").rglob("*"))
    assert any(f.name == CACHE_FILE for f in files)
    for f in files:
        assert KEY.encode() not in f.read_bytes(), f


def test_another_prompt_or_model_is_another_cache_entry(tmp_path, server, trait, key):
    make_judge(params_for(tmp_path, server), trait).score(["q"], [RESPONSES[0]])
    other = Trait("test/other", tmp_path, [], [], [], None, "A different rubric.")
    make_judge(params_for(tmp_path, server), other).score(["q"], [RESPONSES[0]])
    make_judge(params_for(tmp_path, server, model="judge-2"), trait).score(["q"], [RESPONSES[0]])
    assert len(server.requests) == 6


def test_requests_run_concurrently(tmp_path, server, trait, key):
    server.delay = 1.0  # long enough for 3 of the 4 workers to overlap on a loaded machine
    judge = make_judge(params_for(tmp_path, server, concurrency=4), trait)
    judge.score([f"q{i}" for i in range(4)], [RESPONSES[0]] * 4)
    assert server.max_in_flight >= 3


def test_key_comes_from_the_environment(tmp_path, server, trait, monkeypatch):
    monkeypatch.delenv("STEEROPS_TEST_JUDGE_KEY", raising=False)
    with pytest.raises(SteeropsError, match="STEEROPS_TEST_JUDGE_KEY"):
        make_judge(params_for(tmp_path, server), trait)
    judge = make_judge(params_for(tmp_path, server, require_key=False), trait)
    judge.score(["q"], [RESPONSES[3]])
    assert all("Authorization" not in h for h in server.headers)


def test_bad_config_and_replies_name_the_problem(tmp_path, server, trait, key):
    with pytest.raises(SteeropsError, match="judge.base_url"):
        make_judge(params_for(tmp_path, server, base_url=None), trait)
    with pytest.raises(SteeropsError, match="judge.base_url"):
        make_judge(params_for(tmp_path, server, base_url="127.0.0.1:80/v1"), trait)
    with pytest.raises(SteeropsError, match="judge.model"):
        make_judge(params_for(tmp_path, server, model=None), trait)
    server.logprobs = False
    with pytest.raises(SteeropsError, match="top_logprobs"):
        make_judge(params_for(tmp_path, server), trait).score(["q"], [RESPONSES[0]])
    with pytest.raises(SteeropsError, match="2 questions but 1 responses"):
        make_judge(params_for(tmp_path, server), trait).score(["a", "b"], ["x"])
    server.logprobs = True
    for top in ([85, "90", None], [{"token": "85", "logprob": 1e308}], [{"logprob": -1.0}]):
        server.top = top
        with pytest.raises(SteeropsError, match="malformed top_logprobs entry"):
            make_judge(params_for(tmp_path, server), trait).score(["q"], [RESPONSES[0]])
    # a null logprob (some servers send one) is skipped, not a failure
    server.top = [{"token": "80", "logprob": None}, {"token": "90", "logprob": 0.0}]
    [(trait_score, _)] = make_judge(params_for(tmp_path, server), trait).score(["q"], ["r"])
    assert trait_score == 90.0


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_redirects_are_not_followed_and_the_key_goes_nowhere_else(
    tmp_path, server, trait, key, code
):
    elsewhere = FakeServer()  # another port: another origin
    try:
        server.script = [("redirect", code, elsewhere.url + "/chat/completions")]
        judge = make_judge(params_for(tmp_path, server, concurrency=4), trait)
        with pytest.raises(SteeropsError, match=f"HTTP {code}.*judge.base_url") as err:
            judge.score(["q1", "q2"], RESPONSES[:2])
        assert elsewhere.url in str(err.value) and KEY not in str(err.value)
        assert elsewhere.headers == [] and elsewhere.requests == []
        assert len(server.requests) == 1
    finally:
        elsewhere.close()


def test_a_rejected_key_costs_one_request_whatever_the_concurrency(tmp_path, server, trait, key):
    server.script = [401] * 20
    judge = make_judge(params_for(tmp_path, server, concurrency=8), trait)
    with pytest.raises(SteeropsError, match="HTTP 401"):
        judge.score([f"q{i}" for i in range(10)], RESPONSES[:1] * 10)
    assert len(server.requests) == 1
    server.script = []
    judge.score([f"q{i}" for i in range(10)], RESPONSES[:1] * 10)  # then concurrent again
    assert len(server.requests) == 1 + 20


def test_judge_endpoint_settings_and_version_are_part_of_the_cache_key(
    tmp_path, server, trait, key
):
    base = make_judge(params_for(tmp_path, server), trait)
    base.score(["q"], [RESPONSES[0]])
    assert len(server.requests) == 2
    make_judge(params_for(tmp_path, server), trait).score(["q"], [RESPONSES[0]])
    assert len(server.requests) == 2  # same judge: cached
    for change in ({"version": "2024-06 retrain"}, {"top_logprobs": 5}):
        judge = make_judge(params_for(tmp_path, server, **change), trait)
        assert judge.id != base.id
        judge.score(["q"], [RESPONSES[0]])
    assert len(server.requests) == 6
    # Retry, concurrency and threshold settings do not change an answer: same key.
    same = make_judge(
        params_for(tmp_path, server, concurrency=2, max_retries=1, min_prob_mass=0.5), trait
    )
    assert same.id == base.id
    # Another endpoint may serve another model under the same name: its own answers. The
    # same URL written with a trailing slash is the same endpoint.
    assert make_judge(params_for(tmp_path, server, base_url=server.url + "/"), trait).id == base.id
    elsewhere = server.url.replace("127.0.0.1", "localhost")
    moved = make_judge(params_for(tmp_path, server, base_url=elsewhere), trait)
    assert moved.id != base.id
    moved.score(["q"], [RESPONSES[0]])
    assert len(server.requests) == 8


@pytest.mark.parametrize(
    "pasted",
    [
        "gsk_4fXq9ZSECRETSECRET0123456789abcdef",  # a key with a variable name's characters
        "hf_AbCdEfGhIjKlMnOpQrStUvWxYz123456",
        "hf_abcdefghijklmnopqrstuvwxyzabcdefgh",
    ],
)
def test_a_key_shaped_like_a_variable_name_is_not_echoed_as_one(
    tmp_path, server, monkeypatch, pasted
):
    from steerops.judges import check_judge

    monkeypatch.delenv(pasted, raising=False)
    with pytest.raises(SteeropsError, match="name is not shown") as err:
        check_judge(params_for(tmp_path, server, api_key_env=pasted), _trait(tmp_path))
    assert pasted not in str(err.value) and server.requests == []
    # a usual name is named
    monkeypatch.delenv("MY_JUDGE_KEY_2", raising=False)
    with pytest.raises(SteeropsError, match="variable MY_JUDGE_KEY_2 is not set"):
        check_judge(params_for(tmp_path, server, api_key_env="MY_JUDGE_KEY_2"), _trait(tmp_path))


@pytest.mark.parametrize(
    "url, warned",
    [
        ("http://judge.example:8000/v1", True),
        ("http://10.0.0.7:8000/v1", True),
        ("https://judge.example/v1", False),
        ("http://localhost:8000/v1", False),
        ("http://[::1]:8000/v1", False),
    ],
)
def test_a_key_sent_over_plain_http_off_the_machine_is_warned_about(
    tmp_path, server, trait, key, capsys, url, warned
):
    make_judge(params_for(tmp_path, server, base_url=url), trait)
    err = capsys.readouterr().err
    assert ("the API key goes unencrypted" in err) == warned
    assert KEY not in err


def test_a_key_variable_holding_the_key_itself_is_refused_without_echoing_it(tmp_path, server):
    from steerops.judges import check_judge

    with pytest.raises(SteeropsError, match="not the key itself") as err:
        check_judge(params_for(tmp_path, server, api_key_env=KEY), _trait(tmp_path))
    assert KEY not in str(err.value) and server.requests == []


@pytest.mark.parametrize("value", [f"{KEY}\rX", f"“{KEY}”", f"{KEY} extra", f"{KEY}é"])
def test_a_key_http_cannot_send_is_refused_before_a_run_without_echoing_it(
    tmp_path, server, monkeypatch, value
):
    from steerops.judges import check_judge

    monkeypatch.setenv("STEEROPS_TEST_JUDGE_KEY", value)
    with pytest.raises(SteeropsError, match="STEEROPS_TEST_JUDGE_KEY.*not shown") as err:
        check_judge(params_for(tmp_path, server), _trait(tmp_path))
    assert KEY not in str(err.value) and server.requests == []


def test_a_key_read_with_its_newline_is_sent_without_it(tmp_path, server, trait, monkeypatch):
    monkeypatch.setenv("STEEROPS_TEST_JUDGE_KEY", KEY + "\r\n")
    make_judge(params_for(tmp_path, server), trait).score(["q"], [RESPONSES[3]])
    assert [h["Authorization"] for h in server.headers] == [f"Bearer {KEY}"] * 2


def test_a_header_http_refuses_fails_without_the_key_in_the_error_or_its_context():
    from steerops.judges.transport import RetryPolicy, post_json

    secret = KEY + "\r"  # past the params check, e.g. a judge built in code
    with pytest.raises(SteeropsError, match="cannot send") as err:
        post_json(
            "http://127.0.0.1:9/v1",
            {},
            {"Authorization": f"Bearer {secret}"},
            RetryPolicy(max_retries=3, backoff_s=0.01),
            secret=secret,
        )
    assert KEY not in str(err.value) and err.value.__context__ is None


@pytest.mark.parametrize(
    "url, problem",
    [
        ("http://", "no host"),
        ("http://localhost:80O0/v1", "bad port"),
        ("http://localhost:8000/v1 ", "spaces"),
        ("https://user:pw-12345@judge.example/v1", "credentials"),
        ("https://judge.example/v1?api-version=2024", "query"),
        ("https://judge.example/v1?api-key=pw-12345", "query"),
        ("https://judge.example/v1 ?api-key=pw-12345", "spaces"),
        ("ftp://judge.example/v1?api-key=pw-12345", "expected an http"),
        ("ftp://user:pw-12345@judge.example/v1", "credentials"),
        ("judge.example/v1?api-key=pw-12345", "expected an http"),  # no scheme
        ("localhost:8000/v1?api-key=pw-12345", "expected an http"),
        ("file:x?api-key=pw-12345", "expected an http"),
    ],
)
def test_a_base_url_urllib_cannot_send_to_is_refused_before_a_run(
    tmp_path, server, key, url, problem
):
    from steerops.judges import check_judge

    with pytest.raises(SteeropsError, match=f"judge.base_url: .*{problem}") as err:
        check_judge(params_for(tmp_path, server, base_url=url), _trait(tmp_path))
    assert "pw-12345" not in str(err.value)  # neither in credentials nor in a query


def _trait(tmp_path) -> Trait:
    return Trait("test/refusal", tmp_path, [], [], ["q"], None, "Declines the request.")


def test_a_judge_that_writes_numbers_digit_by_digit_is_refused(tmp_path, server, trait, key):
    # A Gemma/Qwen-style tokenizer: 85 is "8" "5", and the first token's alternatives are
    # digits, which would read as a score of 8.
    server.top = [{"token": "8", "logprob": math.log(0.7)}, {"token": "9", "logprob": -1.5}]
    judge = make_judge(params_for(tmp_path, server), trait)
    for first in ("8", "\u25818"):  # also with a SentencePiece word-start marker
        server.tokens = [first, "5"]
        with pytest.raises(SteeropsError, match="several tokens.*'5'.*judge.kind hf"):
            judge.score(["q"], [RESPONSES[0]])
    assert len(judge.cache) == 0
    server.tokens = ["85", "<|eot_id|>"]  # a whole-number token, then the end
    server.top = [{"token": "85", "logprob": 0.0}]
    # the judge's record says it cannot be read: refused before a request, until
    # judge.version says the judge behind the name changed
    with pytest.raises(SteeropsError, match="several tokens.*judge.version"):
        make_judge(params_for(tmp_path, server), trait).score(["q"], [RESPONSES[0]])
    fixed = make_judge(params_for(tmp_path, server, version="whole-number"), trait)
    assert fixed.score(["q"], [RESPONSES[0]]) == [(85.0, 85.0)]


def test_one_answer_written_in_two_tokens_is_unscored_and_the_cache_kept(
    tmp_path, server, trait, key
):
    """One split answer may be a glitch: it is unscored and asked again, and the judge's
    paid answers stay; a second refuses the judge as before."""
    judge = make_judge(params_for(tmp_path, server), trait)
    judge.score(["q1", "q3"], [RESPONSES[1], RESPONSES[3]])
    assert len(judge.cache) == 4
    server.top = [{"token": "50", "logprob": 0.0}]
    later = make_judge(params_for(tmp_path, server, concurrency=1), trait)
    # the trait prompt's answer comes split, the coherence prompt's whole
    tokens = iter([["5", "0"], ["50"]])
    serve = server.serve

    def serve_split_once(handler, action, body):
        server.tokens = next(tokens, ["50"])
        return serve(handler, action, body)

    server.serve = serve_split_once
    assert later.score(["q0"], [RESPONSES[0]]) == [(None, 50.0)]
    assert later.unanswered == {("q0", RESPONSES[0])} and len(later.cache) == 5
    server.tokens = ["5", "0"]
    server.serve = serve
    with pytest.raises(SteeropsError, match="several tokens"):
        later.score(["q2"], [RESPONSES[2]])
    assert len(later.cache) == 0  # two splits: the judge cannot be read, its answers go


def test_a_digit_tokenizer_answering_single_digits_throughout_is_refused(
    tmp_path, server, trait, key
):
    """A digit-by-digit tokenizer whose answers are one digit and then stop ("5", end) never
    shows a second digit to catch. Its alternatives never hold a number of two digits, which
    a whole-number tokenizer's 20 alternatives on a 0-100 scale do: after 20 answers with
    none, it is refused instead of reading every score as 0-9."""
    server.tokens = ["5", "<end_of_turn>"]
    # its alternatives: the ten digits (what a digit tokenizer can offer), "5" most likely
    digits = [("5", 0.6), ("4", 0.3)] + [(d, 0.01) for d in "01236789"]
    server.top = [{"token": d, "logprob": math.log(p)} for d, p in digits]
    questions = [f"q{i}" for i in range(25)]
    responses = [f"answer {i}" for i in range(25)]
    judge = make_judge(params_for(tmp_path, server), trait)
    with pytest.raises(SteeropsError, match="digit by digit.*judge.kind hf") as err:
        judge.score(questions, responses)
    assert "\n" not in str(err.value)
    # the answers it counted are not kept: a rerun over just those pairs asks again, as a
    # fresh run would, instead of being served them; the heuristic marks nothing for good
    assert len(judge.cache) == 0
    again = make_judge(params_for(tmp_path, server), trait)
    again.score(questions[:9], responses[:9])
    assert again.calls == 18  # every prompt sent, none served
    # a whole-number tokenizer answering small numbers: its alternatives hold "10"
    server.top.append({"token": "10", "logprob": math.log(0.05)})
    other = make_judge(params_for(tmp_path / "other", server), trait)
    scores = other.score(questions, responses)
    assert len(scores) == 25 and all(t == pytest.approx(5.0, abs=0.5) for t, _ in scores)


@pytest.mark.parametrize(
    "tokens, score",
    [
        (["85", "/", "100"], 85.0),  # a fraction of 100 is the scale asked for
        (["85", " out", " of", " ", "100"], 85.0),  # as GPT-4o's and Llama 3's split it
        (["85", "<|eot_id|>"], 85.0),
        (["85", ".", "\n\n", "Out", " of", " context"], 85.0),  # words, not a scale
        (["85", "."], 85.0),
        (["7", "/", "10"], None),  # another scale: no number on 0-100
        (["7", "/10"], None),
        (["7", " out", " of", " ", "10"], None),
        (["7", " of", " ", "10"], None),
        (["0", ".", "7"], None),  # a 0-1 scale
        (["1", ".", "0"], None),
    ],
)
def test_an_answer_written_on_another_scale_is_unscored(
    tmp_path, server, trait, key, tokens, score
):
    """ "7/10" would read as 7 out of 100: the first token's alternatives cannot tell, the
    tokens after it can."""
    server.top = [{"token": tokens[0], "logprob": 0.0}]
    server.tokens = tokens
    judge = make_judge(params_for(tmp_path, server), trait)
    assert judge.score(["q"], [RESPONSES[0]]) == [(score, score)]
    assert server.requests[0]["max_tokens"] >= len(tokens)


def test_an_endpoint_that_ignores_top_logprobs_is_an_error_not_an_unscored_answer(
    tmp_path, server, trait, key
):
    server.top = []  # the answer's token, but no alternatives (top_logprobs not honoured)
    judge = make_judge(params_for(tmp_path, server), trait)
    with pytest.raises(SteeropsError, match="no top_logprobs"):
        judge.score(["q"], [RESPONSES[0]])
    assert len(judge.cache) == 0


@pytest.mark.parametrize("content", [None, []])
def test_a_message_with_a_number_but_no_token_list_is_an_error_not_no_number(
    tmp_path, server, trait, key, content
):
    """A reply saying "85" whose logprobs list no token (a proxy dropping them) would be
    cached as "no number" for good."""
    server.top = [{"token": "85", "logprob": 0.0}]
    send = server.send

    def without_tokens(handler, status, payload, headers=None):
        if status == 200:
            payload["choices"][0]["message"]["content"] = "85"
            payload["choices"][0]["logprobs"] = {"content": content}
        return send(handler, status, payload, headers)

    server.send = without_tokens
    judge = make_judge(params_for(tmp_path, server), trait)
    with pytest.raises(SteeropsError, match="no top_logprobs"):
        judge.score(["q"], [RESPONSES[0]])
    assert len(judge.cache) == 0


def test_answers_from_two_models_behind_one_name_are_warned_about(
    tmp_path, server, trait, key, capsys
):
    """An alias that moved to a new snapshot: the replies name another model than the one
    the cached answers came from, and the means mix the two."""
    served = _naming(server, "judge-mini-2026-01-01")
    judge = make_judge(params_for(tmp_path, server), trait)
    judge.score(["q1"], [RESPONSES[1]])
    keys = list(_keys(judge, "q1", RESPONSES[1]))
    assert judge.cache.served_by(keys) == dict.fromkeys(keys, "judge-mini-2026-01-01")
    judge.score(["q1", "q3"], [RESPONSES[1], RESPONSES[3]])
    assert "models" not in capsys.readouterr().err  # one model, cached or not
    served[0] = "judge-mini-2026-06-01"
    judge.score(["q1", "q0"], [RESPONSES[1], RESPONSES[0]])
    err = capsys.readouterr().err
    assert "named 2 models as answering 'judge-mini'" in err
    assert "'judge-mini-2026-01-01' (0 answered now, 2 cached)" in err
    assert "'judge-mini-2026-06-01' (2 answered now, 0 cached)" in err
    assert "judge.version" in err and err.count("\n") == 1
    judge.score(["q1", "q2"], [RESPONSES[1], RESPONSES[2]])
    assert "models" not in capsys.readouterr().err  # said once a judge, not once a chunk
    # the run's provenance: each answer its scores used, once, by the model that gave it
    assert judge.served_summary() == (
        "judge-mini-2026-01-01 (4 answers), judge-mini-2026-06-01 (4 answers)"
    )


def test_the_models_behind_a_fresh_judges_cached_answers_are_its_provenance(
    tmp_path, server, trait, key
):
    """A new process scoring only cached answers still says which model gave them."""
    _naming(server, "judge-mini-2026-01-01")
    params = params_for(tmp_path, server)
    make_judge(params, trait).score(["q1", "q2"], [RESPONSES[1], RESPONSES[2]])
    again = make_judge(params, trait)
    assert again.served_summary() is None  # nothing scored yet
    again.score(["q1"], [RESPONSES[1]])
    assert again.calls == 0  # all from the cache
    assert again.served_summary() == "judge-mini-2026-01-01 (2 answers)"


def test_a_served_model_name_is_kept_without_the_key_control_characters_or_bulk(
    tmp_path, server, trait, key
):
    """The model name comes from the server: it is cleaned before it is cached or logged."""
    named = _naming(server, f"judge-\x1b[31mmini {KEY}\n" + "x" * 500)
    judge = make_judge(params_for(tmp_path, server), trait)
    judge.score(["q1"], [RESPONSES[1]])
    (name,) = set(judge.served.values())
    assert KEY not in name and "\x1b" not in name and "\n" not in name
    assert name.startswith("judge-[31mmini ***") and len(name) <= 200
    cached = judge.cache.served_by(list(_keys(judge, "q1", RESPONSES[1])))
    assert set(cached.values()) == {name}
    named[0] = "\n\t"  # nothing printable: no name
    judge.score(["q2"], [RESPONSES[2]])
    assert judge.cache.served_by(list(_keys(judge, "q2", RESPONSES[2]))) == {}


def _naming(server, model: str) -> list[str]:
    """Make the server's replies name `model` as the model that answered; the returned
    one-item list changes it for later replies."""
    send, named = server.send, [model]

    def naming(handler, status, payload, headers=None):
        if status == 200:
            payload["model"] = named[0]
        return send(handler, status, payload, headers)

    server.send = naming
    return named


def _keys(judge, question, response):
    from steerops.judges.cache import cache_key

    return (cache_key(judge.id, kind, question, response) for kind in ("trait", "coherence"))


def test_a_base_url_naming_the_completions_route_is_refused_before_a_run(tmp_path, server, trait):
    from steerops.judges.openai import OpenAIJudge

    for url in (server.url + "/chat/completions", server.url + "/chat/completions/"):
        params = params_for(tmp_path, server, base_url=url)
        with pytest.raises(SteeropsError, match="completions route.*API's root"):
            OpenAIJudge.check_params(params, trait)


def test_a_reply_trickling_in_is_cut_at_the_timeout_and_retried(tmp_path, server, trait, key):
    """The socket's timeout bounds each read; the request's is bounded as a whole."""

    server.script = ["trickle"]
    serve = server.serve

    def trickling(handler, action, body):
        if action != "trickle":
            return serve(handler, action, body)
        handler.send_response(200)
        handler.send_header("Content-Length", "400")
        handler.end_headers()
        try:
            for _ in range(400):
                handler.wfile.write(b" ")
                handler.wfile.flush()
                time.sleep(0.01)
        except (OSError, BrokenPipeError, ConnectionResetError):
            pass
        return None

    server.serve = trickling
    judge = make_judge(params_for(tmp_path, server, timeout_s=0.5, concurrency=1), trait)
    start = time.monotonic()
    [(trait_score, _)] = judge.score(["q"], [RESPONSES[3]])
    assert trait_score == pytest.approx(100.0)
    assert time.monotonic() - start < 2.5  # the trickle alone lasts 4 s


def test_a_long_wait_before_a_retry_is_said(tmp_path, server, trait, key, capsys, monkeypatch):
    from steerops.judges import transport

    monkeypatch.setattr(transport, "_WAIT_SAID_S", 0.05)
    monkeypatch.setattr(transport, "_said_at", [float("-inf")])
    server.script = [429]
    judge = make_judge(params_for(tmp_path, server, backoff_s=0.1, max_backoff_s=0.1), trait)
    judge.score(["q"], [RESPONSES[3]])
    err = capsys.readouterr().err
    assert "HTTP 429" in err and "retrying in 0 s (retry 1 of 5)" in err and KEY not in err


def test_a_failure_stops_the_retries_of_requests_in_flight(tmp_path, server, trait, key):
    # The first prompt goes alone; then two get a 500 and wait to retry when the third's
    # 401 fails the run: they must not retry (a process would wait for them at exit).
    server.script = [None, 500, 500, ("late", 0.3, 401)]
    # retries 1.5-3 s away: the 401 fails the run first on a loaded machine too
    params = params_for(tmp_path, server, concurrency=4, backoff_s=3.0, max_backoff_s=3.0)
    judge = make_judge(params, trait)
    with pytest.raises(SteeropsError, match="HTTP 401"):
        judge.score(["q1", "q2"], RESPONSES[:2])
    sent = len(server.requests)
    assert sent == 4
    time.sleep(3.2)  # past every retry delay
    assert len(server.requests) == sent
    assert not [t for t in threading.enumerate() if t.name.startswith("steerops-judge")]


def test_a_reply_that_is_not_json_is_retried(tmp_path, server, trait, key):
    server.script = ["garbled"]
    judge = make_judge(params_for(tmp_path, server, concurrency=1), trait)
    [(trait_score, _)] = judge.score(["q"], [RESPONSES[3]])
    assert trait_score == pytest.approx(100.0) and len(server.requests) == 3
    server.script = ["garbled"] * 3
    judge = make_judge(params_for(tmp_path, server, concurrency=1, max_retries=2), trait)
    with pytest.raises(SteeropsError, match="after 3 attempts; last error: .*not JSON"):
        judge.score(["q2"], [RESPONSES[3]])


def test_a_200_carrying_an_error_is_retried_and_its_message_kept(tmp_path, server, trait, key):
    """Some gateways answer an upstream failure with HTTP 200 and `{"error": ...}`: a
    failure to retry like a 5xx, not an endpoint without logprobs."""
    server.script = ["error_200"]
    judge = make_judge(params_for(tmp_path, server, concurrency=1), trait)
    [(trait_score, _)] = judge.score(["q"], [RESPONSES[3]])
    # the failed attempt, then the trait and coherence prompts
    assert trait_score == pytest.approx(100.0) and len(server.requests) == 3
    server.script = ["error_200"] * 3
    judge = make_judge(params_for(tmp_path, server, concurrency=1, max_retries=2), trait)
    with pytest.raises(SteeropsError, match="after 3 attempts") as err:
        judge.score(["q2"], [RESPONSES[3]])
    said = str(err.value)
    assert "HTTP 200 with an error and no answer: upstream overloaded" in said
    assert KEY not in said and "logprobs" not in said
    # a client error passed on (its code one a real 400 would have): this prompt's own,
    # left unscored at once as a 400 leaves it, the run going on
    server.script = ["refused_200"]
    before = len(server.requests)
    judge = make_judge(params_for(tmp_path, server, concurrency=1, max_retries=2), trait)
    [(trait_score, _)] = judge.score(["q3"], [RESPONSES[3]])
    assert trait_score is None and len(server.requests) == before + 2  # no retry


def test_a_prompt_the_endpoint_refuses_is_unscored_not_fatal_and_asked_again(
    tmp_path, server, trait, key, capsys
):
    """A 400 for one prompt (a content filter on a harmful answer) leaves that answer
    unscored with one warning line, and is not cached: a rerun asks again, and is not
    failed by it even when the refused prompt is the first one it sends."""
    server.refuse = "FILTERED"
    responses = ["FILTERED " + RESPONSES[0], RESPONSES[1], RESPONSES[3]]
    questions = ["q0", "q1", "q3"]
    judge = make_judge(params_for(tmp_path, server, concurrency=4), trait)
    scores = judge.score(questions, responses)
    assert scores[0] == (None, None)
    for got, response in zip(scores[1:], responses[1:], strict=True):
        assert got[0] == pytest.approx(expected(response, "trait", 0.25))
    err = capsys.readouterr().err
    assert "HTTP 400: content_filter triggered (and 1 more of 6 prompts sent)" in err
    assert KEY not in err
    assert len(server.requests) == 6
    # the refused pair is named, so the stages keep no result built on it
    assert judge.unanswered == {("q0", responses[0])}

    again = make_judge(params_for(tmp_path, server, concurrency=4), trait)
    assert again.score(questions, responses) == scores
    assert len(server.requests) == 8  # only the two refused prompts, asked again
    assert again.unanswered == {("q0", responses[0])}
    server.refuse = None  # the filter lifted: the answer is scored and cached
    fixed = make_judge(params_for(tmp_path, server), trait)
    assert fixed.score(questions[:1], responses[:1])[0][0] == pytest.approx(
        expected(responses[0], "trait", 0.25)
    )
    assert fixed.unanswered == set()
    # each call names its own refusals: the judge that met one forgets it when all is scored
    assert again.score(questions, responses)[0][0] == pytest.approx(
        expected(responses[0], "trait", 0.25)
    )
    assert again.unanswered == set()


def test_a_refused_prompt_is_asked_once_a_process_and_said_once_a_judge(
    tmp_path, server, trait, key, capsys
):
    """A stage scores chunk after chunk, the baseline's answers in each: a prompt refused
    once is unscored in the later calls without a request, and the warning is one line."""
    server.refuse = "FILTERED"
    judge = make_judge(params_for(tmp_path, server, concurrency=2), trait)
    responses = ["FILTERED " + RESPONSES[0], RESPONSES[1]]
    first = judge.score(["q0", "q1"], responses)
    sent = len(server.requests)
    assert first[0] == (None, None) and sent == 4
    again = judge.score(["q0", "q2"], [responses[0], RESPONSES[2]])
    assert again[0] == (None, None) and judge.unanswered == {("q0", responses[0])}
    assert len(server.requests) == sent + 2  # q2's two prompts only
    # another refused answer in a later call: unscored, and no second warning line
    judge.score(["q3"], ["FILTERED " + RESPONSES[3]])
    assert len(server.requests) == sent + 4 and judge.unanswered == {
        ("q3", "FILTERED " + RESPONSES[3])
    }
    assert capsys.readouterr().err.count("content_filter triggered") == 1


def test_an_endpoint_that_refuses_every_request_fails_after_a_few(tmp_path, server, trait, key):
    """Refused before any answer (a model or setting the endpoint rejects): a few requests,
    then the error, not a run of unscored answers."""
    server.refuse = "QQQ"  # in every question
    judge = make_judge(params_for(tmp_path, server, concurrency=8), trait)
    with pytest.raises(SteeropsError, match="HTTP 400: content_filter triggered"):
        judge.score([f"QQQ {i}" for i in range(10)], [RESPONSES[0]] * 10)
    assert len(server.requests) == 5  # both prompts of two pairs, then a third pair's first


def test_refused_first_prompts_do_not_fail_a_judge_the_cache_shows_answering(
    tmp_path, server, trait, key
):
    """Refusals at the front of a call are the prompts' own problem when an earlier call
    of this judge was answered: the rest is judged, not the whole call failed every rerun."""
    judge = make_judge(params_for(tmp_path, server), trait)
    judge.score(["q1"], [RESPONSES[1]])
    server.refuse = "FILTERED"
    questions = ["qa", "qb", "qc", "qd", "qe"]
    filtered = ["FILTERED " + RESPONSES[i] for i in (0, 2, 3)]  # three pairs: the limit
    responses = filtered + RESPONSES[1:3]
    later = make_judge(params_for(tmp_path, server), trait)
    scores = later.score(questions, responses)
    assert scores[:3] == [(None, None)] * 3
    assert scores[3][0] == pytest.approx(expected(RESPONSES[1], "trait", 0.25))
    assert later.unanswered == set(zip(questions[:3], filtered, strict=True))
    # a judge with no answer cached is failed by the same three
    fresh = make_judge(params_for(tmp_path / "fresh", server), trait)
    with pytest.raises(SteeropsError, match="HTTP 400"):
        fresh.score(questions, responses)


def test_a_retry_after_longer_than_our_backoff_is_honoured():
    """A 429 with Retry-After: 45 waits 45 s, not the 30 s cap of our own schedule (another
    429 would waste the retry); a nonsense or absurd value does not stall the run."""
    from steerops.judges.transport import MAX_RETRY_AFTER_S, RetryPolicy

    policy = RetryPolicy(backoff_s=1.0, max_backoff_s=30.0)
    assert policy.delay(0, "45") == 45.0
    assert 0.5 <= policy.delay(0, "0") <= 1.0  # our own schedule when the server asks less
    assert 0.5 <= policy.delay(0, "-5") <= 1.0 and 0.5 <= policy.delay(0, "nan") <= 1.0
    assert 0.5 <= policy.delay(0, "Wed, 21 Oct 2026 07:28:00 GMT") <= 1.0
    assert policy.delay(10) == 30.0
    assert policy.delay(0, "86400") == MAX_RETRY_AFTER_S


def test_the_endpoint_is_asked_once_before_any_work_if_it_answers_and_takes_the_key(
    tmp_path, server, key, trait
):
    """`reach_judge` GETs the model list with the key: any answer will do (this server has
    no such route, 404); a refused key (401) is one line without the key, which the
    server echoed; a port nobody listens on is one line naming why. The one POST is the
    number probe (`number_probe`), never a judging prompt."""
    import socket

    from steerops.judges import reach_judge
    from steerops.judges.number_probe import PROMPT

    params = params_for(tmp_path, server)
    assert reach_judge(params, trait) is None
    assert [h["Authorization"] for h in server.headers] == [f"Bearer {KEY}"] * 2  # GET, probe
    assert [r["messages"] for r in server.requests] == [[{"role": "user", "content": PROMPT}]]
    server.requests.clear()
    server.get_status = 401
    with pytest.raises(SteeropsError) as refused:
        reach_judge(params, trait)
    assert "/v1/models refused the key (HTTP 401)" in str(refused.value)
    assert KEY not in str(refused.value) and "***" in str(refused.value)
    with socket.socket() as probe:  # a free port, closed again: nothing answers there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dead = params_for(tmp_path, server, base_url=f"http://127.0.0.1:{port}/v1")
    with pytest.raises(SteeropsError, match=r":\d+/v1/models cannot be reached \(URLError"):
        reach_judge(dead, trait)
    assert not server.requests  # refused at the GET: no probe


def test_the_number_probe_asks_only_a_judge_the_cache_does_not_know(tmp_path, server, key, trait):
    """A judge with answers in its cache has shown it answers readably: a rerun's preflight
    sends no probe (re-running costs no judge call). A judge the probe refuses is remembered,
    as scoring remembers one: the next preflight refuses it without asking, until a new
    judge.version."""
    from steerops.judges import reach_judge

    params = params_for(tmp_path, server)
    reach_judge(params, trait)
    assert len(server.requests) == 1  # the probe
    make_judge(params, trait).score(["question 0"], RESPONSES[:1])
    server.requests.clear()
    reach_judge(params, trait)
    assert server.requests == []
    # another judge (a new version) whose endpoint now writes digit by digit
    server.number = ["5", "7"]
    later = params_for(tmp_path, server, version="v2")
    with pytest.raises(SteeropsError, match=r"wrote 57 as '5' then '7'"):
        reach_judge(later, trait)
    assert len(server.requests) == 1
    with pytest.raises(SteeropsError, match=r"digit by digit.*\(found by an earlier run"):
        reach_judge(later, trait)
    assert len(server.requests) == 1  # refused from the cache: nothing asked
    with pytest.raises(SteeropsError, match=r"found by an earlier run"):
        make_judge(later, trait).score(["question 0"], RESPONSES[:1])
    reach_judge(params, trait)  # the first judge, readable, is untouched
    assert len(server.requests) == 1


def test_a_model_the_endpoint_does_not_list_is_said_before_any_work(
    tmp_path, server, key, trait, capsys
):
    """A typo in judge.model would otherwise show only after the model loads and a chunk
    is generated: one warning line naming what the endpoint lists (a gateway may serve
    names it does not list, so not an error), none when it lists the model or no list."""
    from steerops.judges import reach_judge

    params = params_for(tmp_path, server)  # judge-mini
    names = ["gpt-4.1", "judge-large", f"echo-{KEY}", "a", "b", "c"]
    server.listing = {"object": "list", "data": [{"id": n, "object": "model"} for n in names]}
    reach_judge(params, trait)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and KEY not in err[0]
    assert err[0] == (
        f"warning: judge.model 'judge-mini' is not among the 6 models {server.url}/models "
        "lists (gpt-4.1, judge-large, echo-***, a, b, ...); if its requests fail, check the name"
    )
    server.listing["data"].append({"id": "judge-mini"})
    reach_judge(params, trait)
    server.listing = {"unexpected": True}
    reach_judge(params, trait)
    assert capsys.readouterr().err == ""
    assert len(server.requests) == 3  # each call's number probe (no answer cached), no judging


def test_an_unreachable_http_url_says_the_environments_http_proxy_was_not_used(
    tmp_path, server, trait, key, monkeypatch
):
    """Where the judge is reached only through a proxy, plain http fails: the key is never
    shown to an http proxy. The error says so, and how to fix it; not where no_proxy names
    the host (it would not have gone through the proxy)."""
    import socket

    from steerops.judges import reach_judge

    for name in ("no_proxy", "NO_PROXY", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dead = params_for(tmp_path, server, base_url=f"http://127.0.0.1:{port}/v1")
    monkeypatch.setenv("http_proxy", "http://proxy.invalid:3128")
    with pytest.raises(SteeropsError) as hinted:
        reach_judge(dead, trait)
    assert "cannot be reached" in str(hinted.value)
    assert "http_proxy set in the environment is not used for plain http" in str(hinted.value)
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    with pytest.raises(SteeropsError) as bypassed:
        reach_judge(dead, trait)
    assert "cannot be reached" in str(bypassed.value) and "http_proxy" not in str(bypassed.value)


def test_an_http_proxy_from_the_environment_never_sees_the_key(
    tmp_path, server, trait, key, monkeypatch
):
    """urllib sends plain http through `http_proxy`, which reads every header: the key goes
    straight to the endpoint instead. An https proxy (a tunnel it cannot read) is kept."""
    from steerops.judges import transport

    proxy = FakeServer()
    try:
        for name in ("no_proxy", "NO_PROXY"):
            monkeypatch.delenv(name, raising=False)
        for name in ("http_proxy", "HTTP_PROXY", "https_proxy"):
            monkeypatch.setenv(name, proxy.url.removesuffix("/v1"))
        judge = make_judge(params_for(tmp_path, server), trait)
        [(trait_score, _)] = judge.score(["q"], [RESPONSES[3]])
        assert trait_score == pytest.approx(expected(RESPONSES[3], "trait", 0.25))
        assert proxy.headers == [] and len(server.requests) == 2
        handlers = transport._opener().handlers
        (proxies,) = [h.proxies for h in handlers if hasattr(h, "proxies")]
        assert proxies == {"https": proxy.url.removesuffix("/v1")}
    finally:
        proxy.close()


@pytest.mark.parametrize(
    "declined",
    [
        {"finish_reason": "content_filter"},  # an output filter (Azure)
        {"finish_reason": "stop", "message": {"role": "assistant", "refusal": "I can't."}},
    ],
)
def test_a_reply_that_declines_to_judge_is_unscored_and_asked_again(
    tmp_path, server, trait, key, declined
):
    """A 200 that declines (an output content filter, the model's refusal) is the prompt's
    own problem, as an HTTP 400 filter is: unscored, named, not cached for good."""
    judge = make_judge(params_for(tmp_path, server), trait)
    judge.score(["q0"], [RESPONSES[0]])  # the endpoint has answered this judge
    server.declined = declined
    assert judge.score(["q1"], [RESPONSES[1]]) == [(None, None)]
    assert judge.unanswered == {("q1", RESPONSES[1])}
    assert len(judge.cache) == 2
    server.declined = None  # lifted: asked again and scored
    again = make_judge(params_for(tmp_path, server), trait)
    [(trait_score, _)] = again.score(["q1"], [RESPONSES[1]])
    assert trait_score == pytest.approx(expected(RESPONSES[1], "trait", 0.25))


def test_replies_that_decline_before_any_answer_do_not_fail_the_endpoint(
    tmp_path, server, trait, key
):
    """A 200 that declines proves the endpoint takes the request, unlike a 400 before any
    answer: a judge whose first prompts are all declined (an output filter on harmful
    answers) leaves them unscored and goes on, where three 400s in a row stop it."""
    server.declined = {"finish_reason": "content_filter"}
    judge = make_judge(params_for(tmp_path, server, concurrency=4), trait)
    questions = [f"q{i}" for i in range(5)]
    assert judge.score(questions, RESPONSES[:1] * 5) == [(None, None)] * 5
    assert len(judge.unanswered) == 5 and len(server.requests) == 10  # trait and coherence
    assert len(judge.cache) == 0


def test_alternatives_without_a_single_log_probability_are_an_error(tmp_path, server, trait, key):
    server.top = [{"token": "80", "logprob": None}, {"token": "90", "logprob": None}]
    judge = make_judge(params_for(tmp_path, server), trait)
    with pytest.raises(SteeropsError, match="every logprob null"):
        judge.score(["q"], [RESPONSES[0]])
    assert len(judge.cache) == 0


def test_a_whole_number_judge_with_few_alternatives_is_not_taken_for_a_digit_one(
    tmp_path, server, trait, key
):
    """Confident of 0 with 3 alternatives, a whole-number judge lists single digits only,
    as a digit tokenizer would: too few alternatives to tell, so nothing is refused."""
    server.tokens = ["0", "<|eot_id|>"]
    server.top = [{"token": t, "logprob": math.log(p)} for t, p in (("0", 0.9), ("1", 0.05))]
    questions = [f"q{i}" for i in range(25)]
    judge = make_judge(params_for(tmp_path, server, top_logprobs=3), trait)
    scores = judge.score(questions, [f"gibberish {i}" for i in range(25)])
    # a server that returns fewer than asked for (a provider's cap of 5) counts the same
    capped = make_judge(params_for(tmp_path / "capped", server), trait)
    assert capped.score(questions, [f"gibberish {i}" for i in range(25)]) == scores
    assert all(t == pytest.approx(0.05 / 0.95) for t, _ in scores)


def test_an_interrupt_stops_the_requests_of_a_judge_scoring_in_another_thread(
    tmp_path, server, trait, key, monkeypatch
):
    """steer judges a chunk beside generation; on Ctrl-C it calls `interrupt`: queued prompts
    are not sent, the replies on their way land and are cached (they are paid for), and the
    call ends with Stopped; a reply slower than the grace is not waited for."""
    from steerops.judges import openai
    from steerops.judges.transport import Stopped

    server.delay = 0.2
    judge = make_judge(params_for(tmp_path, server, concurrency=2), trait)
    outcome: list = []

    def score(prefix="q"):
        try:
            judge.score([f"{prefix}{i}" for i in range(30)], [RESPONSES[0]] * 30)
        except Stopped as exc:
            outcome.append(exc)

    def interrupted_once(sent: int, prefix: str = "q") -> None:
        """Score in a thread, interrupt once `sent` requests arrived: stopped within 2 s (a
        poll of the waiting thread and the grace, not the 3 s of every prompt at 0.2 s or
        the 5 s reply below)."""
        outcome.clear()
        worker = threading.Thread(target=score, args=(prefix,))
        worker.start()
        while len(server.requests) < sent:
            time.sleep(0.01)
        judge.interrupt()
        started = time.perf_counter()
        worker.join(8)
        assert not worker.is_alive() and time.perf_counter() - started < 2.0
        assert len(outcome) == 1 and "interrupted" in str(outcome[0])

    interrupted_once(4)
    sent, cached = len(server.requests), len(judge.cache)
    assert sent < 12 and cached == sent  # every reply on its way was kept
    server.delay = 0.0
    again = make_judge(params_for(tmp_path, server, concurrency=2), trait)
    again.score([f"q{i}" for i in range(30)], [RESPONSES[0]] * 30)
    assert len(server.requests) - sent == 60 - cached  # only what was never answered

    # replies slower than the grace: the call stops without them
    monkeypatch.setattr(openai, "_IN_FLIGHT_GRACE_S", 0.3)
    server.delay = 0.0  # the first, sent alone, at once; the two after it 5 s late
    server.script = [None, ("late", 5.0, None), ("late", 5.0, None)]
    judge = make_judge(params_for(tmp_path, server, concurrency=2), trait)
    interrupted_once(len(server.requests) + 3, "other")  # prompts not cached


def test_a_reply_without_logprobs_after_answers_with_them_is_asked_again(
    tmp_path, server, trait, key
):
    """A gateway's empty 200 mid-run is asked again (the scores equal a clean run's); a
    prompt whose every reply lacks them is left unscored and uncached, not the end of the
    run; before any answer such a reply is the endpoint lacking logprobs: an error."""
    questions = [f"q{i}" for i in range(len(RESPONSES))]
    clean = make_judge(params_for(tmp_path, server, cache_dir=str(tmp_path / "clean")), trait)
    want = clean.score(questions, RESPONSES)
    server.requests.clear()
    server.script = ["no_choices"]
    with pytest.raises(SteeropsError, match="returned no top_logprobs"):
        make_judge(params_for(tmp_path, server), trait).score(questions[:1], RESPONSES[:1])
    judge = make_judge(params_for(tmp_path, server, concurrency=1), trait)
    assert judge.score(questions[:1], RESPONSES[:1]) == want[:1]
    server.requests.clear()
    server.script = ["no_choices"] * 2
    assert judge.score(questions, RESPONSES) == want
    assert len(server.requests) == 2 * (len(RESPONSES) - 1) + 2  # two asked again
    # every reply for one prompt without them: that prompt unscored, the others scored
    server.logprobs = False
    retried = make_judge(params_for(tmp_path, server, max_retries=2), trait)
    server.requests.clear()
    got = retried.score(["new"], [RESPONSES[0]])  # its trait and coherence prompts
    assert got == [(None, None)] and len(server.requests) == 2 * 3
    # a third prompt in a row so left: the endpoint stopped sending them, an error again
    with pytest.raises(SteeropsError, match="for each of 3 prompts in a row"):
        retried.score(["newer"], [RESPONSES[1]])
    server.logprobs = True
    rerun = make_judge(params_for(tmp_path, server), trait)
    assert rerun.score(["new"], [RESPONSES[0]]) == want[:1]  # not cached: asked again


def _interrupting(put, calls: list, at: int):
    """`put` that raises Ctrl-C's KeyboardInterrupt at its `at`-th call, instead of storing."""

    def interrupting(*args, **kwargs):
        calls.append(1)
        if len(calls) == at:
            raise KeyboardInterrupt
        return put(*args, **kwargs)

    return interrupting


def test_ctrl_c_on_the_scoring_thread_keeps_the_replies_on_their_way(
    tmp_path, server, trait, key, monkeypatch
):
    """generate's vetting scores on the thread Ctrl-C (or SIGTERM) lands on: the replies of
    the requests in flight are kept as on `interrupt()` from another thread, so a rerun asks
    only what was never answered."""
    from steerops.judges import openai

    server.delay = 0.2
    judge = make_judge(params_for(tmp_path, server, concurrency=2), trait)
    real_wait, landed = openai.wait, []

    def wait_then_ctrl_c(*args, **kwargs):
        """Where the scoring thread spends its time, and so where a Ctrl-C lands: raised
        there once 4 requests went out (an asynchronous exception aimed at an arbitrary
        instruction can land inside the futures' own locks, which no caller can recover)."""
        done = real_wait(*args, **kwargs)
        if len(server.requests) >= 4 and not landed:
            landed.append(1)
            raise KeyboardInterrupt
        return done

    monkeypatch.setattr(openai, "wait", wait_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        judge.score([f"q{i}" for i in range(30)], [RESPONSES[0]] * 30)
    monkeypatch.setattr(openai, "wait", real_wait)
    sent, cached = len(server.requests), len(judge.cache)
    assert sent < 12 and cached == sent  # every reply on its way was kept
    server.delay = 0.0
    again = make_judge(params_for(tmp_path, server, concurrency=2), trait)
    again.score([f"q{i}" for i in range(30)], [RESPONSES[0]] * 30)
    assert len(server.requests) - sent == 60 - cached  # only what was never answered

    # landing while an answer is being kept, not while the judge waits for one: the
    # replies on their way are kept all the same, the one being stored among them, whether
    # it is the first (sent alone) or one of the pool's; each counted once
    server.delay = 0.2
    for landing in (1, 2):
        server.requests.clear()
        judge = make_judge(params_for(tmp_path, server, concurrency=4), trait)
        puts: list = []
        judge.cache.put = _interrupting(judge.cache.put, puts, landing)
        before = len(judge.cache)
        with pytest.raises(KeyboardInterrupt):
            judge.score([f"other{landing}-{i}" for i in range(30)], [RESPONSES[0]] * 30)
        sent = len(server.requests)
        assert 0 < sent < 20 and len(judge.cache) - before == sent == judge.calls, landing
        assert len(puts) == sent + 1


def test_a_run_of_its_own_asks_no_answer_the_pipeline_s_cache_holds(tmp_path, server, trait, key):
    """A scratch steer or search keeps its cache in its folder while judge.cache_dir lies in
    the pipeline's outputs, and reads the pipeline's too: it pays only for new answers, and
    the pipeline's cache is left as it was."""
    questions = [f"q{i}" for i in range(len(RESPONSES))]
    inside = {"cache_dir": str(tmp_path / "outputs" / "judge_cache")}
    pipeline = params_for(tmp_path, server, **inside)
    pipeline.paths.out = str(tmp_path / "outputs")
    pipeline_judge = make_judge(pipeline, trait)
    first = pipeline_judge.score(questions, RESPONSES)
    assert len(server.requests) == 8
    pipeline_judge.cache.close()  # every answer now in the file
    pipeline_file = tmp_path / "outputs" / "judge_cache" / CACHE_FILE
    scratch = params_for(tmp_path, server, **inside)
    scratch.paths.out = str(tmp_path / "outputs")
    scratch.set_run_folder(tmp_path / "run", named=True)
    assert scratch.pipeline_judge_cache == pipeline_file.parent
    before = pipeline_file.read_bytes()
    judge = make_judge(scratch, trait)
    assert judge.score(questions, RESPONSES) == first and judge.calls == 0
    judge.score(["new"], [RESPONSES[1]])
    assert len(server.requests) == 10 and judge.calls == 2
    judge.cache.close()
    assert pipeline_file.read_bytes() == before
    assert len(JudgeCache(tmp_path / "run" / "judge_cache")) == 2


def test_a_rate_limited_endpoint_gets_fewer_requests_at_once(tmp_path, server, trait, key, capsys):
    """An endpoint that answers 429 past 2 requests in flight, a judge of 8 threads with 5
    retries each: alone, each thread's backoff kept 8 at the endpoint and spent the retries
    on more 429s; the shared throttle halves what is in flight on a 429 and holds the next
    requests, so every prompt is answered with the scores of an unthrottled run, and the
    slowdown is said once."""
    server.capacity, server.delay = 2, 0.05  # answers take a while: requests overlap
    responses = [f"trait: {i}=0.9 | coherence: {100 - i}=0.9" for i in range(40)]
    questions = [f"question {i}" for i in range(40)]
    judge = make_judge(params_for(tmp_path, server, concurrency=8, max_retries=5), trait)
    scores = judge.score(questions, responses)
    want = np.array([(i, 100 - i) for i in range(40)], dtype=float)
    assert np.allclose(np.array(scores, dtype=float), want, rtol=0, atol=1e-9)
    assert server.throttled > 0 and judge.throttle.lowest <= 2
    assert server.throttled < 40  # not a 429 storm: far fewer than one per prompt
    said = [x for x in capsys.readouterr().err.splitlines() if "rate-limiting" in x]
    assert said == [
        f"judge: {judge.url} is rate-limiting (HTTP 429): 4 requests in flight instead of "
        "judge.concurrency 8, more again as they succeed"
    ]


def test_the_throttle_halves_once_per_burst_and_grows_back_one_at_a_time():
    """AIMD: 429s of requests sent before the last decrease do not decrease again; a run of
    as many answers as are allowed lets one more in, up to the limit, and at the level that
    last drew a 429 only a run of `_PROBE_RUNS` times as many."""
    from steerops.judges.throttle import _PROBE_RUNS, Throttle

    gate = Throttle(8)
    burst = [gate.acquire() for _ in range(8)]
    for generation in burst:  # eight 429s of one burst
        gate.release(generation, throttled=True)
    assert gate.allowed == 4 and gate.in_flight == 0
    gate.release(gate.acquire(), throttled=True)  # a request sent after the decrease: 4 drew it
    assert gate.allowed == 2
    for _ in range(2):
        gate.release(gate.acquire(), ok=True)
    assert gate.allowed == 3  # under 4, a run of 2 answers
    answers = 0
    while gate.allowed < 8:
        gate.release(gate.acquire(), ok=True)
        answers += 1
    assert answers == _PROBE_RUNS * (3 + 4 + 5 + 6 + 7)  # from 4 up, probed slowly
    for _ in range(_PROBE_RUNS * 8 * 2):
        gate.release(gate.acquire(), ok=True)
    assert gate.allowed == 8 == gate.limit  # never past judge.concurrency
    # a hold keeps the next request back for its seconds
    import time

    started = time.monotonic()
    gate.release(gate.acquire(), throttled=True, hold_s=0.3)
    gate.release(gate.acquire(), ok=True)
    assert time.monotonic() - started >= 0.3


def test_ctrl_c_while_the_pool_is_filled_sends_nothing_it_does_not_keep(
    tmp_path, server, trait, key, monkeypatch
):
    """A Ctrl-C while the judge hands a chunk's prompts to its workers (thousands take tens
    of milliseconds): what went out is kept and the rest is never sent, not sent and paid for
    while the process waits at exit."""
    from concurrent.futures import ThreadPoolExecutor

    from steerops.judges import openai

    class Interrupted(ThreadPoolExecutor):
        def submit(self, *args, **kwargs):
            if getattr(self, "handed", 0) == 3:
                raise KeyboardInterrupt
            self.handed = getattr(self, "handed", 0) + 1
            return super().submit(*args, **kwargs)

    monkeypatch.setattr(openai, "ThreadPoolExecutor", Interrupted)
    server.delay = 0.2
    judge = make_judge(params_for(tmp_path, server, concurrency=4), trait)
    with pytest.raises(KeyboardInterrupt):
        judge.score([f"q{i}" for i in range(30)], [RESPONSES[0]] * 30)
    time.sleep(0.5)  # past any reply a leftover worker would get
    sent = len(server.requests)
    assert 1 < sent <= 4 and len(judge.cache) == sent and not judge._live
