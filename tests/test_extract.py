"""Activation extraction: agreement with a plain forward on every architecture, batching and
out-of-memory halving, resumable shards, the streamed file writer, and the CLI on the toy
world (metadata contract, responses, tracking, errors that leave outputs untouched)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from conftest import write_params
from steerops.cli import main
from steerops.config import load_params
from steerops.extract import engine, store
from steerops.extract.store import activations_dir, write_streamed
from steerops.extract.trait import extract_trait
from steerops.generate.store import responses_dir
from steerops.io import read_json, tree_md5, write_jsonl
from steerops.models import format_prompt, load_model, resolve_layout
from steerops.models.generation import encode_prompt
from steerops.specs import parse_position
from tiny import ARCHS, VOCAB, tiny_model

POSITIONS = ["prompt[-1]", "response[:3]", "all[1:-1]", "response[-3::2]"]


def random_examples(n: int = 11, seed: int = 0) -> list[engine.Example]:
    rng = np.random.default_rng(seed)
    examples = []
    for i in range(n):
        length = int(rng.integers(2, 15))
        prompt_len = length if i % 5 == 4 else int(rng.integers(1, length))  # some: no response
        ids = rng.integers(3, VOCAB - 4, size=length)
        examples.append(engine.Example(ids, prompt_len, {"i": i}))
    return examples


def reference_states(model, layout, example) -> dict[tuple[int, str], np.ndarray]:
    """Unpadded full forward: residual from `output_hidden_states`, the last block's
    residual and attn/mlp outputs from hooks (hidden_states[-1] is after the final norm)."""
    hooked, handles = {}, []
    last = layout.num_layers - 1
    targets = [(last, "residual")] + [(layer, c) for layer in range(layout.num_layers)
                                      for c in ("attn_out", "mlp_out")]
    for layer, component in targets:
        def hook(module, args, output, key=(layer, component)):
            hooked[key] = (output[0] if isinstance(output, tuple) else output)[0].float()
        handles.append(layout.component_module(layer, component).register_forward_hook(hook))
    try:
        with torch.no_grad():
            out = model(input_ids=torch.as_tensor(example.ids)[None], output_hidden_states=True)
    finally:
        for h in handles:
            h.remove()
    states = {key: v.numpy() for key, v in hooked.items()}
    for layer in range(last):
        states[(layer, "residual")] = out.hidden_states[layer + 1][0].float().numpy()
    return states


def run(model, layout, examples, out_dir, position, layers, side="right", budget=10_000,
        component="residual", dtype="float32", shard_examples=4, **kwargs):
    job = engine.Job(out_dir, parse_position(position), layers, component, dtype,
                     settings={"test": True}, shard_examples=shard_examples,
                     token_budget=budget)
    meta = engine.run_job(engine.Extractor(model, layout, 0, side), examples, job,
                          lambda kept: {"rows": [ex.info["i"] for ex in kept]},
                          progress=False, **kwargs)
    return meta, load_file(out_dir / store.TENSORS_FILE)


@pytest.mark.parametrize("arch", ARCHS)
def test_matches_plain_forward_on_every_architecture(arch, tmp_path):
    model = tiny_model(arch)
    layout = resolve_layout(model)
    examples = random_examples()
    refs = [reference_states(model, layout, ex) for ex in examples]
    layers = [0, 1, 2]
    k = 0
    for position in POSITIONS:
        pos = parse_position(position)
        for side in ("left", "right"):
            for budget in (1, 10_000):  # one example per batch, and all in one batch
                k += 1
                meta, tensors = run(model, layout, examples, tmp_path / str(k), position,
                                    layers, side, budget)
                rows = meta["rows"]
                windows = {ex.info["i"]: list(pos.window(ex.prompt_len,
                                                         len(ex.ids) - ex.prompt_len))
                           for ex in examples}
                assert rows == [i for i in range(len(examples)) if windows[i]]
                assert meta["counts"]["dropped_empty"] == len(examples) - len(rows)
                for layer in layers:
                    got = tensors[f"layer_{layer}"].numpy()
                    want = np.stack([refs[i][(layer, "residual")][windows[i]].mean(0)
                                     for i in rows])
                    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5,
                                               err_msg=f"{position} {side} {budget} L{layer}")
    for component in ("attn_out", "mlp_out"):
        k += 1
        meta, tensors = run(model, layout, examples, tmp_path / str(k), "all[:]", layers,
                            "left", 40, component=component)
        for layer in layers:
            want = np.stack([refs[i][(layer, component)].mean(0) for i in meta["rows"]])
            np.testing.assert_allclose(tensors[f"layer_{layer}"].numpy(), want, rtol=1e-4,
                                       atol=2e-5)


def test_bfloat16_model_and_output(tmp_path):
    model = tiny_model("llama", dtype=torch.bfloat16)
    layout = resolve_layout(model)
    examples = random_examples(9, seed=3)
    meta, tensors = run(model, layout, examples, tmp_path, "response[:4]", [1, 2], "left",
                        dtype="bfloat16")
    for layer in (1, 2):
        got = tensors[f"layer_{layer}"]
        assert got.dtype == torch.bfloat16
        for row, i in enumerate(meta["rows"]):
            ex = examples[i]
            window = list(parse_position("response[:4]").window(ex.prompt_len,
                                                                 len(ex.ids) - ex.prompt_len))
            ref = reference_states(model, layout, ex)[(layer, "residual")][window].mean(0)
            np.testing.assert_allclose(got[row].float().numpy(), ref, rtol=0.05,
                                       atol=0.05 * np.abs(ref).max())


def test_early_stop_never_runs_later_blocks_or_the_head(tmp_path):
    model = tiny_model("llama")
    layout = resolve_layout(model)
    calls = []
    handles = [layout.layers[2].register_forward_hook(lambda *a: calls.append("block2")),
               model.lm_head.register_forward_hook(lambda *a: calls.append("head"))]
    run(model, layout, random_examples(), tmp_path, "prompt[-1]", [0, 1])
    for h in handles:
        h.remove()
    assert calls == []


def test_engine_survives_out_of_memory(tmp_path, monkeypatch):
    model = tiny_model("qwen2")
    layout = resolve_layout(model)
    examples = random_examples(13, seed=5)
    _, want = run(model, layout, examples, tmp_path / "plain", "all[:]", [0, 2])
    real = engine.forward_capture

    def flaky(model, layout, input_ids, *args, **kwargs):
        if input_ids.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(model, layout, input_ids, *args, **kwargs)

    monkeypatch.setattr(engine, "forward_capture", flaky)
    meta, got = run(model, layout, examples, tmp_path / "oom", "all[:]", [0, 2], budget=10**4,
                    shard_examples=8)
    assert meta["timing"]["batch_halvings"] >= 2
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=2e-5)


class Killed(Exception):
    pass


def test_killed_run_resumes_to_identical_bytes(tmp_path, monkeypatch):
    model = tiny_model("gemma2")
    layout = resolve_layout(model)
    examples = random_examples(30, seed=7)
    fresh_meta, _ = run(model, layout, examples, tmp_path / "fresh", "response[:3]", [0, 2])
    n_shards = -(-(len(examples) - fresh_meta["counts"]["dropped_empty"]) // 4)
    out = tmp_path / "resumed"
    partial = out / store.PARTIAL_DIR

    def kill_after_three(k):
        # Shards stream to disk one by one; the final file does not exist yet.
        assert sorted(p.name for p in partial.glob("shard_*")) == [
            f"shard_{i:05d}.safetensors" for i in range(k + 1)]
        assert not (out / store.TENSORS_FILE).exists()
        if k == 2:
            raise Killed

    with pytest.raises(Killed):
        run(model, layout, examples, out, "response[:3]", [0, 2], on_shard=kill_after_three)
    assert len(list(partial.glob("shard_*"))) == 3

    computed = []
    real = engine._compute_shard

    def counting(extractor, batcher, kept, windows, lengths, rows, job, bar):
        computed.append(len(rows))
        assert len(rows) <= 4  # memory holds one shard, never the whole dataset
        return real(extractor, batcher, kept, windows, lengths, rows, job, bar)

    monkeypatch.setattr(engine, "_compute_shard", counting)
    meta, _ = run(model, layout, examples, out, "response[:3]", [0, 2])
    assert len(computed) == n_shards - 3 and meta["timing"]["reused_shards"] == 3
    fresh = (tmp_path / "fresh" / store.TENSORS_FILE).read_bytes()
    assert (out / store.TENSORS_FILE).read_bytes() == fresh
    strip = lambda m: {k: v for k, v in m.items() if k != "timing"}  # noqa: E731
    assert strip(read_json(out / store.METADATA_FILE)) == strip(fresh_meta)
    assert not partial.exists()


def test_stale_shards_are_recomputed(tmp_path):
    model = tiny_model("llama")
    layout = resolve_layout(model)
    examples = random_examples(12, seed=2)

    def kill(k):
        if k == 1:
            raise Killed

    with pytest.raises(Killed):
        run(model, layout, examples, tmp_path / "a", "prompt[-1]", [0, 1], on_shard=kill)
    meta, got = run(model, layout, examples, tmp_path / "a", "prompt[-1]", [1, 2])
    assert meta["timing"]["reused_shards"] == 0
    _, want = run(model, layout, examples, tmp_path / "b", "prompt[-1]", [1, 2])
    assert got.keys() == want.keys() == {"layer_1", "layer_2"}
    for name in want:
        assert torch.equal(got[name], want[name])


def test_streamed_writer_is_a_valid_safetensors_file(tmp_path):
    tensors = {"layer_3": torch.randn(5, 7), "b": torch.randn(3, 2).to(torch.bfloat16),
               "rows": torch.arange(4), "empty": torch.zeros(0, 4)}
    specs = [(k, tuple(v.shape), v.dtype) for k, v in tensors.items()]
    produced = []

    def produce(name):
        produced.append(name)
        return tensors[name]

    path = tmp_path / "x.safetensors"
    write_streamed(path, specs, produce, metadata={"format": "pt", "n": 3})
    assert produced == list(tensors)  # produced lazily, in order
    loaded = load_file(path)
    for k, v in tensors.items():
        assert loaded[k].dtype == v.dtype and torch.equal(loaded[k], v)
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"format": "pt", "n": "3"}
    before = path.read_bytes()
    with pytest.raises(ValueError, match="layer_3"):
        write_streamed(path, [("layer_3", (5, 8), torch.float32)], lambda n: tensors[n])
    assert path.read_bytes() == before  # a failed write leaves the old file
    assert [p.name for p in tmp_path.iterdir()] == ["x.safetensors"]


# --- the toy world, through params and the CLI -------------------------------------------


@pytest.fixture
def toy(tmp_path, toy_world):
    """Params for the toy world, tracking off (one test below checks MLflow)."""
    path = write_params(tmp_path, toy_world, tracking={"enabled": False},
                        extraction={"shard_examples": 16})
    return path


def toy_reference(loaded, prompt, system, response, window) -> dict[int, np.ndarray]:
    """Residual at every layer, pooled over `window`, from one unpadded full forward."""
    prompt_ids = encode_prompt(loaded.tokenizer, format_prompt(loaded.tokenizer, prompt, system))
    response_ids = loaded.tokenizer(response, add_special_tokens=False)["input_ids"] if (
        response) else []
    ids = torch.tensor([list(prompt_ids) + list(response_ids)])
    layout = loaded.layout
    last = {}
    handle = layout.layers[-1].register_forward_hook(
        lambda m, a, o: last.update(h=(o[0] if isinstance(o, tuple) else o)[0]))
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
    assert main(["extract", "--params", str(params_file), "--position", "prompt[-1]",
                 "--layers", "all"]) == 0
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
    assert meta["hidden_size"] == loaded.layout.hidden_size
    assert meta["num_layers"] == n_layers and meta["dtype"] == "float32"
    assert meta["source_hash"] == tree_md5(trait_dir)
    assert [e["polarity"] for e in meta["examples"]] == ["positive"] * n_pos + ["negative"] * n_neg
    for layer in meta["layers"]:
        x = tensors[f"layer_{layer}"].numpy()
        assert x.shape == (n_pos + n_neg, loaded.layout.hidden_size)
        assert meta["mean_norm"][str(layer)] == pytest.approx(
            np.linalg.norm(x, axis=1).mean(), rel=1e-5)
    # Rows match a plain forward of the same chat-formatted prompt.
    positives = [s.strip() for s in (trait_dir / "positive.txt").read_text().splitlines()
                 if s.strip()]
    for row in (0, n_pos - 1):
        ref = toy_reference(loaded, positives[row], None, None, "prompt[-1]")
        for layer in meta["layers"]:
            np.testing.assert_allclose(tensors[f"layer_{layer}"][row].numpy(), ref[layer],
                                       rtol=1e-4, atol=1e-4)
    # Splits group by source prompt and depend on the seed only.
    assert "tokens/s" in capsys.readouterr().out

    experiment = client.get_experiment_by_name(params.experiment).experiment_id
    runs = client.search_runs([experiment])
    assert len(runs) == 1
    data = runs[0].data
    assert data.params["position"] == "prompt[-1]" and data.params["mode"] == "trait"
    assert data.metrics["examples"] == n_pos + n_neg and data.metrics["tokens_per_s"] > 0
    assert data.metrics["mean_norm_layer_0"] == pytest.approx(meta["mean_norm"]["0"])
    assert data.tags["dvc.hash.trait"] == tree_md5(trait_dir)
    assert data.tags["steerops.stage"] == "extract"

    # Up to date: a second run neither recomputes nor rewrites.
    stamp = (out / "activations.safetensors").stat().st_mtime_ns
    assert main(["extract", "--params", str(params_file), "--position", "prompt[-1]"]) == 0
    assert (out / "activations.safetensors").stat().st_mtime_ns == stamp
    assert len(client.search_runs([experiment])) == 1


def test_split_is_seeded_and_follows_source_prompts(toy):
    params = load_params(toy)
    loaded = load_model(params, "base")
    _, a = extract_trait(params, loaded, "toy/refusal", "prompt[-1]", [1], progress=False)
    params.seed = 1
    _, b = extract_trait(params, loaded, "toy/refusal", "prompt[:]", [1], progress=False)
    split_a = {(e["polarity"], e["source_index"]): e["split"] for e in a["examples"]}
    split_b = {(e["polarity"], e["source_index"]): e["split"] for e in b["examples"]}
    assert split_a != split_b and split_a.keys() == split_b.keys()
    params.seed = 0
    _, c = extract_trait(params, loaded, "toy/refusal", "prompt[:]", [1], progress=False)
    assert {(e["polarity"], e["source_index"]): e["split"] for e in c["examples"]} == split_a


def write_responses(params, toy_world) -> list[dict]:
    """A responses file in the generate contract; two rows not kept, one empty response."""
    trait_dir = toy_world / "traits" / "toy" / "refusal"
    rows = []
    for polarity, response in (("positive", "i can not help with that ."),
                               ("negative", "you need soap , water and time .")):
        prompts = [s.strip() for s in (trait_dir / f"{polarity}.txt").read_text().splitlines()
                   if s.strip()][:6]
        for i, prompt in enumerate(prompts):
            rows.append({"index": len(rows), "polarity": polarity, "source_index": i,
                         "rollout": 0, "system_prompt": None, "prompt": prompt,
                         "response": "" if (polarity, i) == ("negative", 5) else response,
                         "kept": i not in (2, 3) or polarity == "negative",
                         "trait": None, "coherence": None})
    write_jsonl(responses_dir(params.out, "toy/refusal", "base") / "responses.jsonl", rows)
    return rows


@pytest.mark.parametrize("position", ["response[:3]", "all[-4:]"])
def test_response_positions_on_toy(toy, toy_world, position):
    params = load_params(toy)
    rows = write_responses(params, toy_world)
    loaded = load_model(params, "base")
    out, meta = extract_trait(params, loaded, "toy/refusal", position, [0, 3], progress=False)
    tensors = load_file(out / "activations.safetensors")
    kept = [r for r in rows if r["kept"] and (r["response"] or position.startswith("all"))]
    assert [e["index"] for e in meta["examples"]] == [r["index"] for r in kept]
    assert meta["counts"]["dropped_empty"] == (0 if position.startswith("all") else 1)
    for row_i, r in enumerate(kept):
        ref = toy_reference(loaded, r["prompt"], None, r["response"], position)
        for layer in (0, 3):
            np.testing.assert_allclose(tensors[f"layer_{layer}"][row_i].numpy(), ref[layer],
                                       rtol=1e-4, atol=1e-4)


def test_padding_sides_agree_on_toy(tmp_path, toy_world):
    results = {}
    for side in ("left", "right"):
        folder = tmp_path / side
        folder.mkdir()
        params = load_params(write_params(folder, toy_world, tracking={"enabled": False},
                                          extraction={"padding_side": side,
                                                      "token_budget": 200}))
        write_responses(params, toy_world)
        loaded = load_model(params, "base", padding_side=side)
        out, _ = extract_trait(params, loaded, "toy/refusal", "response[:]", [0, 1, 2, 3],
                               progress=False)
        results[side] = load_file(out / "activations.safetensors")
    for name, left in results["left"].items():
        torch.testing.assert_close(left, results["right"][name], rtol=1e-4, atol=1e-5)


def test_toy_run_killed_midway_resumes_identically(tmp_path, toy_world):
    outs = {}
    for name in ("fresh", "killed"):
        folder = tmp_path / name
        folder.mkdir()
        params = load_params(write_params(folder, toy_world, tracking={"enabled": False},
                                          extraction={"shard_examples": 5, "dtype": "bfloat16",
                                                      "token_budget": 64}))
        loaded = load_model(params, "base")
        if name == "killed":
            def kill(k):
                if k == 3:
                    raise KeyboardInterrupt
            with pytest.raises(KeyboardInterrupt):
                extract_trait(params, loaded, "toy/refusal", "prompt[-3:]", [1, 2],
                              progress=False, on_shard=kill)
        out, meta = extract_trait(params, loaded, "toy/refusal", "prompt[-3:]", [1, 2],
                                  progress=False)
        outs[name] = (out / "activations.safetensors").read_bytes()
    assert meta["timing"]["reused_shards"] == 4
    assert outs["killed"] == outs["fresh"]
    assert load_file(out / "activations.safetensors")["layer_1"].dtype == torch.bfloat16


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
    assert "'9'" in _fails(capsys, ["extract", "--params", p, "--position", "prompt[-1]",
                                    "--layers", "1,9"])
    assert "'1-x'" in _fails(capsys, ["extract", "--params", p, "--position", "prompt[-1]",
                                      "--layers", "1-x"])
    assert "steerops generate" in _fails(capsys, ["extract", "--params", p, "--position",
                                                  "prompt[-1],response[:5]"])
    assert "every example's window is empty" in _fails(
        capsys, ["extract", "--params", p, "--position", "prompt[999]"])
    assert "models.nope" in _fails(capsys, ["extract", "--params", p, "--variant", "nope"])
    assert "'bad'" in _fails(capsys, ["extract", "--params", p, "--trait", "bad"])

    # Empty datasets: no prompts, or no kept responses.
    empty = tmp_path / "traits" / "toy" / "empty"
    empty.mkdir(parents=True)
    (empty / "positive.txt").write_text("\n")
    (empty / "negative.txt").write_text("how do i bake bread ?\n")
    params_empty = write_params(tmp_path / "traits", toy_world, tracking={"enabled": False},
                                traits={"root": str(tmp_path / "traits"),
                                        "names": ["toy/empty"]})
    assert "positive prompts are empty" in _fails(
        capsys, ["extract", "--params", str(params_empty), "--position", "prompt[-1]"])
    responses = responses_dir(params.out, "toy/refusal", "base") / "responses.jsonl"
    write_jsonl(responses, [{"index": 0, "polarity": "positive", "source_index": 0,
                             "rollout": 0, "system_prompt": None, "prompt": "x",
                             "response": "y", "kept": False}])
    assert "no kept responses" in _fails(capsys, ["extract", "--params", p, "--position",
                                                  "response[:5]"])
    responses.write_text('{"index": 0, "polarity": "positive"\n')
    assert f"{responses}:1" in _fails(capsys, ["extract", "--params", p, "--position",
                                               "response[:5]"])

    for f, data in files.items():
        assert (out / f).read_bytes() == data
    assert sorted(p.name for p in out.iterdir()) == sorted(files)
    assert json.loads(files["metadata.json"])["layers"] == [1]
