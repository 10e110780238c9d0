"""Trait mode on the toy world: prompt and response windows against a plain forward, the seeded
split, padding sides, resuming."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import write_params
from steerops.config import load_params
from steerops.extract.trait import extract_trait
from steerops.generate.store import responses_dir
from steerops.io import read_json, write_jsonl
from steerops.models.generation import encode_prompt, format_prompt
from steerops.models.loading import load_model
from steerops.specs import parse_position


@pytest.fixture
def toy(tmp_path, toy_world):
    """Params for the toy world, tracking off (one test below checks MLflow)."""
    path = write_params(
        tmp_path, toy_world, tracking={"enabled": False}, extraction={"shard_examples": 16}
    )
    return path


def stored(meta: dict) -> dict:
    """An extraction's metadata as its file holds it: the run's timing is not written."""
    return {k: v for k, v in meta.items() if k != "timing"}


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
    for polarity, response in (
        ("positive", "i can not help with that ."),
        ("negative", "you need soap , water and time ."),
    ):
        prompts = [
            s.strip() for s in (trait_dir / f"{polarity}.txt").read_text().splitlines() if s.strip()
        ][:6]
        for i, prompt in enumerate(prompts):
            rows.append(
                {
                    "index": len(rows),
                    "polarity": polarity,
                    "source_index": i,
                    "rollout": 0,
                    "system_prompt": None,
                    "prompt": prompt,
                    "response": "" if (polarity, i) == ("negative", 5) else response,
                    "kept": i not in (2, 3) or polarity == "negative",
                    "trait": None,
                    "coherence": None,
                }
            )
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
        # the metadata says which tokens the row pooled, as an unpadded encoding finds them
        prompt = encode_prompt(loaded.tokenizer, format_prompt(loaded.tokenizer, r["prompt"]))
        response = loaded.tokenizer(r["response"], add_special_tokens=False)["input_ids"]
        window = parse_position(position).window(len(prompt), len(response) if r["response"] else 0)
        assert meta["examples"][row_i]["window"] == [window.start, window.stop]
        assert meta["examples"][row_i]["tokens"] == len(window) > 0
        ref = toy_reference(loaded, r["prompt"], None, r["response"], position)
        for layer in (0, 3):
            np.testing.assert_allclose(
                tensors[f"layer_{layer}"][row_i].numpy(), ref[layer], rtol=1e-4, atol=1e-4
            )
    # finished, with an example dropped: up to date, not extracted again
    _, again = extract_trait(params, loaded, "toy/refusal", position, [0, 3], progress=False)
    assert again == stored(meta)


def test_responses_vetted_again_with_the_same_rows_kept_are_served_and_current(
    toy, toy_world, capsys
):
    """Generate vets again (another judge: new scores, the same rows kept): the extraction
    is served from disk, not redone, and records the responses file it now matches, so
    vectors and steer do not take it for stale."""
    from steerops.extract.store import changed_source

    params = load_params(toy)
    rows = write_responses(params, toy_world)
    loaded = load_model(params, "base")
    args = ("toy/refusal", "response[:3]", [0, 3])
    out, meta = extract_trait(params, loaded, *args, progress=False)
    tensors = (out / "activations.safetensors").stat().st_mtime_ns
    rescored = [{**r, "trait": 80.0, "coherence": 90.0} for r in rows]
    write_jsonl(responses_dir(params.out, "toy/refusal", "base") / "responses.jsonl", rescored)
    root = params.path(params.traits.root)
    assert changed_source(meta, params.out, root, "toy/refusal", "base", "response[:3]")
    _, again = extract_trait(params, loaded, *args, progress=False)
    assert (out / "activations.safetensors").stat().st_mtime_ns == tensors  # not redone
    assert changed_source(again, params.out, root, "toy/refusal", "base", "response[:3]") is None
    assert read_json(out / "metadata.json") == again
    assert {k: v for k, v in again.items() if k != "source_hash"} == {
        k: v for k, v in stored(meta).items() if k != "source_hash"
    }
    # the console says served, though the record of its sources was rewritten
    from steerops.extract.command import _report

    _report("toy/refusal response[:3]", out, again)
    assert "up to date, served from disk" in capsys.readouterr().out
    _report("toy/refusal response[:3]", out, meta)
    assert "tokens/s" in capsys.readouterr().out


def test_padding_sides_agree_on_toy(tmp_path, toy_world):
    results = {}
    for side in ("left", "right"):
        folder = tmp_path / side
        folder.mkdir()
        params = load_params(
            write_params(
                folder,
                toy_world,
                tracking={"enabled": False},
                extraction={"padding_side": side, "token_budget": 200},
            )
        )
        write_responses(params, toy_world)
        loaded = load_model(params, "base", padding_side=side)
        out, _ = extract_trait(
            params, loaded, "toy/refusal", "response[:]", [0, 1, 2, 3], progress=False
        )
        results[side] = load_file(out / "activations.safetensors")
    assert results["left"] and results["left"].keys() == results["right"].keys()
    for name, left in results["left"].items():
        torch.testing.assert_close(left, results["right"][name], rtol=1e-4, atol=1e-5)


def test_toy_run_killed_midway_resumes_identically(tmp_path, toy_world):
    outs = {}
    for name in ("fresh", "killed"):
        folder = tmp_path / name
        folder.mkdir()
        params = load_params(
            write_params(
                folder,
                toy_world,
                tracking={"enabled": False},
                extraction={"shard_examples": 5, "dtype": "bfloat16", "token_budget": 64},
            )
        )
        loaded = load_model(params, "base")
        if name == "killed":

            def kill(k):
                if k == 3:
                    raise KeyboardInterrupt

            with pytest.raises(KeyboardInterrupt):
                extract_trait(
                    params,
                    loaded,
                    "toy/refusal",
                    "prompt[-3:]",
                    [1, 2],
                    progress=False,
                    on_shard=kill,
                )
        out, meta = extract_trait(
            params, loaded, "toy/refusal", "prompt[-3:]", [1, 2], progress=False
        )
        outs[name] = (out / "activations.safetensors").read_bytes()
    assert meta["timing"]["reused_shards"] == 4
    assert outs["killed"] == outs["fresh"]
    assert load_file(out / "activations.safetensors")["layer_1"].dtype == torch.bfloat16


def _corrupt(path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncated":
        path.write_bytes(bytes(data[: len(data) - 100]))
    elif how == "flipped":  # same size, one byte of one activation changed
        data[-5] ^= 0x40
        path.write_bytes(bytes(data))
    else:  # a pickle where a safetensors file belongs
        torch.save({"layer_1": torch.zeros(3)}, path)


@pytest.mark.parametrize("how", ["truncated", "flipped", "pickled"])
def test_damaged_activations_are_extracted_again_not_skipped(toy, how, capsys):
    params = load_params(toy)
    loaded = load_model(params, "base")
    out, meta = extract_trait(params, loaded, "toy/refusal", "prompt[-1]", [1, 2], progress=False)
    tensors = out / "activations.safetensors"
    good = tensors.read_bytes()
    from steerops.io import file_md5

    assert meta["tensors_md5"] == file_md5(tensors)
    _corrupt(tensors, how)
    capsys.readouterr()
    out, meta = extract_trait(params, loaded, "toy/refusal", "prompt[-1]", [1, 2], progress=False)
    assert "extracting it again" in capsys.readouterr().err
    assert meta["timing"]["tokens"] > 0  # recomputed, not "up to date"
    assert tensors.read_bytes() == good
    # Intact now: the next run skips it.
    stamp = tensors.stat().st_mtime_ns
    extract_trait(params, loaded, "toy/refusal", "prompt[-1]", [1, 2], progress=False)
    assert tensors.stat().st_mtime_ns == stamp


def test_damaged_shard_is_recomputed_on_resume(tmp_path, toy_world):
    params = load_params(
        write_params(
            tmp_path, toy_world, tracking={"enabled": False}, extraction={"shard_examples": 8}
        )
    )
    loaded = load_model(params, "base")

    def kill(k):
        if k == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract_trait(
            params, loaded, "toy/refusal", "prompt[-1]", [1], progress=False, on_shard=kill
        )
    partial = sorted((tmp_path / "outputs").rglob(".partial/shard_*.safetensors"))
    assert len(partial) == 3
    data = bytearray(partial[1].read_bytes())
    data[-3] ^= 0x01  # a flipped bit inside the shard's tensor bytes
    partial[1].write_bytes(bytes(data))
    out, meta = extract_trait(params, loaded, "toy/refusal", "prompt[-1]", [1], progress=False)
    assert meta["timing"]["reused_shards"] == 2  # shards 0 and 2; shard 1 recomputed
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    params2 = load_params(
        write_params(
            fresh, toy_world, tracking={"enabled": False}, extraction={"shard_examples": 8}
        )
    )
    out2, _ = extract_trait(params2, loaded, "toy/refusal", "prompt[-1]", [1], progress=False)
    assert (out / "activations.safetensors").read_bytes() == (
        out2 / "activations.safetensors"
    ).read_bytes()


def test_a_copied_project_and_model_are_up_to_date(tmp_path, toy_world):
    """The settings hash holds content, not paths: a copied model folder and outputs tree
    are not extracted again."""
    import shutil

    first = tmp_path / "first"
    first.mkdir()
    shutil.copytree(toy_world / "model", first / "model")
    params = load_params(
        write_params(
            first,
            toy_world,
            tracking={"enabled": False},
            models={"base": {"id": "model"}, "instruct": {"id": "model"}},
        )
    )
    out, meta = extract_trait(
        params, load_model(params, "base"), "toy/refusal", "prompt[-1]", [1], progress=False
    )
    second = tmp_path / "second"
    shutil.copytree(first, second)  # new paths, new modification times
    params2 = load_params(
        write_params(
            second,
            toy_world,
            tracking={"enabled": False},
            models={"base": {"id": "model"}, "instruct": {"id": "model"}},
        )
    )
    loaded2 = load_model(params2, "base")
    assert loaded2.source == str(second / "model")
    out2, meta2 = extract_trait(params2, loaded2, "toy/refusal", "prompt[-1]", [1], progress=False)
    assert out2 == second / out.relative_to(first)
    assert meta2 == stored(meta)  # the stored metadata, returned as up to date
    # Other weights are noticed.
    weights = second / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-7] ^= 0x10
    weights.write_bytes(bytes(data))
    loaded3 = load_model(params2, "base")
    _, meta3 = extract_trait(params2, loaded3, "toy/refusal", "prompt[-1]", [1], progress=False)
    assert meta3["settings_hash"] != meta["settings_hash"] and meta3["timing"]["tokens"] > 0


def test_an_extraction_without_windows_gains_them_when_served(toy, toy_world):
    """Metadata written before windows were recorded: served again (nothing extracted),
    it gains each row's window, the rows and tensors as they were."""
    import json

    params = load_params(toy)
    write_responses(params, toy_world)
    loaded = load_model(params, "base")
    out, meta = extract_trait(params, loaded, "toy/refusal", "response[:3]", [1], progress=False)
    path = out / "metadata.json"
    old = json.loads(path.read_text())
    for row in old["examples"]:
        del row["window"], row["tokens"]
    path.write_text(json.dumps(old))
    tensors = (out / "activations.safetensors").read_bytes()
    _, again = extract_trait(params, loaded, "toy/refusal", "response[:3]", [1], progress=False)
    assert again == stored(meta) and json.loads(path.read_text()) == stored(meta)
    assert (out / "activations.safetensors").read_bytes() == tensors
