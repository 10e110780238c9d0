"""`steerops models`: each variant's identity file, the DVC dependency of every stage that
loads a model (a hub id is no path DVC can depend on)."""

from __future__ import annotations

import json

import pytest
import yaml

from steerops.cli import main
from steerops.models.fingerprint import model_fingerprint


def _world(tmp_path, base_id: str):
    folder = tmp_path / "m"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "model.safetensors").write_bytes(b"weights one")
    params = {
        "paths": {"out": str(tmp_path / "outputs")},
        "models": {"base": {"id": base_id}, "instruct": {"id": str(folder)}},
        "tracking": {"enabled": False},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return folder, ["models", "--params", str(tmp_path / "params.yaml")]


@pytest.mark.parametrize("cached", [False, True], ids=["small", "cached"])
def test_each_variant_gets_its_identity_and_new_weights_change_it(tmp_path, monkeypatch, cached):
    """`cached`: the weights count as a large file, whose hash is kept in the fingerprint
    cache (keyed by path, size, mtime and inode): rewritten, at the same size, they are
    read again, not served from it."""
    from steerops.models import fingerprint

    monkeypatch.setenv("STEEROPS_CACHE_DIR", str(tmp_path / "cache"))
    if cached:
        monkeypatch.setattr(fingerprint, "_CACHE_ABOVE", 0)
    folder, argv = _world(tmp_path, "m")  # relative to params: the same folder
    assert main(argv) == 0
    out = tmp_path / "outputs" / "models"
    base, instruct = (json.loads((out / f"{v}.json").read_text()) for v in ("base", "instruct"))
    assert base["id"] == "m" and instruct["id"] == str(folder)  # as params give them
    assert base["fingerprint"] == instruct["fingerprint"] == model_fingerprint(str(folder))
    stamp = (out / "base.json").stat().st_mtime_ns
    assert main(argv) == 0
    assert (out / "base.json").stat().st_mtime_ns == stamp  # the same model: not rewritten
    # download bookkeeping that `hf download --local-dir` stamps anew on every run, a lock:
    # the same model, not rewritten
    meta = folder / ".cache" / "huggingface" / "download" / "model.safetensors.metadata"
    meta.parent.mkdir(parents=True)
    meta.write_text("abc\n1764750000.1\n")
    (folder / "model.safetensors.lock").write_text("")
    assert main(argv) == 0
    assert (out / "base.json").stat().st_mtime_ns == stamp
    meta.write_text("abc\n1764750999.9\n")
    assert model_fingerprint(str(folder)) == base["fingerprint"]
    weights = str((folder / "model.safetensors").resolve())
    cache = fingerprint.cache_file()
    held = json.loads(cache.read_text()) if cache.exists() else {}
    assert sum(weights in key for key in held) == int(cached)  # large files only
    (folder / "model.safetensors").write_bytes(b"weights two")  # new weights, same name
    assert main(argv) == 0
    assert json.loads((out / "base.json").read_text())["fingerprint"] != base["fingerprint"]


def test_the_folder_kept_between_runs_holds_only_the_variants_params_name(tmp_path):
    """DVC keeps outputs/models between runs (a typo in params fails this stage first, and
    must not delete it): a variant params no longer name leaves no file behind; a failing
    run leaves the files as they were."""
    _, argv = _world(tmp_path, "m")
    assert main(argv) == 0
    out = tmp_path / "outputs" / "models"
    written = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(written) == {"base.json", "instruct.json"}
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["models"]["base"]["dtpye"] = "bfloat16"  # a typo: refused, nothing touched
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert main(argv) == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == written
    del params["models"]["base"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert main(argv) == 0
    assert [p.name for p in out.iterdir()] == ["instruct.json"]
    assert (out / "instruct.json").read_bytes() == written["instruct.json"]


def test_a_hub_id_the_machine_cannot_load_is_one_line_and_writes_nothing(
    tmp_path, monkeypatch, capsys
):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    _, argv = _world(tmp_path, "org/not-cached")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'org/not-cached' is not a local folder" in err[0], err
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("variant", ["base", "instruct"])
def test_the_pipeline_depends_on_identity_files_not_on_model_paths(variant):
    from pathlib import Path

    stages = yaml.safe_load((Path(__file__).parents[2] / "dvc.yaml").read_text())["stages"]
    deps = [d for stage in stages.values() for d in stage.get("deps", [])]
    assert f"${{models.{variant}.id}}" not in deps
    assert f"${{paths.out}}/models/{variant}.json" in deps
    assert stages["models"].get("always_changed") is True


def test_a_chat_template_file_is_part_of_the_identity_dvc_reruns_on(tmp_path):
    """A variant rendering prompts with a template file: its text's md5 is in the identity
    file, so an edit reruns the stages; a variant on its tokenizer's own keeps the file as
    it was (no key), so its stages are not rerun."""
    folder, argv = _world(tmp_path, "m")
    template = tmp_path / "t.jinja"
    template.write_text("{% for m in messages %}{{ m['content'] }}{% endfor %}")
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["models"]["base"]["chat_template"] = "t.jinja"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert main(argv) == 0
    out = tmp_path / "outputs" / "models"
    base, instruct = (json.loads((out / f"{v}.json").read_text()) for v in ("base", "instruct"))
    assert "chat_template_md5" not in instruct
    template.write_text("{% for m in messages %}[{{ m['content'] }}]{% endfor %}")
    assert main(argv) == 0
    edited = json.loads((out / "base.json").read_text())
    assert base["chat_template_md5"] != edited["chat_template_md5"]
    assert {k: v for k, v in edited.items() if k != "chat_template_md5"} == {
        k: v for k, v in base.items() if k != "chat_template_md5"
    }


@pytest.mark.parametrize("where", ["folder", "file"])
def test_a_model_id_that_is_no_model_folder_is_one_line_and_overwrites_nothing(
    tmp_path, capsys, where
):
    """`generate` refuses a folder without config.json (or a file) as the model: `models`
    does not record its identity either, over the good one the last run wrote."""
    folder, argv = _world(tmp_path, "m")
    assert main(argv) == 0
    out = tmp_path / "outputs" / "models"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    other = tmp_path / "not_a_model"
    if where == "folder":
        other.mkdir()
        (other / "notes.txt").write_text("data, not a model")
    else:
        other.write_text("a file")
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["models"]["base"]["id"] = "not_a_model"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert main(argv) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line == (
        f"steerops models: error: models.base.id: {other} is not a model folder "
        "(no config.json in it)"
    )
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
