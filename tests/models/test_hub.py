"""A hub id the machine cannot load (not cached, hub offline or unreachable) and a mistyped
local path with a hub id's shape: one line before any run opens, never a download attempt;
one whose snapshot is complete in the cache loads from it without a connection."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

import steerops
from steerops.cli import main
from steerops.config import load_params
from steerops.errors import SteeropsError
from steerops.models import hub, loading
from steerops.models.fingerprint import HUB, model_fingerprint, model_label
from steerops.models.loading import check_variant, model_source
from steerops.toy.tokenizer import build_tokenizer
from tiny import tiny_model

PROBE = hub._unreachable
SRC = str(Path(steerops.__file__).resolve().parents[1])  # the steerops under test
COMPLETE = {"config.json": b"{}", "tokenizer.json": b"{}", "model.safetensors": b"w"}


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


def _cache(cache: Path, repo_id: str, files: dict[str, bytes], rev: str, main: bool = True):
    """`files` as the hub cache holds a revision: blobs named by their hash, the snapshot
    folder of links to them, and `refs/main` naming the revision when `main`."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / rev
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True)
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
    if main:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(rev)
    return snapshot


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


def test_a_revision_the_cache_lacks_is_named_where_the_cache_holds_another(tmp_path, monkeypatch):
    from huggingface_hub import constants

    snapshot = _cache(tmp_path / "hf-cache", "org/model", COMPLETE, "a" * 40)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    _no_network(monkeypatch)
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump(
            {
                "models": {"base": {"id": "org/model", "revision": "v9"}},
                "tracking": {"enabled": False},
            }
        )
    )
    with pytest.raises(SteeropsError) as error:
        check_variant(load_params(tmp_path / "params.yaml"), "base")
    assert str(error.value) == (
        "models.base.id: 'org/model' is not in the Hugging Face cache at revision 'v9' "
        "(models.base.revision; the cache holds another revision of it), and HF_HUB_OFFLINE "
        "is set"
    )
    # a cache with no refs/main, only another branch's snapshot: the same
    (tmp_path / "hf-cache" / "models--org--model" / "refs" / "main").rename(
        tmp_path / "hf-cache" / "models--org--model" / "refs" / "v1"
    )
    with pytest.raises(SteeropsError, match="at revision 'v9' .* holds another revision"):
        check_variant(load_params(tmp_path / "params.yaml"), "base")
    # the short hash of the commit it holds is no other revision: read offline
    local = tmp_path / "org" / "model"
    assert hub.hub_snapshot("org/model", "aaaaaaa", local, "base") == snapshot


def test_an_uncached_hub_id_with_the_hub_unreachable_is_one_line(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens
    with pytest.raises(SteeropsError, match=r"'gpt2' is not a local folder .* is not reachable"):
        check_variant(_params(tmp_path, "gpt2"), "base")


def test_a_cached_or_downloadable_hub_id_is_its_source(tmp_path, monkeypatch):
    from huggingface_hub import constants

    _cache(tmp_path / "hf-cache", "org/model", COMPLETE, "a" * 40)
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


@pytest.mark.parametrize(
    "files",
    [
        {"config.json": b"{}", "tokenizer.json": b"{}"},  # a config read, weights never fetched
        {"config.json": b"{}", "model.safetensors": b"w"},  # no tokenizer
        {  # a sharded download cut short
            "config.json": b"{}",
            "tokenizer_config.json": b"{}",
            "model.safetensors.index.json": json.dumps(
                {"weight_map": {"a": "model-1-of-2.safetensors", "b": "model-2-of-2.safetensors"}}
            ).encode(),
            "model-1-of-2.safetensors": b"w",
        },
    ],
)
def test_a_snapshot_missing_files_loads_by_its_id_as_before(tmp_path, monkeypatch, files):
    """Read from its folder alone, such a snapshot would fail where the hub would have sent
    the rest: it is read by its id, as before, when the hub answers; when it cannot be used
    (offline, or an endpoint that never answers) it is one line naming what is missing,
    rather than a load that waits on the hub."""
    from huggingface_hub import constants

    snapshot = _cache(tmp_path / "hf-cache", "org/model", files, "a" * 40)
    params = _params(tmp_path, "org/model")
    missing = "the tokenizer" if "model.safetensors" in files else "weights"
    monkeypatch.setattr(hub, "_unreachable", lambda endpoint: "timed out")
    with pytest.raises(SteeropsError, match=rf"only partly in .*\({missing} missing\).*timed out"):
        loading._source(params, "base")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(SteeropsError, match=r"only partly in .*HF_HUB_OFFLINE is set"):
        loading._source(params, "base")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "_unreachable", lambda endpoint: None)  # the hub answers
    assert hub.cached_snapshot("org/model", None) is None
    assert loading._source(params, "base")[:2] == ("org/model", "org/model")
    if "model-1-of-2.safetensors" in files:  # the last shard arrives: complete
        (snapshot / "model-2-of-2.safetensors").write_bytes(b"w")
        assert hub.cached_snapshot("org/model", None) == snapshot
        assert loading._source(params, "base")[:2] == ("org/model", str(snapshot))


def test_damaged_weights_in_the_cache_are_one_line_before_any_run_opens(tmp_path):
    _cache(tmp_path / "hf-cache", "org/model", COMPLETE, "a" * 40)  # b"w" is no safetensors
    with pytest.raises(SteeropsError, match=r"models\.base\.id: .*/snapshots/a{40}/model\.safe"):
        check_variant(_params(tmp_path, "org/model"), "base")


def test_a_hub_ids_folder_template_is_read_from_the_cache_only(tmp_path, monkeypatch):
    """A hub id loading by its id (snapshot incomplete) finds a processor's
    chat_template.json in the revision the cache holds, and nothing where the cache holds
    none, without asking the hub."""
    from steerops.models.chat_template import folder_chat_template

    def no_download(*args, **kwargs):
        raise AssertionError("asked the hub")

    monkeypatch.setattr("huggingface_hub.hf_hub_download", no_download)
    template = json.dumps({"chat_template": "{{ messages[0].content }}"}).encode()
    _cache(tmp_path / "hf-cache", "org/model", {"chat_template.json": template}, "a" * 40)
    _cache(tmp_path / "hf-cache", "org/model", {"config.json": b"{}"}, "b" * 40, main=False)
    assert folder_chat_template("org/model") == "{{ messages[0].content }}"
    assert folder_chat_template("org/model", "a" * 40) == "{{ messages[0].content }}"
    assert folder_chat_template("org/model", "b" * 40) is None
    assert folder_chat_template("org/uncached") is None


def test_the_cache_revision_read_is_the_one_its_refs_name(tmp_path):
    cache = tmp_path / "hf-cache"
    old = _cache(cache, "org/model", COMPLETE, "a" * 40)
    new = _cache(cache, "org/model", {**COMPLETE, "model.safetensors": b"v2"}, "b" * 40)
    (new.parents[1] / "refs" / "v1").write_text("a" * 40)
    assert hub.cached_snapshot("org/model", None) == new  # refs/main
    assert hub.cached_snapshot("org/model", "v1") == old  # a branch or tag the cache knows
    assert hub.cached_snapshot("org/model", "a" * 40) == old  # a commit
    assert hub.cached_snapshot("org/model", "v2") is None  # one it does not: the hub's
    # a short commit hash names the one snapshot whose commit starts with it
    short = _cache(
        cache, "org/model", {**COMPLETE, "model.safetensors": b"v3"}, "3b1c0e2" * 5 + "abcde"
    )
    assert hub.cached_snapshot("org/model", "3b1c0e2") == short
    assert hub.cached_snapshot("org/model", "aaaaaaa") == old
    assert hub.cached_snapshot("org/model", "aaaaaa") is None  # under 7 digits: no commit
    _cache(cache, "org/model", COMPLETE, "3b1c0e2f" + "0" * 32)
    assert hub.cached_snapshot("org/model", "3b1c0e2") is None  # two commits: neither
    assert hub.cached_snapshot("org/model", "3b1c0e23") == short


def test_a_cached_hub_id_is_fingerprinted_by_the_revision_its_refs_name(tmp_path):
    """Cached steering logs and judge scores are keyed by the model's fingerprint: a
    `refs/main` moved to new weights must change it (it read `hub` for every hub id), the
    same files in another cache must not, and a pinned revision reads its own snapshot."""
    cache = tmp_path / "hf-cache"
    old = _cache(cache, "org/model", COMPLETE, "a" * 40)
    first, label = model_fingerprint("org/model"), model_label("org/model", None)
    assert first not in (HUB, model_fingerprint("org/other"))  # nothing cached: `hub`
    assert (
        model_fingerprint("org/other") == HUB and model_label("org/other", "v1") == "org/other@v1"
    )
    assert label.startswith("org/model-") and str(tmp_path) not in label

    _cache(cache, "org/model", {**COMPLETE, "model.safetensors": b"v2"}, "b" * 40)
    assert model_fingerprint("org/model") != first  # refs/main now names the new weights
    assert model_label("org/model", None) != label
    assert model_fingerprint("org/model", "a" * 40) == first  # pinned: the old snapshot
    # the label names the content: the old snapshot pinned by commit is the label it had
    # as refs/main (a judge's cached scores stay theirs), not a label of its own
    assert model_label("org/model", "a" * 40) == label

    (old.parents[1] / "refs" / "main").write_text("a" * 40)  # moved back
    assert model_fingerprint("org/model") == first
    assert model_label("org/model", "main") == model_label("org/model", None) == label
    assert model_fingerprint(str(old)) == first  # the snapshot folder read as a local folder

    from huggingface_hub import constants

    elsewhere = tmp_path / "other-cache"  # another machine's cache, the same files
    _cache(elsewhere, "org/model", COMPLETE, "c" * 40)
    constants.HF_HUB_CACHE = str(elsewhere)  # the fixture's monkeypatch restores it
    assert model_fingerprint("org/model") == first


def test_the_identity_record_names_the_snapshot_commit_read(tmp_path, monkeypatch):
    """With no revision pinned, the record still says which hub revision was read: the
    cache's snapshot commit that refs/main names, or the pinned one's; none where the cache
    does not hold the id whole, nor for a local folder."""
    from steerops.models.identity import variant_identity

    cache = tmp_path / "hf-cache"
    _cache(cache, "org/model", COMPLETE, "a" * 40)
    record = variant_identity(_params(tmp_path, "org/model"), "base")
    assert record["revision"] is None and record["snapshot"] == "a" * 40
    new = _cache(cache, "org/model", {**COMPLETE, "model.safetensors": b"v2"}, "b" * 40)
    assert variant_identity(_params(tmp_path, "org/model"), "base")["snapshot"] == "b" * 40
    (new.parents[1] / "refs" / "v1").write_text("a" * 40)
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump(
            {
                "models": {"base": {"id": "org/model", "revision": "v1"}},
                "tracking": {"enabled": False},
            }
        )
    )
    pinned = variant_identity(load_params(tmp_path / "params.yaml"), "base")
    assert (pinned["revision"], pinned["snapshot"]) == ("v1", "a" * 40)
    assert "snapshot" not in variant_identity(_params(tmp_path, str(new)), "base")
    # a hub id the cache holds in part, where the hub is reachable: loaded by its id
    _cache(cache, "org/partial", {"config.json": b"{}"}, "c" * 40)
    monkeypatch.setattr("steerops.models.loading.model_source", lambda params, v: "org/partial")
    record = variant_identity(_params(tmp_path, "org/partial"), "base")
    assert record["fingerprint"] == HUB and "snapshot" not in record


class _CountingHub:
    """An endpoint that counts the connections made to it and closes each at once."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:  # closed
                return
            self.connections += 1
            conn.close()


_LOAD = """
import json, sys
from steerops.config import load_params
from steerops.models.loading import check_variant, load_model, model_shape
params, out = load_params(sys.argv[1]), {}
for variant in params.models:
    check_variant(params, variant)
    loaded = load_model(params, variant)
    out[variant] = {
        "source": loaded.source,
        "layers": model_shape(params, variant).num_layers,
        "embed": loaded.model.get_input_embeddings().weight.sum().item(),
        "max_length": loaded.model.generation_config.max_length,
        "template": bool(loaded.tokenizer.chat_template),
    }
print(json.dumps(out))
"""


def test_a_cached_hub_id_loads_without_connecting_to_the_hub(tmp_path):
    """HF_HUB_OFFLINE unset on a machine whose hub endpoint does not serve: a hub id whose
    snapshot is complete in the cache loads (config, tokenizer and chat template, weights,
    generation config, the pre-load checks) without one connection. (It asked the hub
    first: 9 to 16 connections here, then no tokenizer; with the endpoint refusing
    connections it loaded after about 2 minutes of retries.)"""

    def files(seed: int) -> dict[str, bytes]:
        folder = tmp_path / f"model-{seed}"
        tiny_model("llama", seed=seed).save_pretrained(folder)
        build_tokenizer(["hello", "world"]).save_pretrained(folder)
        generation = json.loads((folder / "generation_config.json").read_text())
        (folder / "generation_config.json").write_text(json.dumps({**generation, "max_length": 77}))
        return {p.name: p.read_bytes() for p in folder.iterdir()}

    cache = tmp_path / "hf-cache"
    _cache(cache, "org/tiny", files(1), "a" * 40, main=False)  # an older revision
    _cache(cache, "org/tiny", files(0), "b" * 40)
    models = {"base": {"id": "org/tiny"}, "pinned": {"id": "org/tiny", "revision": "a" * 40}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"models": models}))
    hub_ = _CountingHub()
    # none of the user's hub settings (HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE would hide it)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env.update(
        HF_HOME=str(tmp_path / "hf-home"),
        HF_HUB_CACHE=str(cache),
        HF_ENDPOINT=hub_.url,
        PYTHONPATH=os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]),
    )
    args = [sys.executable, "-c", _LOAD, str(tmp_path / "params.yaml")]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    hub_.server.close()
    assert hub_.connections == 0 and done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    want = {
        seed: tiny_model("llama", seed=seed).model.embed_tokens.weight.sum().item()
        for seed in (0, 1)
    }
    assert got["base"]["embed"] == pytest.approx(want[0])  # refs/main's revision
    assert got["pinned"]["embed"] == pytest.approx(want[1])
    for variant in got.values():
        assert variant["source"] == "org/tiny" and variant["layers"] == 3
        assert variant["max_length"] == 77 and variant["template"]
