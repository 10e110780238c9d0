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
from steerops.io import write_jsonl
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
        ref = toy_reference(loaded, r["prompt"], None, r["response"], position)
        for layer in (0, 3):
            np.testing.assert_allclose(
                tensors[f"layer_{layer}"][row_i].numpy(), ref[layer], rtol=1e-4, atol=1e-4
            )


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
