"""Calibration on the real SmolLM2: over all tokens, dim 507 at the first token is massive
at the middle layers; peaks and the layer median against a plain forward."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from steerops.calibration.command import calibrate
from steerops.config import load_params

TEXTS = [
    {"prompt": "Hi!"},
    {"prompt": "Why is the sky blue?"},
    {"prompt": "Tell me a joke.", "system_prompt": "You answer in one sentence."},
]


@pytest.fixture(scope="module")
def record(smollm2_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("calibrate")
    prompts = folder / "calibration.jsonl"
    prompts.write_text("".join(json.dumps(t) + "\n" for t in TEXTS))
    params_file = folder / "params.yaml"
    model = {"id": str(smollm2_dir)}
    params_file.write_text(
        yaml.safe_dump(
            {
                "paths": {"out": str(folder / "outputs")},
                "models": {"base": model, "instruct": model},
                "calibration": {"prompts": str(prompts), "max_new_tokens": 4, "top_k": 5},
                "tracking": {"enabled": False},
            }
        )
    )
    params = load_params(params_file)
    return calibrate(params, progress=False), params


def test_dim_507_is_massive_at_the_middle_layers(record):
    record, params = record
    layers = record["layers"]
    for layer in ("11", "16"):
        assert layers[layer]["massive_dims"][0] == 507
        peak = layers[layer]["massive"]["507"]
        assert peak["position"] == 0 and peak["token"] == "<|im_start|>"
        assert abs(peak["value"]) > 10_000 and peak["ratio"] > 1000
    # Before block 11 dim 507 is large (hundreds) but far below 1000x the median.
    assert 507 not in layers["3"]["massive_dims"] and layers["3"]["top_max"][0]["dim"] == 507
    assert record["aggregate"]["massive_dims"][0] == 507
    assert "16" in [str(k) for k in record["aggregate"]["massive_layers"]["507"]]
    assert (params.out / "calibration" / "instruct" / "heatmap.png").stat().st_size > 1000


def test_peaks_and_median_match_a_plain_forward(record, smollm2):
    record, _ = record
    model, tokenizer = smollm2
    # The same sequences, token for token: prompt through the template plus the response.
    stats = record["layers"]["16"]
    values = []
    for text in TEXTS:
        messages = [{"role": "user", "content": text["prompt"]}]
        if "system_prompt" in text:
            messages.insert(0, {"role": "system", "content": text["system_prompt"]})
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = tokenizer(ids, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=2)
            hidden = model(out, output_hidden_states=True).hidden_states[17][0]
        cut = len(out[0])
        if 2 in out[0, ids.shape[1] :].tolist():  # generation stopped: the stop token is not kept
            cut = ids.shape[1] + out[0, ids.shape[1] :].tolist().index(2)
        values.append(hidden[:cut].double().numpy())
    x = np.concatenate(values)
    assert stats["n_tokens"] == record["n_tokens"] == len(x)
    magnitude = np.abs(x)
    assert stats["median_abs"] == pytest.approx(np.median(magnitude), rel=5e-3)
    top = stats["top_max"]
    assert [e["dim"] for e in top] == np.argsort(-magnitude.max(0))[: len(top)].tolist()
    assert top[0]["value"] == pytest.approx(x[:, 507][np.abs(x[:, 507]).argmax()], rel=1e-4)
    # massive in at least 2 of the 3 sequences (the default rule): each dim's peak in the
    # sequence that ranks second by it passes both bars
    bar = max(100, 1000 * np.median(magnitude))
    per_sequence = np.stack([np.abs(v).max(0) for v in values])  # [sequences, dims]
    second = -np.sort(-per_sequence, axis=0)[1]
    assert stats["massive_dims"] == [d for d in np.argsort(-magnitude.max(0)) if second[d] > bar]
    assert stats["massive"]["507"]["recurring_ratio"] == pytest.approx(
        second[507] / np.median(magnitude), rel=5e-3
    )
    assert stats["massive_rare"] == {}  # 507 is massive on every sequence's first token
