"""`steerops extract` on the toy world: tracked runs, and errors that keep outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import write_params
from steerops.cli import main
from steerops.config import load_params
from steerops.extract.store import activations_dir, prompts_md5
from steerops.generate.store import responses_dir
from steerops.io import read_json, write_jsonl
from steerops.models.fingerprint import model_fingerprint
from steerops.models.generation import encode_prompt, format_prompt
from steerops.models.loading import load_model
from steerops.specs import parse_position
from steerops.tracking.lineage import dvc_md5
from steerops.traits import load_trait


@pytest.fixture
def toy(tmp_path, toy_world):
    """Params for the toy world, tracking off (one test below checks MLflow)."""
    path = write_params(
        tmp_path, toy_world, tracking={"enabled": False}, extraction={"shard_examples": 16}
    )
    return path


def toy_reference(loaded, prompt, system, response, window) -> dict[int, np.ndarray]:
    """Residual at every layer, pooled over `window`, from one unpadded full forward."""
    prompt_ids = encode_prompt(loaded.tokenizer, format_prompt(loaded.tokenizer, prompt, system))
    response_ids = (
        loaded.tokenizer(response, add_special_tokens=False)["input_ids"] if (response) else []
    )
    ids = torch.tensor([list(prompt_ids) + list(response_ids)])
    layout = loaded.layout
    last = {}
    handle = layout.layers[-1].register_forward_hook(
        lambda m, a, o: last.update(h=(o[0] if isinstance(o, tuple) else o)[0])
    )
    with torch.no_grad():
        out = loaded.model(input_ids=ids, output_hidden_states=True)
    handle.remove()
    cols = list(parse_position(window).window(len(prompt_ids), len(response_ids)))
    states = [h[0] for h in out.hidden_states[1:-1]] + [last["h"]]
    return {layer: s[cols].float().numpy().mean(0) for layer, s in enumerate(states)}


def tracking_client(monkeypatch, folder):
    """An MLflow client on `folder`'s database. mlflow.set_tracking_uri also exports
    MLFLOW_TRACKING_URI, which would leak into later tests: pin it here so it is undone."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return MlflowClient(tracking_uri=uri)


def test_cli_prompt_position_on_toy_with_tracking(tmp_path, toy_world, capsys, monkeypatch):
    client = tracking_client(monkeypatch, tmp_path)
    params_file = write_params(tmp_path, toy_world, extraction={"val_fraction": 0.25})
    assert (
        main(
            ["extract", "--params", str(params_file), "--position", "prompt[-1]", "--layers", "all"]
        )
        == 0
    )
    params = load_params(params_file)
    out = activations_dir(params.out, "toy/refusal", "base", "prompt[-1]", "residual")
    meta = read_json(out / "metadata.json")
    tensors = load_file(out / "activations.safetensors")
    loaded = load_model(params, "base")
    trait_dir = toy_world / "traits" / "toy" / "refusal"
    n_pos = len([s for s in (trait_dir / "positive.txt").read_text().splitlines() if s.strip()])
    n_neg = len([s for s in (trait_dir / "negative.txt").read_text().splitlines() if s.strip()])
    n_layers = loaded.layout.num_layers
    assert meta["layers"] == list(range(n_layers)) == [int(k[6:]) for k in tensors]
    assert meta["counts"]["positive"] == n_pos and meta["counts"]["negative"] == n_neg
    assert meta["counts"]["val"] == round(0.25 * n_pos) + round(0.25 * n_neg)
    assert meta["counts"]["train"] + meta["counts"]["val"] == n_pos + n_neg
    assert meta["model"]["variant"] == "base" and meta["model"]["id"] == str(toy_world / "model")
    # a model folder outside the project folder keeps its full path (inside, a relative one)
    assert Path(meta["model"]["source"]) == (toy_world / "model").resolve()
    # the weights' content, which probe reuse compares against the folder as it is now
    assert meta["model"]["weights"] == model_fingerprint(str(toy_world / "model"))
    assert meta["hidden_size"] == loaded.layout.hidden_size
    assert meta["num_layers"] == n_layers and meta["dtype"] == "float32"
    # the prompts it read, not the trait's other files
    assert meta["source_hash"] == prompts_md5(load_trait(toy_world / "traits", "toy/refusal"))
    assert [e["polarity"] for e in meta["examples"]] == ["positive"] * n_pos + ["negative"] * n_neg
    for layer in meta["layers"]:
        x = tensors[f"layer_{layer}"].numpy()
        assert x.shape == (n_pos + n_neg, loaded.layout.hidden_size)
        assert meta["mean_norm"][str(layer)] == pytest.approx(
            np.linalg.norm(x, axis=1).mean(), rel=1e-5
        )
    # Rows match a plain forward of the same chat-formatted prompt.
    positives = [
        s.strip() for s in (trait_dir / "positive.txt").read_text().splitlines() if s.strip()
    ]
    for row in (0, n_pos - 1):
        ref = toy_reference(loaded, positives[row], None, None, "prompt[-1]")
        for layer in meta["layers"]:
            np.testing.assert_allclose(
                tensors[f"layer_{layer}"][row].numpy(), ref[layer], rtol=1e-4, atol=1e-4
            )
    # Splits group by source prompt and depend on the seed only.
    assert "tokens/s" in capsys.readouterr().out

    experiment = client.get_experiment_by_name(params.experiment).experiment_id
    runs = client.search_runs([experiment])
    assert len(runs) == 1
    data = runs[0].data
    assert data.params["position"] == "prompt[-1]" and data.params["mode"] == "trait"
    assert data.metrics["examples"] == n_pos + n_neg and data.metrics["tokens_per_s"] > 0
    assert data.metrics["mean_norm_layer_0"] == pytest.approx(meta["mean_norm"]["0"])
    assert data.tags["dvc.hash.trait"] == dvc_md5(trait_dir)  # as DVC hashes the folder
    assert data.tags["steerops.stage"] == "extract"

    # Up to date: a second run neither recomputes nor rewrites.
    stamp = (out / "activations.safetensors").stat().st_mtime_ns
    assert main(["extract", "--params", str(params_file), "--position", "prompt[-1]"]) == 0
    assert (out / "activations.safetensors").stat().st_mtime_ns == stamp
    assert len(client.search_runs([experiment])) == 1


def _fails(capsys, argv) -> str:
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    # One error line, last (weight-loading progress bars may precede it).
    assert [line for line in lines if "error" in line] == lines[-1:]
    assert lines[-1].startswith("steerops extract: error: ")
    return lines[-1]


def test_cli_errors_leave_outputs_untouched(tmp_path, toy_world, toy, capsys):
    p = str(toy)
    assert main(["extract", "--params", p, "--position", "prompt[-1]", "--layers", "1"]) == 0
    params = load_params(toy)
    out = activations_dir(params.out, "toy/refusal", "base", "prompt[-1]", "residual")
    files = {f: (out / f).read_bytes() for f in ("activations.safetensors", "metadata.json")}
    capsys.readouterr()

    assert "'resp'" in _fails(capsys, ["extract", "--params", p, "--position", "resp[-1]"])
    assert "'9'" in _fails(
        capsys, ["extract", "--params", p, "--position", "prompt[-1]", "--layers", "1,9"]
    )
    assert "'1-x'" in _fails(
        capsys, ["extract", "--params", p, "--position", "prompt[-1]", "--layers", "1-x"]
    )
    assert "steerops generate" in _fails(
        capsys, ["extract", "--params", p, "--position", "prompt[-1],response[:5]"]
    )
    assert "every example's window is empty" in _fails(
        capsys, ["extract", "--params", p, "--position", "prompt[999]"]
    )
    assert "models.nope" in _fails(capsys, ["extract", "--params", p, "--variant", "nope"])
    assert "'bad'" in _fails(capsys, ["extract", "--params", p, "--trait", "bad"])

    # Empty datasets: no prompts, or no kept responses.
    empty = tmp_path / "traits" / "toy" / "empty"
    empty.mkdir(parents=True)
    (empty / "positive.txt").write_text("\n")
    (empty / "negative.txt").write_text("how do i bake bread ?\n")
    params_empty = write_params(
        tmp_path / "traits",
        toy_world,
        tracking={"enabled": False},
        traits={"root": str(tmp_path / "traits"), "names": ["toy/empty"]},
    )
    assert "positive prompts are empty" in _fails(
        capsys, ["extract", "--params", str(params_empty), "--position", "prompt[-1]"]
    )
    responses = responses_dir(params.out, "toy/refusal", "base") / "responses.jsonl"
    write_jsonl(
        responses,
        [
            {
                "index": 0,
                "polarity": "positive",
                "source_index": 0,
                "rollout": 0,
                "system_prompt": None,
                "prompt": "x",
                "response": "y",
                "kept": False,
            }
        ],
    )
    assert "no kept responses" in _fails(
        capsys, ["extract", "--params", p, "--position", "response[:5]"]
    )
    # every positive dropped by vetting, the negatives kept: no direction to extract
    negative = {"index": 1, "polarity": "negative", "source_index": 0, "rollout": 0}
    negative |= {"system_prompt": None, "prompt": "x", "response": "z", "kept": True}
    with open(responses, "a") as f:
        f.write(json.dumps(negative) + "\n")
    assert "no kept positive responses (vetting dropped all 1)" in _fails(
        capsys, ["extract", "--params", p, "--position", "response[:5]"]
    )
    responses.write_text('{"index": 0, "polarity": "positive"\n')
    assert f"{responses}:1" in _fails(
        capsys, ["extract", "--params", p, "--position", "response[:5]"]
    )

    for f, data in files.items():
        assert (out / f).read_bytes() == data
    assert sorted(p.name for p in out.iterdir()) == sorted(files)
    assert json.loads(files["metadata.json"])["layers"] == [1]
