"""The judge's key end to end: a tracked steer and search with an endpoint judge send it to
the configured endpoint and nowhere else, and no output, log, tracking store, artifact or
printed line holds it, whole or in part."""

from __future__ import annotations

import math

import pytest

from fake_endpoint import FakeServer, judge_block
from steer_world import SMALL, steer_params
from steerops.cli import main

KEY = "sk-canary-7f3e9a1b2c4d5e6f8a0b"
# whole, any 8 characters of it in a row (a key cut short), hex-encoded
PARTS = [KEY[i : i + 8] for i in range(len(KEY) - 7)] + [KEY.encode().hex()]


@pytest.fixture
def endpoint():
    server = FakeServer()
    # every prompt answered "70" (trait and coherence): the configs score, over the bar
    server.top = [{"token": "70", "logprob": math.log(0.9), "bytes": None}]
    yield server
    server.close()


def test_the_judge_s_key_reaches_only_its_endpoint(
    tmp_path, toy_world, endpoint, monkeypatch, capfd
):
    monkeypatch.setenv("STEEROPS_CANARY_KEY", KEY)
    judge = judge_block(endpoint, tmp_path / "judge_cache", api_key_env="STEEROPS_CANARY_KEY")
    params = steer_params(tmp_path, toy_world, judge=judge)
    assert main(["steer", "--params", str(params), *SMALL]) == 0
    search = ["search", "--params", str(params), "--max-new-tokens", "6", "--layers", "1"]
    assert main([*search, "--trials", "2", "--subset", "8"]) == 0
    printed = capfd.readouterr()

    # sent: on every request, to the endpoint it names, as the bearer token only
    assert endpoint.requests and len(endpoint.headers) >= len(endpoint.requests)
    assert {headers["Authorization"] for headers in endpoint.headers} == {f"Bearer {KEY}"}
    assert not any(part in str(body) for body in endpoint.requests for part in PARTS)
    # and nowhere else: not printed, not in any file the two stages wrote (outputs, the
    # judge's cache, MLflow's store and artifacts, the Optuna study)
    for text in (printed.out, printed.err):
        assert not any(part in text for part in PARTS)
    files = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert any(path.name == "mlflow.db" for path in files)
    assert any(path.suffix == ".db" and "optuna" in path.name for path in files)
    assert any("judge_cache" in path.parts for path in files)
    leaked = [path for path in files if any(part.encode() in path.read_bytes() for part in PARTS)]
    assert leaked == []
