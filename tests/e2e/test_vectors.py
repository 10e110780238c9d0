"""Vectors from the toy world's activations separate held-out requests."""

from __future__ import annotations

from steerops.cli import main
from steerops.config import load_params
from steerops.vectors import vectors_for
from vector_data import write_activations

TRAIT, POSITION = "toy/refusal", "prompt[-1]"


def test_toy_refusal_vectors_separate_heldout_requests(tmp_path, toy_world):
    """On the toy chat model, last-prompt-token activations (captured here and written in
    the extract contract) give mean_diff, probe and pca vectors that separate held-out
    harmful from benign requests at their best layer."""
    from conftest import write_params
    from steerops.models.capture import forward_capture
    from steerops.models.fingerprint import model_fingerprint
    from steerops.models.generation import format_prompt
    from steerops.models.loading import load_model
    from steerops.traits import load_trait

    path = write_params(
        tmp_path,
        toy_world,
        tracking={"enabled": False},
        extraction={"variant": "base", "positions": [POSITION]},
    )
    loaded = load_model(load_params(path), "base")
    trait = load_trait(toy_world / "traits", TRAIT)
    texts = [format_prompt(loaded.tokenizer, p.prompt) for p in trait.positive + trait.negative]
    batch = loaded.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    layers = list(range(loaded.layout.num_layers))
    captured = forward_capture(
        loaded.model, loaded.layout, batch["input_ids"], batch["attention_mask"], layers
    )
    data = {layer: captured[layer][:, -1].float().numpy() for layer in layers}  # left padded
    # the model these rows came from, as extraction records it (vectors compare it)
    model = {"id": loaded.spec.id, "weights": model_fingerprint(loaded.source)}
    write_activations(tmp_path / "outputs", data, len(trait.positive), n_val=30, model=model)
    assert (
        main(
            ["vectors", "--params", str(path), "--methods", "mean_diff,probe,pca,mean_diff_dims0-1"]
        )
        == 0
    )
    for method in ("mean_diff", "probe", "pca", "mean_diff_dims0-1"):
        vectors, meta = vectors_for(
            load_params(path).out, TRAIT, "base", POSITION, "residual", method
        )
        assert meta["hidden_size"] == loaded.layout.hidden_size == vectors[0].shape[0]
        best = meta["best"]  # chosen on half of val, measured on the other half
        assert best["heldout_n"] == 30 and best["heldout_acc"] >= 0.95, (method, best)
