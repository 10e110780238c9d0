"""Vector methods against numpy/sklearn references, and the registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from steerops.cli import main
from steerops.config import load_params
from steerops.config.vectors import VectorsConfig
from steerops.specs import parse_method
from steerops.vectors import vectors_for
from steerops.vectors.methods import METHODS, register
from vector_data import cosine, params_file, planted, stacked, write_activations

TRAIT, POSITION = "toy/refusal", "prompt[-1]"


CFG = VectorsConfig()


def run_method(
    name: str, pos: np.ndarray, neg: np.ndarray, seed: int = 0, config: VectorsConfig = CFG
) -> np.ndarray:
    return METHODS[name](
        torch.tensor(pos, dtype=torch.float32),
        torch.tensor(neg, dtype=torch.float32),
        seed=seed,
        config=config,
    ).numpy()


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
    ref = LogisticRegression(C=0.5, tol=1e-10, max_iter=5000).fit(x, [1] * 60 + [0] * 50).coef_[0]
    w = run_method("probe", pos, neg, config=VectorsConfig(probe_c=0.5))
    np.testing.assert_allclose(w, ref, rtol=1e-3, atol=1e-4)


def test_probe_standardize_is_sklearn_on_standardized_columns_mapped_back():
    """`standardize`: sklearn's logistic regression on columns scaled to zero mean and unit
    population variance (a constant column kept at scale 1), its weights divided by each
    column's std; with a massive dim (and a penalty that matters) not the raw fit."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    pos, neg, _ = planted(60, 50, 10, seed=4, massive={2: 30.0})
    pos[:, 7] = neg[:, 7] = 3.0  # a constant column
    x = np.concatenate([pos, neg])
    scaler = StandardScaler().fit(x)  # ddof=0; a zero-variance column gets scale 1
    fit = LogisticRegression(C=0.05, tol=1e-10, max_iter=5000)
    ref = fit.fit(scaler.transform(x), [1] * 60 + [0] * 50).coef_[0] / scaler.scale_
    config = VectorsConfig(probe_rows="standardize", probe_c=0.05)
    w = run_method("probe", pos, neg, config=config)
    np.testing.assert_allclose(w, ref, rtol=1e-3, atol=1e-4)
    raw = run_method("probe", pos, neg, config=VectorsConfig(probe_rows="none", probe_c=0.05))
    assert cosine(w, raw) < 0.99


@pytest.mark.parametrize("rows", ["unit", "none"])
def test_probe_with_a_real_sized_massive_dim_is_sklearn_run_to_convergence(rows):
    """A massive dim at SmolLM2's scale (~24,900 against ~1 elsewhere) carries nearly all of
    each row: the probe must still be the documented fit (sklearn on the scaled rows, run to
    a tight tolerance), not the all-zero weights sklearn stops at with its default one."""
    from sklearn.linear_model import LogisticRegression

    pos, neg, u = planted(300, 300, 96, seed=11, shift=1.0, massive={50: 24900.0})
    x = np.concatenate([pos, neg])
    if rows == "unit":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    # centred: the same optimum (the intercept is not penalised), which sklearn reaches
    # from the raw 24,900 offset only to about 1e-3
    ref = LogisticRegression(C=1.0, tol=1e-12, max_iter=100_000)
    ref = ref.fit(x - x.mean(0), [1] * 300 + [0] * 300).coef_[0]
    w = run_method("probe", pos, neg, config=VectorsConfig(probe_rows=rows))
    assert np.abs(w).max() > 0
    np.testing.assert_allclose(w, ref, rtol=0, atol=2e-3 * np.abs(ref).max())
    assert cosine(w, u) > 0.75


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
    assert (
        cosine(
            run_method("gradient", pos, neg, seed=1, config=short),
            run_method("gradient", pos, neg, seed=2, config=short),
        )
        < 0.99
    )


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


def test_a_new_method_is_one_function(tmp_path):
    @register("first_positive")
    def first_positive(pos, neg, *, seed, config):
        return pos[0].float()

    try:
        assert parse_method("first_positive_top1").base == "first_positive"
        data, n_pos = stacked()
        write_activations(tmp_path / "outputs", data, n_pos)
        assert (
            main(["vectors", "--params", str(params_file(tmp_path)), "--methods", "first_positive"])
            == 0
        )
        vectors, _ = vectors_for(
            load_params(params_file(tmp_path)).out,
            TRAIT,
            "base",
            POSITION,
            "residual",
            "first_positive",
        )
        x = data[1][0]
        np.testing.assert_allclose(vectors[1].numpy(), x / np.linalg.norm(x), atol=1e-6)
    finally:
        del METHODS["first_positive"]


def test_every_built_in_method_is_implemented():
    """Params parse method names before torch is imported, from specs.BASE_METHODS; each of
    them must have its implementation in the registry."""
    from steerops.specs import BASE_METHODS

    assert set(BASE_METHODS) <= set(METHODS)
