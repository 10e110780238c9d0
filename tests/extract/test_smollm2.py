"""Extraction on the real SmolLM2 against plain references: its own tokenizer and system-
prompt chat template, left padding, several positions; and the `norm` coefficient unit
(mean per-token norm, massive tokens left out) against a plain forward hook."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from steerops.extract import engine
from steerops.extract.inputs import encode, response_examples
from steerops.models.resolver import resolve_layout
from steerops.specs import parse_position

PAD = 2  # <|im_end|>, SmolLM2's pad and eos
ROWS = [  # (prompt, system prompt, response): prompts of different lengths
    ("How do I bake bread?", None, "Mix flour, water, yeast and salt, then knead."),
    ("Name three colours.", "You are terse.", "Red, green, blue."),
    ("Why is the sea salty? Answer briefly, please.", None, "Rivers carry minerals into it."),
]
LAYERS = [0, 11, 16, 28]  # before and inside the massive-activation range


def examples(tokenizer) -> list[engine.Example]:
    out = []
    for i, (prompt, system, response) in enumerate(ROWS):
        ids, n_prompt = encode(tokenizer, prompt, system, response)
        out.append(engine.Example(ids, n_prompt, {"i": i}))
    return out


def run(model, tokenizer, out_dir, position: str) -> tuple[dict, dict]:
    from safetensors.torch import load_file

    job = engine.Job(
        out_dir, parse_position(position), LAYERS, settings={"test": True}, shard_examples=2
    )
    meta = engine.run_job(
        engine.Extractor(model, resolve_layout(model), PAD, "left"),
        examples(tokenizer),
        job,
        lambda kept: {"rows": [ex.info["i"] for ex in kept]},
        progress=False,
    )
    return meta, load_file(out_dir / "activations.safetensors")


def test_inputs_are_the_real_chat_template(smollm2):
    _, tokenizer = smollm2
    for ex, (prompt, system, response) in zip(examples(tokenizer), ROWS, strict=True):
        messages = [{"role": "user", "content": prompt}]
        if system:
            messages.insert(0, {"role": "system", "content": system})
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
        assert ex.ids.tolist() == prompt_ids + response_ids and ex.prompt_len == len(prompt_ids)
        assert text.startswith("<|im_start|>system\n")  # the default system prompt, or ours
        assert ("SmolLM" in text) == (system is None)


@pytest.mark.parametrize("position", ["prompt[-1]", "prompt[:]", "response[:5]", "all[-4:]"])
def test_extraction_equals_plain_hidden_states(smollm2, tmp_path, position):
    model, tokenizer = smollm2
    meta, tensors = run(model, tokenizer, tmp_path, position)
    assert meta["rows"] == [0, 1, 2]
    for row, ex in enumerate(examples(tokenizer)):
        with torch.no_grad():
            hidden = model(torch.from_numpy(ex.ids)[None], output_hidden_states=True).hidden_states
        window = list(parse_position(position).window(ex.prompt_len, len(ex.ids) - ex.prompt_len))
        for layer in LAYERS:  # block L's output is hidden_states[L + 1] (L < last layer)
            expected = hidden[layer + 1][0, window].double().mean(0).numpy()
            got = tensors[f"layer_{layer}"][row].double().numpy()
            scale = np.abs(expected).max()
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * scale)


def reference_token_norm(model, tokenizer, layer: int, first: bool = False) -> tuple[float, int]:
    """Plain forward hook on block `layer`, one unpadded example at a time: the mean norm of
    the prompt tokens after the first (with it when `first`) that are not massive (peak |x| >
    100 and > 1000 x the median |x| over the example's prompt tokens and dims); returns
    (unit, massive tokens left out)."""
    captured = {}
    block = model.model.layers[layer]
    handle = block.register_forward_hook(
        lambda m, a, o: captured.update(h=o[0] if isinstance(o, tuple) else o)
    )
    norms, left_out = [], 0
    try:
        for ex in examples(tokenizer):
            with torch.no_grad():
                model(torch.from_numpy(ex.ids[: ex.prompt_len])[None])
            x = captured["h"][0].double().numpy()
            peak = np.abs(x).max(1)
            massive = (peak > 100) & (peak > 1000 * np.median(np.abs(x)))
            kept = ~massive
            kept[0] = first and kept[0]
            norms.extend(np.linalg.norm(x[kept], axis=1))
            left_out += int(massive.sum())
    finally:
        handle.remove()
    return float(np.mean(norms)), left_out


def test_norm_unit_is_per_token_and_the_same_at_every_position(smollm2, tmp_path):
    model, tokenizer = smollm2
    last, _ = run(model, tokenizer, tmp_path / "last", "prompt[-1]")
    response, _ = run(model, tokenizer, tmp_path / "response", "response[:5]")
    whole, _ = run(model, tokenizer, tmp_path / "whole", "prompt[:]")
    for layer in (0, 16, 28):
        unit, left_out = reference_token_norm(model, tokenizer, layer)
        for meta in (last, response, whole):
            entry = meta["token_norm"][str(layer)]
            assert entry["token_norm"] == pytest.approx(unit, rel=1e-4)
            assert entry["massive_tokens"] == left_out
    # Block 28: the first token (the sink) is not massive by the rule but 16x an ordinary
    # token's norm; counted, it would raise the unit by about a quarter.
    with_first, _ = reference_token_norm(model, tokenizer, 28, first=True)
    assert with_first > 1.15 * last["token_norm"]["28"]["token_norm"]
    # Block 16: the first token (dim 507 near 25,000) is massive in every example and left
    # out of the unit; a window over the whole prompt holds it, a last-token window does not.
    assert last["token_norm"]["16"]["massive_tokens"] == len(ROWS)
    assert last["token_norm"]["0"]["massive_tokens"] == 0
    assert whole["token_norm"]["16"]["window_massive"] == len(ROWS)
    assert last["token_norm"]["16"]["window_massive"] == 0
    # The old unit, the pooled rows' mean norm, was the first token's at such a window
    # (measured: 883 for prompt[:] against a per-token unit of 186).
    unit16 = last["token_norm"]["16"]["token_norm"]
    assert whole["mean_norm"]["16"] > 3 * unit16 > 3 * last["mean_norm"]["16"]
    # The unit's check: with the first and massive tokens out, the real model's token norms
    # have no large recurring token: the mean is within 5% of the median example's median
    # inside the massive range and after it, and under the vectors stage's 1.25x warning
    # bar at block 0, where token norms spread most (1.18 on these 3 prompts, 1.13 on 96)
    ratio = {
        int(layer): entry["token_norm"] / entry["example_median"]
        for layer, entry in last["token_norm"].items()
    }
    assert all(0.95 < ratio[layer] < 1.05 for layer in (11, 16, 28)), ratio
    assert 1.05 < ratio[0] < 1.25, ratio


def test_the_response_frame_is_the_generated_ids_not_the_text_encoded_again(smollm2, capsys):
    """The stored text is stripped and a cut multi-byte character decodes to U+FFFD, so its
    ids differ from the generated ones; the generated ones are read."""
    _, tokenizer = smollm2
    text = tokenizer("Happy to help with that.", add_special_tokens=False)["input_ids"]
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
    burger = tokenizer("I like 🍔", add_special_tokens=False)["input_ids"][:-1]  # cut inside
    cases = [text + newline, burger]
    rows = [
        {
            "prompt": "Can you help?",
            "response": tokenizer.decode(ids, skip_special_tokens=True).strip(),
            "response_ids": ids,
            "polarity": "positive",
            "source_index": i,
        }
        for i, ids in enumerate(cases)
    ]
    for ex, ids, row in zip(response_examples(tokenizer, rows), cases, rows, strict=True):
        assert ex.ids[ex.prompt_len :].tolist() == ids
        again, n_prompt = encode(tokenizer, row["prompt"], None, row["response"])
        assert n_prompt == ex.prompt_len and again[n_prompt:].tolist() != ids
    assert capsys.readouterr().err == ""
    # a whitespace-only response (empty once stripped) has no frame, and no ids to doubt
    blank = {**rows[0], "response": "", "response_ids": newline * 2}
    (ex,) = response_examples(tokenizer, [blank])
    assert len(ex.ids) == ex.prompt_len and capsys.readouterr().err == ""
    # Ids another tokenizer wrote do not decode to the text: the text is encoded, said once.
    foreign = [{**row, "response_ids": [5, 6, 7]} for row in rows]
    for ex, row in zip(response_examples(tokenizer, foreign), rows, strict=True):
        again, n_prompt = encode(tokenizer, row["prompt"], None, row["response"])
        assert ex.ids.tolist() == again.tolist()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("2 of 2 responses carry token ids")
