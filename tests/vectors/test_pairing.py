"""pca on a paired trait: the split keeps each source prompt's pair together, and the fit
subtracts pair members (checked against an independent numpy PCA of paired differences)."""

from __future__ import annotations

import numpy as np
import pytest

from steerops.config import load_params
from steerops.extract.engine import Example
from steerops.extract.inputs import assign_splits, is_paired
from steerops.io import read_json, write_json
from steerops.vectors.activations import load_activations
from steerops.vectors.build import build_method
from vector_data import cosine, params_file, write_activations

N_SOURCES, HIDDEN = 60, 32


def paired_trait(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each source prompt has a large topic offset shared by its positive and negative
    version; the trait is a small shift along `u`. Only a difference within a pair cancels
    the topic."""
    rng = np.random.default_rng(seed)
    u = rng.normal(size=HIDDEN)
    u /= np.linalg.norm(u)
    topic = 4.0 * rng.normal(size=(N_SOURCES, HIDDEN))
    pos = topic + 1.0 * u + 0.3 * rng.normal(size=(N_SOURCES, HIDDEN))
    neg = topic + 0.3 * rng.normal(size=(N_SOURCES, HIDDEN))
    return pos, neg, u


def write_trait(tmp_path, pos, neg, splits: dict[tuple[str, int], str], paired: bool | None):
    data = {0: np.concatenate([pos, neg]).astype(np.float32)}
    directory = write_activations(tmp_path / "outputs", data, len(pos))
    meta = read_json(directory / "metadata.json")
    for ex in meta["examples"]:
        ex["split"] = splits[(ex["polarity"], ex["source_index"])]
    if paired is not None:
        meta["paired"] = paired
    write_json(directory / "metadata.json", meta)
    return load_params(params_file(tmp_path))


def seeded_splits(paired: bool, seed: int = 0) -> dict[tuple[str, int], str]:
    examples = [
        Example(np.zeros(1, dtype=np.int64), 1, {"polarity": p, "source_index": i})
        for p in ("positive", "negative")
        for i in range(N_SOURCES)
    ]
    # An unpaired trait (unequal counts) draws each polarity's split on its own.
    n_sources = {"positive": N_SOURCES, "negative": N_SOURCES if paired else N_SOURCES + 1}
    assert is_paired(n_sources) is paired
    assign_splits(examples, seed, 0.3, n_sources)
    return {(ex.info["polarity"], ex.info["source_index"]): ex.info["split"] for ex in examples}


def fit_pca(params) -> np.ndarray:
    acts = load_activations(params.out, "toy/refusal", "base", "prompt[-1]", "residual")
    built = build_method(
        params,
        acts,
        "pca",
        trait="toy/refusal",
        variant="base",
        position="prompt[-1]",
        component="residual",
        calibration_variant="instruct",
        progress=False,
    )
    return built.vectors[0].numpy()


def test_paired_split_keeps_pairs_together():
    splits = seeded_splits(paired=True)
    assert all(splits[("positive", i)] == splits[("negative", i)] for i in range(N_SOURCES))
    assert sum(s == "val" for s in splits.values()) == 2 * round(0.3 * N_SOURCES)
    torn = seeded_splits(paired=False)
    assert any(torn[("positive", i)] != torn[("negative", i)] for i in range(N_SOURCES))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pca_recovers_a_planted_paired_trait(tmp_path, seed):
    pos, neg, u = paired_trait(seed)
    splits = seeded_splits(paired=True, seed=seed)
    params = write_trait(tmp_path, pos, neg, splits, paired=True)
    vector = fit_pca(params)
    train = [i for i in range(N_SOURCES) if splits[("positive", i)] == "train"]
    # Independent reference: numpy PCA (uncentred SVD) of the train pairs' differences,
    # signed towards the mean difference.
    diff = (pos[train] - neg[train]).astype(np.float64)
    ref = np.linalg.svd(diff, full_matrices=False)[2][0]
    ref *= np.sign(ref @ diff.mean(0))
    assert cosine(vector, ref) > 1 - 1e-5
    assert cosine(vector, u) >= 0.9


def test_unpaired_rule_and_old_activations(tmp_path):
    pos, neg, u = paired_trait(0)
    torn = seeded_splits(paired=False)
    # Torn pairs, subtracted by row index (activations without the flag): the topics no
    # longer cancel and the direction is mostly noise.
    old = write_trait(tmp_path / "old", pos, neg, torn, paired=None)
    assert abs(cosine(fit_pca(old), u)) < 0.5
    # An unpaired trait gets the class-centred rule: top eigenvector of
    # cov(pos) + cov(neg) + gap gap^T over the train rows (numpy reference).
    unpaired = write_trait(tmp_path / "unpaired", pos, neg, torn, paired=False)
    p = pos[[i for i in range(N_SOURCES) if torn[("positive", i)] == "train"]]
    n = neg[[i for i in range(N_SOURCES) if torn[("negative", i)] == "train"]]
    gap = p.mean(0) - n.mean(0)
    second = np.cov(p.T, bias=True) + np.cov(n.T, bias=True) + np.outer(gap, gap)
    ref = np.linalg.eigh(second)[1][:, -1]
    ref *= np.sign(ref @ gap)
    assert cosine(fit_pca(unpaired), ref) > 1 - 1e-5
