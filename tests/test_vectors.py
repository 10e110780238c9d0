"""Steering-vector methods, the method-name grammar, storage and `steerops vectors`.

Activations are synthetic and written in the `steerops extract` contract format, so these
tests do not depend on extraction; numbers are checked against numpy/sklearn references.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from steerops.cli import main
from steerops.config import load_params
from steerops.config.vectors import VectorsConfig
from steerops.errors import SteeropsError
from steerops.extract.store import activations_dir
from steerops.io import read_json, write_json
from steerops.specs import parse_method
from steerops.vectors import check_hidden_size, load_vectors, save_vectors, vectors_for
from steerops.vectors.methods import METHODS, register
from steerops.vectors.store import vectors_dir

TRAIT, POSITION = "toy/refusal", "prompt[-1]"
LAYERS = (0, 1, 2)


def planted(n_pos: int, n_neg: int, d: int, seed: int, shift: float = 1.5,
            massive: dict[int, float] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian classes separated along a random unit direction `u`; `massive` adds large
    per-row values (mean given, 5% spread) at chosen dims, like a model's massive dims."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=d)
    u /= np.linalg.norm(u)
    pos = rng.normal(size=(n_pos, d)) + shift * u
    neg = rng.normal(size=(n_neg, d)) - shift * u
    for dim, value in (massive or {}).items():
        pos[:, dim] += value * (1 + 0.05 * rng.normal(size=n_pos))
        neg[:, dim] += value * (1 + 0.05 * rng.normal(size=n_neg))
    return pos, neg, u


def write_activations(out: Path, data: dict[int, np.ndarray], n_pos: int, *, n_val: int = 0,
                      trait: str = TRAIT, variant: str = "base", position: str = POSITION,
                      component: str = "residual", hidden_size: int | None = None) -> Path:
    """Activations in the extract contract: rows [pos..., neg...]; the last `n_val` of each
    class are the val split. Returns the directory."""
    n, d = next(iter(data.values())).shape
    n_neg = n - n_pos
    examples = []
    for polarity, count, offset in (("positive", n_pos, 0), ("negative", n_neg, n_pos)):
        for k in range(count):
            examples.append({"index": offset + k, "polarity": polarity, "source_index": k,
                             "rollout": 0, "split": "val" if k >= count - n_val else "train"})
    directory = activations_dir(out, trait, variant, position, component)
    from steerops.io import save_tensors

    save_tensors(directory / "activations.safetensors",
                 {f"layer_{layer}": torch.tensor(x, dtype=torch.float32)
                  for layer, x in data.items()})
    write_json(directory / "metadata.json", {
        "trait": trait, "model": {"variant": variant, "id": "synthetic", "revision": None},
        "position": position, "component": component, "layers": sorted(data),
        "hidden_size": hidden_size or d, "num_layers": len(data), "dtype": "float32",
        "seed": 0, "examples": examples,
        "mean_norm": {str(layer): float(np.linalg.norm(x, axis=1).mean())
                      for layer, x in data.items()},
        "counts": {"positive": n_pos, "negative": n_neg}, "source_hash": "synthetic"})
    return directory


def params_file(folder: Path, **blocks) -> Path:
    """params.yaml with outputs in `folder/outputs`; tracking off unless a block sets it."""
    data = {"paths": {"out": str(folder / "outputs")}, "traits": {"names": [TRAIT]},
            "extraction": {"variant": "base", "positions": [POSITION]},
            "tracking": {"enabled": False}}
    data.update(blocks)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def stacked(n_pos: int = 30, n_neg: int = 30, d: int = 12,
            massive: dict[int, float] | None = None) -> tuple[dict[int, np.ndarray], int]:
    data = {}
    for layer in LAYERS:
        pos, neg, _ = planted(n_pos, n_neg, d, seed=10 + layer, massive=massive)
        data[layer] = np.concatenate([pos, neg])
    return data, n_pos


def cosine(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


CFG = VectorsConfig()


def run_method(name: str, pos: np.ndarray, neg: np.ndarray, seed: int = 0,
               config: VectorsConfig = CFG) -> np.ndarray:
    return METHODS[name](torch.tensor(pos, dtype=torch.float32),
                         torch.tensor(neg, dtype=torch.float32), seed=seed,
                         config=config).numpy()


# ---- methods against independent references -------------------------------------------

def test_mean_diff_matches_numpy_reference_end_to_end(tmp_path):
    """`steerops vectors` writes the unit mean difference of the train rows, its raw norm,
    and separation metrics that match a numpy computation."""
    data, n_pos = stacked(n_pos=30, n_neg=24)
    write_activations(tmp_path / "outputs", data, n_pos, n_val=6)
    assert main(["vectors", "--params", str(params_file(tmp_path)), "--methods",
                 "mean_diff"]) == 0
    vectors, meta = load_vectors(vectors_dir(tmp_path / "outputs", TRAIT, "base", POSITION,
                                             "residual", "mean_diff"))
    assert sorted(vectors) == list(LAYERS)
    for layer, x in data.items():
        pos_train, pos_val = x[:24], x[24:30]
        neg_train, neg_val = x[30:48], x[48:]
        gap = pos_train.mean(0) - neg_train.mean(0)
        np.testing.assert_allclose(vectors[layer].numpy(), gap / np.linalg.norm(gap),
                                   atol=1e-6)
        unit = gap / np.linalg.norm(gap)
        mid = 0.5 * ((pos_train @ unit).mean() + (neg_train @ unit).mean())
        train_acc = ((pos_train @ unit > mid).sum() + (neg_train @ unit <= mid).sum()) / 42
        val_acc = ((pos_val @ unit > mid).sum() + (neg_val @ unit <= mid).sum()) / 12
        got = meta["layers"][str(layer)]
        assert got["raw_norm"] == pytest.approx(np.linalg.norm(gap), rel=1e-5)
        assert got["midpoint"] == pytest.approx(mid, rel=1e-5, abs=1e-5)
        assert got["train_acc"] == pytest.approx(train_acc)
        assert got["val_acc"] == pytest.approx(val_acc)
        assert got["mean_norm"] == pytest.approx(np.linalg.norm(x, axis=1).mean(), rel=1e-6)
    assert meta["method"] == meta["base_method"] == "mean_diff"
    assert meta["calibration"] is None and meta["hidden_size"] == 12


@pytest.mark.parametrize("rows", ["unit", "standardize", "none"])
def test_probe_recovers_planted_direction(rows):
    """Every row scaling finds the planted direction, despite a large offset dim."""
    pos, neg, u = planted(400, 400, 24, seed=3, shift=1.0, massive={5: 20.0})
    w = run_method("probe", pos, neg, config=VectorsConfig(probe_rows=rows))
    assert cosine(w, u) >= 0.95


def test_probe_unit_rows_is_sklearn_on_unit_rows():
    """The documented row normalisation: sklearn's logistic regression on unit-norm rows."""
    from sklearn.linear_model import LogisticRegression

    pos, neg, _ = planted(60, 50, 10, seed=4, massive={2: 30.0})
    x = np.concatenate([pos, neg])
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    ref = LogisticRegression(C=0.5, max_iter=5000).fit(x, [1] * 60 + [0] * 50).coef_[0]
    w = run_method("probe", pos, neg, config=VectorsConfig(probe_c=0.5))
    np.testing.assert_allclose(w, ref, rtol=1e-3, atol=1e-4)


def test_gradient_reaches_the_regularised_fisher_direction_and_is_seeded():
    """The gradient objective gap / sqrt(v'(Sw + c I)v) peaks at (Sw + c I)^-1 gap, with Sw
    the pooled class covariance and c = (shrinkage/d + 1e-6) * mean squared distance to the
    pooled mean; the seeded optimiser must get there, repeatably, from seed-specific starts."""
    pos, neg, _ = planted(80, 60, 10, seed=5)
    cfg = VectorsConfig(gradient_steps=200, gradient_lr=0.05, gradient_shrinkage=0.1)
    both = np.concatenate([pos, neg])
    total = ((both - both.mean(0)) ** 2).sum(1).mean()
    sw = 0.5 * (np.cov(pos.T, bias=True) + np.cov(neg.T, bias=True))
    c = (0.1 / 10 + 1e-6) * total
    ref = np.linalg.solve(sw + c * np.eye(10), pos.mean(0) - neg.mean(0))
    a, a2, b = (run_method("gradient", pos, neg, seed=s, config=cfg) for s in (1, 1, 2))
    assert cosine(a, ref) > 0.9999 and cosine(b, ref) > 0.9999
    assert cosine(pos.mean(0) - neg.mean(0), ref) < 0.99  # the reference is not mean_diff
    np.testing.assert_array_equal(a, a2)
    assert not np.array_equal(a, b)
    short = VectorsConfig(gradient_steps=5)  # before convergence the start shows
    assert cosine(run_method("gradient", pos, neg, seed=1, config=short),
                  run_method("gradient", pos, neg, seed=2, config=short)) < 0.99


def test_random_baseline_is_seeded_and_ignores_data():
    pos, neg, _ = planted(20, 20, 64, seed=6)
    a = run_method("random_baseline", pos, neg, seed=7)
    np.testing.assert_array_equal(a, run_method("random_baseline", pos + 5, neg, seed=7))
    b = run_method("random_baseline", pos, neg, seed=8)
    assert abs(cosine(a, b)) < 0.5


def test_pca_paired_and_unpaired_match_numpy():
    pos, neg, _ = planted(40, 40, 8, seed=9)
    diff = pos - neg
    ref = np.linalg.svd(diff, full_matrices=False)[2][0]
    gap = pos.mean(0) - neg.mean(0)
    ref *= np.sign(ref @ gap)
    assert cosine(run_method("pca", pos, neg), ref) > 1 - 1e-6
    # unequal counts: top eigenvector of cov(pos) + cov(neg) + gap gap^T
    neg = neg[:30]
    gap = pos.mean(0) - neg.mean(0)
    second = np.cov(pos.T, bias=True) + np.cov(neg.T, bias=True) + np.outer(gap, gap)
    ref = np.linalg.eigh(second)[1][:, -1]
    ref *= np.sign(ref @ gap)
    assert cosine(run_method("pca", pos, neg), ref) > 1 - 1e-6


def test_every_method_end_to_end_with_mlflow(tmp_path):
    """All default methods run through the CLI; MLflow gets one nested run per method with
    per-layer metrics (step = layer) and the vector files as artifacts."""
    import mlflow

    data, n_pos = stacked(n_pos=40, n_neg=40, d=16)
    write_activations(tmp_path / "outputs", data, n_pos, n_val=10)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    path = params_file(tmp_path, tracking={"enabled": True, "uri": uri})
    assert main(["vectors", "--params", str(path), "--seed", "3"]) == 0
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("toy-refusal").experiment_id])
    children = {r.data.params["method"]: r for r in runs if "method" in r.data.params}
    assert sorted(children) == sorted(map(str, VectorsConfig().methods))
    for method, run in children.items():
        _, meta = vectors_for(load_params(path).out, TRAIT, "base", POSITION, "residual", method)
        assert meta["seed"] == 3
        history = client.get_metric_history(run.info.run_id, "val_acc")
        assert sorted(m.step for m in history) == list(LAYERS)
        assert {m.step: m.value for m in history} == {
            int(k): v["val_acc"] for k, v in meta["layers"].items()}
        files = {a.path for a in client.list_artifacts(run.info.run_id,
                                                       f"vectors/prompt_m1/{method}")}
        assert files == {f"vectors/prompt_m1/{method}/vectors.safetensors",
                         f"vectors/prompt_m1/{method}/metadata.json"}
        assert run.data.tags["dvc.hash.activations"]
        if method == "random_baseline":  # each layer has its own seed
            vectors, _ = vectors_for(load_params(path).out, TRAIT, "base", POSITION, "residual",
                                     method)
            assert cosine(vectors[0], vectors[1]) < 0.9
        if method != "random_baseline":
            assert run.data.metrics["best_val_acc"] >= 0.9, method


# ---- registry, names, store -------------------------------------------------------------

def test_a_new_method_is_one_function(tmp_path):
    @register("first_positive")
    def first_positive(pos, neg, *, seed, config):
        return pos[0].float()

    try:
        assert parse_method("first_positive_top1").base == "first_positive"
        data, n_pos = stacked()
        write_activations(tmp_path / "outputs", data, n_pos)
        assert main(["vectors", "--params", str(params_file(tmp_path)), "--methods",
                     "first_positive"]) == 0
        vectors, _ = vectors_for(load_params(params_file(tmp_path)).out, TRAIT, "base", POSITION,
                                 "residual", "first_positive")
        x = data[1][0]
        np.testing.assert_allclose(vectors[1].numpy(), x / np.linalg.norm(x), atol=1e-6)
    finally:
        del METHODS["first_positive"]


def test_every_built_in_method_is_implemented():
    """Params parse method names before torch is imported, from specs.BASE_METHODS; each of
    them must have its implementation in the registry."""
    from steerops.specs import BASE_METHODS

    assert set(BASE_METHODS) <= set(METHODS)


@pytest.mark.parametrize("name, base, mode, select, n, dims", [
    ("mean_diff", "mean_diff", None, None, None, ()),
    ("random_baseline", "random_baseline", None, None, None, ()),
    ("mean_diff_top2", "mean_diff", "post", "top", 2, ()),
    ("probe_layertop3", "probe", "post", "layertop", 3, ()),
    ("mean_diff_cleaned", "mean_diff", "post", "global", None, ()),
    ("mean_diff_dims12-345", "mean_diff", "post", "dims", None, (12, 345)),
    ("probe_preclean", "probe", "pre", "global", None, ()),
    ("mean_diff_preclean_top2", "mean_diff", "pre", "top", 2, ()),
    ("pca_preclean_dims7", "pca", "pre", "dims", None, (7,)),
])
def test_method_name_grammar(name, base, mode, select, n, dims):
    parsed = parse_method(name)
    assert parsed.base == base and parsed.name == name
    if mode is None:
        assert parsed.cleaning is None
    else:
        c = parsed.cleaning
        assert (c.mode, c.select, c.n, c.dims) == (mode, select, n, dims)
        assert c.needs_calibration == (select != "dims")


@pytest.mark.parametrize("name, token", [
    ("mean_dif", "'mean_dif'"), ("lda_top1", "'lda_top1'"), ("mean_diff_top0", "'top0'"),
    ("mean_diff_top", "'top'"), ("probe_dims1-1", "'dims1-1'"), ("probe_preclean_x", "'x'"),
    ("mean_diff_", "''"),
])
def test_bad_method_names_name_the_bad_token(name, token):
    with pytest.raises(SteeropsError) as err:
        parse_method(name)
    message = str(err.value)
    assert token in message and "\n" not in message
    if "unknown method" in message:
        assert "mean_diff, pca, probe, random_baseline" in message


def test_store_round_trip_and_errors(tmp_path):
    vectors = {3: torch.tensor([0.6, 0.8]), 1: torch.tensor([1.0, 0.0], dtype=torch.bfloat16)}
    save_vectors(tmp_path / "v", vectors, {"method": "mean_diff"})
    loaded, meta = load_vectors(tmp_path / "v")
    assert list(loaded) == [1, 3] and loaded[1].dtype == torch.float32
    assert torch.equal(loaded[3], vectors[3]) and meta["method"] == "mean_diff"

    with pytest.raises(SteeropsError, match=r"vectors not found: .*probe_top1.*"
                       r"steerops clean --variants probe_top1"):
        load_vectors(tmp_path / "probe_top1")
    with pytest.raises(SteeropsError, match=r"steerops vectors --methods pca"):
        load_vectors(tmp_path / "pca")
    # tensors replaced but metadata from another write: detected, not silently paired
    save_vectors(tmp_path / "w", {0: torch.ones(2)}, {})
    (tmp_path / "v" / "vectors.safetensors").write_bytes(
        (tmp_path / "w" / "vectors.safetensors").read_bytes())
    with pytest.raises(SteeropsError, match="does not match metadata.json"):
        load_vectors(tmp_path / "v")


def test_hidden_size_mismatch_is_one_line():
    check_hidden_size(torch.zeros(96), 96, "layer 2")
    with pytest.raises(SteeropsError) as err:
        check_hidden_size(torch.zeros(64), 96, "vectors toy/refusal mean_diff layer 2")
    assert str(err.value) == ("vectors toy/refusal mean_diff layer 2: vector has shape (64,) "
                              "but the model's hidden size is 96")
    with pytest.raises(SteeropsError, match="shape"):
        check_hidden_size(torch.zeros(1, 96), 96, "x")


# ---- bad input: one line, good outputs kept -----------------------------------------------

def test_cli_errors_are_one_line_and_keep_outputs(tmp_path, capsys):
    data, n_pos = stacked()
    write_activations(tmp_path / "outputs", data, n_pos)
    path = str(params_file(tmp_path))
    assert main(["vectors", "--params", path, "--methods", "mean_diff"]) == 0
    target = vectors_dir(tmp_path / "outputs", TRAIT, "base", POSITION, "residual",
                         "mean_diff") / "vectors.safetensors"
    before = target.read_bytes()
    capsys.readouterr()
    for argv, expected in [
        (["--methods", "mean_diff,nope"], "unknown method 'nope'"),
        (["--position", "response[:5]"], "activations not found: "),
        (["--position", "middle[0]"], "position 'middle[0]'"),
        (["--trait", "refusal"], "trait 'refusal': expected CATEGORY/NAME"),
        (["--methods", "mean_diff_top1"], "steerops calibrate --variant instruct"),
    ]:
        assert main(["vectors", "--params", path, *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("steerops vectors: error: ") and expected in err
        assert err.count("\n") == 1
    assert target.read_bytes() == before


def test_activations_that_break_the_contract_are_named(tmp_path):
    data, n_pos = stacked()
    directory = write_activations(tmp_path / "outputs", data, n_pos, hidden_size=13)
    params = load_params(params_file(tmp_path))
    from steerops.vectors.activations import load_activations

    with pytest.raises(SteeropsError, match=r"layer_0 has shape \[60, 12\], metadata says "
                       r"\[60, 13\]"):
        load_activations(params.out, TRAIT, "base", POSITION, "residual")
    meta = read_json(directory / "metadata.json")
    meta["hidden_size"] = 12
    meta["examples"][5]["polarity"] = "neutral"
    write_json(directory / "metadata.json", meta)
    with pytest.raises(SteeropsError, match=r"examples\[5\]\.polarity"):
        load_activations(params.out, TRAIT, "base", POSITION, "residual")


# ---- the toy world ----------------------------------------------------------------------------

def test_toy_refusal_vectors_separate_heldout_requests(tmp_path, toy_world):
    """On the toy chat model, last-prompt-token activations (captured here and written in
    the extract contract) give mean_diff, probe and pca vectors that separate held-out
    harmful from benign requests at their best layer."""
    from conftest import write_params
    from steerops.models import format_prompt, load_model
    from steerops.models.capture import forward_capture
    from steerops.traits import load_trait

    path = write_params(tmp_path, toy_world, tracking={"enabled": False},
                        extraction={"variant": "base", "positions": [POSITION]})
    loaded = load_model(load_params(path), "base")
    trait = load_trait(toy_world / "traits", TRAIT)
    texts = [format_prompt(loaded.tokenizer, p.prompt) for p in trait.positive + trait.negative]
    batch = loaded.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    layers = list(range(loaded.layout.num_layers))
    captured = forward_capture(loaded.model, loaded.layout, batch["input_ids"],
                               batch["attention_mask"], layers)
    data = {layer: captured[layer][:, -1].float().numpy() for layer in layers}  # left padded
    write_activations(tmp_path / "outputs", data, len(trait.positive), n_val=30)
    assert main(["vectors", "--params", str(path), "--methods",
                 "mean_diff,probe,pca,mean_diff_dims0-1"]) == 0
    for method in ("mean_diff", "probe", "pca", "mean_diff_dims0-1"):
        vectors, meta = vectors_for(load_params(path).out, TRAIT, "base", POSITION, "residual",
                                    method)
        assert meta["hidden_size"] == loaded.layout.hidden_size == vectors[0].shape[0]
        best = max(v["val_acc"] for v in meta["layers"].values())
        assert best >= 0.95, (method, meta["layers"])
