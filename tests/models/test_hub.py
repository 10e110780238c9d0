"""A hub id the machine cannot load (not cached, hub offline or unreachable) and a mistyped
local path with a hub id's shape: one line before any run opens, never a download attempt."""

from __future__ import annotations

import http.server
import threading

import pytest
import yaml

from steerops.cli import main
from steerops.config import load_params
from steerops.errors import SteeropsError
from steerops.models import hub
from steerops.models.loading import check_variant, model_source

PROBE = hub._unreachable


@pytest.fixture(autouse=True)
def _empty_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    PROBE.cache_clear()


def _params(tmp_path, model_id: str):
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump({"models": {"base": {"id": model_id}}, "tracking": {"enabled": False}})
    )
    return load_params(tmp_path / "params.yaml")


def _no_network(monkeypatch):
    def refuse(endpoint):
        raise AssertionError(f"contacted {endpoint}")

    monkeypatch.setattr(hub, "_unreachable", refuse)


def test_a_mistyped_local_path_is_not_sent_to_the_hub(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()  # data/smollm2 is the folder; data/smolm2 the typo
    _no_network(monkeypatch)
    with pytest.raises(SteeropsError, match=r"models\.base\.id: model not found: .*data/smolm2$"):
        check_variant(_params(tmp_path, "data/smolm2"), "base")


def test_an_uncached_hub_id_offline_is_one_line(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    _no_network(monkeypatch)
    with pytest.raises(SteeropsError, match=r"'org/model' is not a local folder .*HF_HUB_OFFLINE"):
        check_variant(_params(tmp_path, "org/model"), "base")


def test_an_uncached_hub_id_with_the_hub_unreachable_is_one_line(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens
    with pytest.raises(SteeropsError, match=r"'gpt2' is not a local folder .* is not reachable"):
        check_variant(_params(tmp_path, "gpt2"), "base")


def test_a_cached_or_downloadable_hub_id_is_its_source(tmp_path, monkeypatch):
    from huggingface_hub import constants

    snapshot = tmp_path / "hf-cache" / "models--org--model" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("a" * 40)
    _no_network(monkeypatch)  # in the cache: the hub is not asked
    assert model_source(_params(tmp_path, "org/model"), "base") == "org/model"

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            self.send_error(404)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(hub, "_unreachable", PROBE)
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        # not cached, the hub answers: transformers downloads it as it always did
        assert model_source(_params(tmp_path, "org/other"), "base") == "org/other"
    finally:
        server.shutdown()


def test_the_stage_stops_before_its_run_opens(tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump(
            {
                "models": {"instruct": {"id": "google/gemma-3-4b-it"}},
                "calibration": {"variant": "instruct", "prompts": "prompts.jsonl"},
            }
        )
    )
    (tmp_path / "prompts.jsonl").write_text('{"prompt": "hi"}\n')
    assert main(["calibrate", "--params", str(tmp_path / "params.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "models.instruct.id: 'google/gemma-3-4b-it'" in err[0]
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "outputs").exists()
