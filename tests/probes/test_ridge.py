"""Ridge probes against sklearn: alpha sweep, held-out r, CV folds, scaling, the split, pairwise
accuracy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ConstantInputWarning, pearsonr
from sklearn.linear_model import Ridge
from sklearn.preprocessing import StandardScaler

from steerops.errors import SteeropsError
from steerops.probes import ridge
from steerops.stats.correlation import pearson, pearson_interval

ALPHAS = [10.0**k for k in range(-3, 7)]


def _data(n: int, d: int, seed: int = 0, noise: float = 0.5):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * rng.uniform(0.5, 20, d) + rng.normal(0, 5, d)
    w = rng.normal(size=d) * (rng.random(d) < 0.3)
    y = (x - x.mean(0)) / x.std(0) @ w + rng.normal(0, noise * max(1, np.abs(w).sum()), n)
    return x, y


def _sklearn_sweep(x, y, split, alphas, standardize):
    xt = x[split.train]
    scaler = StandardScaler(with_mean=standardize, with_std=standardize).fit(xt)
    sweep_r, models = [], []
    for alpha in alphas:
        model = Ridge(alpha=alpha, fit_intercept=True).fit(scaler.transform(xt), y[split.train])
        models.append(model)
        sweep_r.append(pearsonr(model.predict(scaler.transform(x[split.sweep])), y[split.sweep])[0])
    best = int(np.argmax(sweep_r))
    final = pearsonr(models[best].predict(scaler.transform(x[split.final])), y[split.final])[0]
    return sweep_r, best, final, scaler, models[best]


@pytest.mark.parametrize(
    ("n", "d", "standardize"), [(240, 30, True), (90, 150, True), (240, 30, False)]
)
def test_alpha_sweep_and_final_r_match_sklearn(n, d, standardize):
    x, y = _data(n, d)
    split = ridge.split_tasks(n, 0.4, seed=3)
    fit = ridge.fit_holdout(x, y, ALPHAS, split, standardize)
    sweep_r, best, final_r, scaler, model = _sklearn_sweep(x, y, split, ALPHAS, standardize)
    np.testing.assert_allclose(fit.alpha_r, sweep_r, atol=1e-7)
    assert fit.alpha == ALPHAS[best]
    assert fit.final_r == pytest.approx(final_r, abs=1e-7)
    assert fit.sweep_r == pytest.approx(max(sweep_r), abs=1e-7)
    # the folded probe on raw activations equals scaler + ridge
    raw_pred = x @ fit.weight + fit.bias
    np.testing.assert_allclose(raw_pred, model.predict(scaler.transform(x)), rtol=1e-6, atol=1e-6)


def test_fold_scaler_identity():
    rng = np.random.default_rng(1)
    x = rng.normal(3, 7, size=(50, 8))
    mean, std = x.mean(0), x.std(0)
    w, b = rng.normal(size=8), 0.7
    w2, b2 = ridge.fold_scaler(w, b, mean, std)
    np.testing.assert_allclose(x @ w2 + b2, ((x - mean) / std) @ w + b, rtol=1e-10)


def test_constant_feature_keeps_unit_scale():
    x, y = _data(120, 6)
    x[:, 2] = 4.0
    mean, std = ridge.fit_scaler(x, True)
    assert std[2] == 1.0
    fit = ridge.fit_holdout(x, y, ALPHAS, ridge.split_tasks(120, 0.5, 0), True)
    assert np.isfinite(fit.weight).all() and fit.weight[2] == pytest.approx(0, abs=1e-9)


def test_split_is_seeded_disjoint_and_complete():
    a, b = ridge.split_tasks(101, 0.4, seed=7), ridge.split_tasks(101, 0.4, seed=7)
    parts = np.concatenate([a.train, a.sweep, a.final])
    assert sorted(parts.tolist()) == list(range(101))
    assert (len(a.train), len(a.sweep), len(a.final)) == (61, 20, 20)
    assert all((getattr(a, k) == getattr(b, k)).all() for k in ("train", "sweep", "final"))
    assert not np.array_equal(ridge.split_tasks(101, 0.4, seed=8).final, a.final)
    with pytest.raises(SteeropsError, match="probes.heldout_fraction"):
        ridge.split_tasks(10, 0.2, seed=0)


def test_a_grouped_split_deals_whole_groups_near_the_fractions():
    """Groups of uneven sizes: no group on two sides, every task once, each part within a
    group's size of its share, and the deal follows the seed."""
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 9, size=60)
    groups = np.repeat([f"g{i}" for i in range(60)], sizes)
    rng.shuffle(groups)
    n = len(groups)
    split = ridge.split_tasks(n, 0.4, seed=3, groups=groups)
    parts = [split.train, split.sweep, split.final]
    assert sorted(np.concatenate(parts).tolist()) == list(range(n))
    for i, a in enumerate(parts):
        for b in parts[i + 1 :]:
            assert not set(groups[a]) & set(groups[b])
    assert abs(len(split.train) - 0.6 * n) <= 8
    assert abs(len(split.sweep) - len(split.final)) <= 8
    again = ridge.split_tasks(n, 0.4, seed=3, groups=groups)
    assert all(np.array_equal(a, b) for a, b in zip(parts, vars(again).values(), strict=True))
    other = ridge.split_tasks(n, 0.4, seed=4, groups=groups)
    assert not np.array_equal(other.final, split.final)
    folds = ridge.fold_parts(n, 5, seed=3, groups=groups)
    assert sorted(np.concatenate(folds).tolist()) == list(range(n))
    assert max(map(len, folds)) - min(map(len, folds)) <= 8
    assert all(not set(groups[f]) & set(np.delete(groups, f)) for f in folds)


@pytest.mark.parametrize(
    "sizes, fraction, parts",
    [
        ([40, 20, 20, 10, 10], 0.2, (80, 10, 10)),
        ([50, 10, 10, 10, 10, 10], 0.4, (60, 20, 20)),
        ([90, 5, 5], 0.4, (90, 5, 5)),
    ],
)
def test_skewed_groups_are_dealt_to_the_sizes_that_fit_whatever_the_seed(sizes, fraction, parts):
    groups = np.repeat([f"g{i}" for i in range(len(sizes))], sizes)
    for seed in range(50):
        split = ridge.split_tasks(len(groups), fraction, seed, groups)
        assert (len(split.train), len(split.sweep), len(split.final)) == parts
    # a part the nearest deal leaves empty takes a group no nearer its size than nothing
    small = ridge.split_tasks(33, 0.2, 32, np.repeat(["a", "b", "c"], [24, 6, 3]))
    assert (len(small.train), len(small.sweep), len(small.final)) == (24, 6, 3)
    with pytest.raises(SteeropsError, match="of 30 tasks in 1 group "):
        ridge.split_tasks(30, 0.4, 0, np.array(["one"] * 30))
    folds = ridge.fold_parts(100, 2, 0, np.repeat(["a", "b", "c", "d"], [40, 30, 20, 10]))
    assert sorted(map(len, folds)) == [50, 50]  # largest first: 40+10, 30+20


@pytest.mark.parametrize("grouped", [False, True])
def test_cv_matches_sklearn_folds(grouped):
    x, y = _data(150, 20, seed=2)
    groups = np.array([f"t{i // 3}" for i in range(150)]) if grouped else None
    fit = ridge.fit_cv(x, y, ALPHAS, folds=5, seed=4, groups=groups)
    if grouped:  # whole groups, 30 tasks a fold
        parts = ridge.fold_parts(150, 5, 4, groups)
        assert [len(p) for p in parts] == [30] * 5
        assert all(not set(groups[p]) & set(np.delete(groups, p)) for p in parts)
    else:
        parts = np.array_split(np.random.default_rng(4).permutation(150), 5)
    fold_r = np.zeros((5, len(ALPHAS)))
    oof = np.zeros((len(ALPHAS), 150))
    for k, test in enumerate(parts):
        train = np.setdiff1d(np.arange(150), test)
        scaler = StandardScaler().fit(x[train])
        for j, alpha in enumerate(ALPHAS):
            pred = (
                Ridge(alpha=alpha)
                .fit(scaler.transform(x[train]), y[train])
                .predict(scaler.transform(x[test]))
            )
            oof[j, test] = pred
            fold_r[k, j] = pearsonr(pred, y[test])[0]
    np.testing.assert_allclose(fit.alpha_r, fold_r.mean(0), atol=1e-7)
    best = int(np.argmax(fold_r.mean(0)))
    assert fit.alpha == ALPHAS[best]
    assert fit.final_r == pytest.approx(pearsonr(oof[best], y)[0], abs=1e-7)
    scaler = StandardScaler().fit(x)
    full = Ridge(alpha=ALPHAS[best]).fit(scaler.transform(x), y)
    np.testing.assert_allclose(
        x @ fit.weight + fit.bias, full.predict(scaler.transform(x)), rtol=1e-6, atol=1e-6
    )


def test_pairwise_accuracy_counts_only_scored_pairs_and_half_ties():
    pred = {"a": 1.0, "b": 0.0, "c": 0.0}
    comps = [("a", "b", "a"), ("b", "a", "b"), ("b", "c", "c"), ("a", "z", "a")]
    got = ridge.pairwise_accuracy(pred, comps, seed=0)
    assert got.n == 3 and got.mean == pytest.approx((1 + 0 + 0.5) / 3)
    assert 0 <= got.lo <= got.mean <= got.hi <= 1
    empty = ridge.pairwise_accuracy({}, comps, seed=0)
    assert (empty.n, empty.mean, empty.lo, empty.hi) == (0, None, None, None)


def test_alpha_edge_names_the_end_of_the_grid():
    assert ridge.alpha_edge(1e-3, ALPHAS) == "lowest"
    assert ridge.alpha_edge(1e6, ALPHAS) == "highest"
    assert ridge.alpha_edge(1.0, ALPHAS) is None
    assert ridge.alpha_edge(5.0, [5.0]) is None  # one alpha is no sweep


def test_constant_predictions_are_a_degenerate_fit_not_a_score_problem():
    x, y = _data(120, 6)
    x[:] = 0.1  # constant activations: every probe predicts one value
    pred = np.full(40, 0.1)
    with pytest.warns(ConstantInputWarning):  # scipy: r is not defined
        assert np.isnan(pearson(pred, y[:40])) and np.isnan(pearsonr(pred, y[:40])[0])
    assert ridge.constant_features(x) and not ridge.constant_features(_data(120, 6)[0])
    with pytest.raises(ridge.DegenerateFit) as err:
        ridge.fit_holdout(x, y, ALPHAS, ridge.split_tasks(120, 0.5, 0))
    assert "scores" not in str(err.value)


def test_activations_equal_up_to_float_rounding_are_constant():
    """Tasks sharing their tokens at the position (`prompt[:2]`) differ only by rounding
    across batch shapes: two distinct rows 3e-7 apart. Fitted, the standardised noise gave
    a "best layer" with r and an interval; the layer is constant instead. A layer whose
    massive dim dwarfs varying features still varies."""
    rng = np.random.default_rng(0)
    base = rng.normal(0, 0.6, 64).astype(np.float32)
    rows = np.stack([base, base + np.float32(3e-7)])[rng.integers(0, 2, 120)]
    assert np.ptp(rows, axis=0).max() > 0 and ridge.constant_features(rows)
    varying = rng.normal(0, 0.5, (120, 64))
    varying[:, 7] = 25_000.0  # a massive dim, the same on every task
    assert not ridge.constant_features(varying)
    # a bfloat16 model or store rounds at about 2**-8: its noise is constant there, not in float32
    noisy = np.stack([base, base * np.float32(1 + 4e-3)])[rng.integers(0, 2, 120)]
    spread = ridge.rounding_spread("bfloat16", "float32")
    assert ridge.constant_features(noisy, spread) and not ridge.constant_features(noisy)
    assert ridge.rounding_spread("float32", "float32") == ridge.CONSTANT_SPREAD["float32"]
    assert ridge.rounding_spread("auto", "float32") == spread  # a checkpoint's own: 16-bit
    # bfloat16's wider spread must not let the massive dim hide the varying ones (it had:
    # SmolLM2's layers 0-2 in bfloat16 were skipped as constant, sklearn's r 0.83-0.88)
    assert not ridge.constant_features(varying, spread)
    # nor a near-zero feature's rounding (its sums run over features of the usual size)
    tiny = np.stack([base, base + np.float32(3e-7)])[rng.integers(0, 2, 120)]
    tiny[:, 3] = rng.choice([0.0, 3e-7], 120)
    assert ridge.constant_features(tiny)


def _confounded_world(seed: int, groups: int = 60, per_group: int = 4, d: int = 16):
    """Activations that encode a task's group and nothing else; scores = the group's effect
    plus noise the activations do not hold: with the group regressed out, no probe can
    predict a held-out score (true r 0)."""
    rng = np.random.default_rng(seed)
    group = np.repeat(np.arange(groups), per_group)
    x = rng.normal(size=(groups, d))[group] + 0.3 * rng.normal(size=(len(group), d))
    y = rng.normal(0, 3, groups)[group] + rng.normal(size=len(group))
    design = np.eye(groups)[group]  # one column per group: intercept and drop-first alike
    return x, y, design


def test_confounds_are_regressed_out_on_the_training_tasks_only():
    """Against sklearn: LinearRegression on the confounds fitted on the training tasks,
    applied to every task, then the ridge sweep on those residuals."""
    from sklearn.linear_model import LinearRegression

    x, y, design = _confounded_world(0)
    split = ridge.split_tasks(len(y), 0.4, seed=1)
    fit = ridge.fit_holdout(x, y, ALPHAS, split, True, design)
    ols = LinearRegression(fit_intercept=False).fit(design[split.train], y[split.train])
    resid = y - ols.predict(design)
    # groups with no training task get no correction (minimum-norm coefficient 0)
    unseen = design[split.train].sum(0) == 0
    np.testing.assert_allclose(ols.coef_[unseen] if unseen.any() else [], 0, atol=1e-6)
    sweep_r, best, final_r, _, _ = _sklearn_sweep(x, resid, split, ALPHAS, True)
    np.testing.assert_allclose(fit.alpha_r, sweep_r, atol=1e-6)
    assert fit.final_r == pytest.approx(final_r, abs=1e-6)
    np.testing.assert_allclose(fit.eval_true, resid[split.final], atol=1e-9)


@pytest.mark.parametrize("protocol", ["holdout", "cv"])
def test_a_world_without_signal_gives_no_held_out_r_once_confounds_are_removed(protocol):
    """Regressed out on every task, a group's mean holds the held-out tasks' own scores and
    their residuals are pulled against the training tasks': r about -0.3 here."""
    rs = []
    for seed in range(20):
        x, y, design = _confounded_world(seed)
        if protocol == "cv":
            fit = ridge.fit_cv(x, y, ALPHAS, 5, seed, True, design)
        else:
            fit = ridge.fit_holdout(
                x, y, ALPHAS, ridge.split_tasks(len(y), 0.4, seed), True, design
            )
        rs.append(fit.final_r)
    assert abs(np.mean(rs)) < 0.12, rs


def test_the_clustered_r_interval_is_a_bootstrap_over_groups():
    """The same draws of groups, each resample's r by numpy: the interval matches, and
    correlated phrasings within a group widen it beyond the Fisher z one over tasks."""
    rng = np.random.default_rng(1)
    groups = np.repeat([f"t{i}" for i in range(30)], 5)
    a = np.repeat(rng.normal(size=30), 5) + rng.normal(0, 0.3, size=150)
    b = a + np.repeat(rng.normal(0, 1.0, size=30), 5) + rng.normal(0, 0.3, size=150)
    low, high = ridge.clustered_r_interval(a, b, groups, seed=7)
    labels, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(labels))]
    draws = np.random.default_rng(7).integers(0, 30, size=(10_000, 30))
    rs = [
        np.corrcoef(a[rows], b[rows])[0, 1]
        for rows in (np.concatenate([members[g] for g in draw]) for draw in draws)
    ]
    np.testing.assert_allclose([low, high], np.quantile(rs, [0.025, 0.975]), atol=1e-9)
    fisher_low, fisher_high = pearson_interval(a, b)
    assert high - low > 1.5 * (fisher_high - fisher_low)
    assert low < pearson(a, b) < high
    assert ridge.clustered_r_interval(a[:15], b[:15], groups[:15], seed=7) == (None, None)
