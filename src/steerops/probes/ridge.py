"""Ridge probes from activations to scalar scores: pure numpy, no model code.

Hold-out protocol (the default), on tasks sorted by id and shuffled with `seed`:

    train  = 1 - heldout_fraction of the tasks
    sweep  = first half of the held-out tasks
    final  = second half of the held-out tasks

The scaler (optional) is fitted on `train` only. One ridge per alpha is fitted on `train`;
each is scored by Pearson r on `sweep`; the best alpha's model (the same fit, no refit) is
scored once on `final`. So `final_r` never saw a task that chose the alpha or fitted the
weights, and the saved probe is exactly the model that was evaluated.

CV protocol (`folds` > 1): tasks are shuffled into k folds; for each alpha, the mean of the
per-fold Pearson r on out-of-fold predictions picks the alpha; the reported `final_r` is the
Pearson r of all out-of-fold predictions at that alpha (slightly optimistic: the same folds
chose the alpha), and the saved probe is refitted on every task.

Grouped (`groups`: one label per task, e.g. its topic): whole groups are shuffled with
`seed` and dealt into the parts, so no group has tasks on two sides and the held-out r
measures groups the probe never saw. Hold-out: each group in turn goes to the held-out part
(sweep or final) furthest short of its size above that it brings nearer that size, else to
train. CV: largest groups first, each to the fold with fewest tasks so far.

Ridge matches scikit-learn's `Ridge(alpha, fit_intercept=True)`: the intercept is not
penalised. The scaler is folded into the weights, so `acts @ weight + bias` predicts from raw
activations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from steerops.errors import SteeropsError
from steerops.probes.confounds import residuals
from steerops.stats import Interval, pairwise_share
from steerops.stats.correlation import pearson

MIN_PART = 3  # fewest tasks in any part for a Pearson r to mean anything


@dataclass
class Split:
    train: np.ndarray
    sweep: np.ndarray
    final: np.ndarray


@dataclass
class ProbeFit:
    """A fitted probe in raw-activation space plus how it was chosen."""

    weight: np.ndarray  # [hidden], scaler folded in
    bias: float
    alpha: float
    alpha_r: list[float]  # selection score per alpha (sweep r, or mean fold r)
    sweep_r: float
    final_r: float
    eval_index: np.ndarray  # rows whose predictions `eval_pred` are (final half, or all: OOF)
    eval_pred: np.ndarray
    eval_true: np.ndarray  # the targets `eval_pred` is scored against
    counts: dict[str, int] = field(default_factory=dict)


def fit_scaler(x: np.ndarray, standardize: bool) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) of each feature; identity when not standardising; constant features
    keep std 1 (as scikit-learn's StandardScaler does)."""
    if not standardize:
        return np.zeros(x.shape[1]), np.ones(x.shape[1])
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    return mean, np.where(std > 0, std, 1.0)


def ridge_path(x: np.ndarray, y: np.ndarray, alphas: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Weights [n_alphas, hidden] and intercepts [n_alphas] for every alpha, from one SVD."""
    x_mean, y_mean = x.mean(axis=0), y.mean()
    u, s, vt = np.linalg.svd(x - x_mean, full_matrices=False)
    uty = u.T @ (y - y_mean)
    alphas_arr = np.asarray(alphas, dtype=np.float64)[:, None]
    weights = ((s / (s * s + alphas_arr)) * uty) @ vt
    return weights, y_mean - weights @ x_mean


def fold_scaler(weight: np.ndarray, bias, mean: np.ndarray, std: np.ndarray):
    """Weights for raw inputs: w' = w / std, b' = b - sum(w * mean / std); `weight` may hold
    one row per alpha (`bias` then one value per row)."""
    return weight / std, bias - (weight * (mean / std)).sum(axis=-1)


def clustered_r_interval(
    a: np.ndarray, b: np.ndarray, groups: np.ndarray, seed: int, resamples: int = 10_000
) -> tuple[float | None, float | None]:
    """95% percentile interval of Pearson r between `a` and `b` from a bootstrap over
    `groups` (a group's tasks are drawn together: phrasings of one topic are not
    independent, which the Fisher z interval assumes); None without one (fewer than 4
    groups, or a constant side). Each resample's r comes from the drawn groups' sums."""
    labels, inverse = np.unique(np.asarray(groups), return_inverse=True)
    if len(labels) < 4 or pearson(a, b) != pearson(a, b):
        return None, None
    a = np.asarray(a, dtype=np.float64) - np.mean(a)  # centred: the sums keep their precision
    b = np.asarray(b, dtype=np.float64) - np.mean(b)
    columns = np.stack([np.ones_like(a), a, b, a * a, b * b, a * b], axis=1)
    sums = np.zeros((len(labels), 6))
    np.add.at(sums, inverse, columns)
    k = len(labels)
    rng = np.random.default_rng(seed)
    rs = []
    # the draws a chunk at a time: [rows, groups] counts stay small with many groups
    rows = max(1, min(resamples, 2**22 // k))
    for start in range(0, resamples, rows):
        m = min(rows, resamples - start)
        draws = rng.integers(0, k, size=(m, k)) + (np.arange(m) * k)[:, None]
        counts = np.bincount(draws.ravel(), minlength=m * k).reshape(m, k).astype(np.float64)
        n, sa, sb, saa, sbb, sab = (counts @ sums).T
        with np.errstate(invalid="ignore", divide="ignore"):
            rs.append((n * sab - sa * sb) / np.sqrt((n * saa - sa * sa) * (n * sbb - sb * sb)))
    r = np.concatenate(rs)
    r = r[np.isfinite(r)]
    low, high = np.quantile(r, [0.025, 0.975])
    return float(low), float(high)


def split_tasks(
    n: int, heldout_fraction: float, seed: int, groups: np.ndarray | None = None
) -> Split:
    n_held = int(round(heldout_fraction * n))
    if groups is None:
        perm = np.random.default_rng(seed).permutation(n)
        half = n_held // 2
        split = Split(np.sort(perm[n_held:]), np.sort(perm[:half]), np.sort(perm[half:n_held]))
    else:
        sweep, final, train = _grouped_parts(
            _shuffled_groups(groups, seed), [n_held // 2, n_held - n_held // 2]
        )
        split = Split(
            *(np.sort(np.concatenate([[], *part]).astype(int)) for part in (train, sweep, final))
        )
    sizes = {k: len(v) for k, v in vars(split).items()}
    if min(sizes.values()) < MIN_PART:
        grouped = "" if groups is None else f" in {_groups_text(groups)} (probes.group_by)"
        raise SteeropsError(
            f"probes.heldout_fraction: {heldout_fraction} of {n} tasks{grouped} gives parts "
            f"{sizes}; each needs at least {MIN_PART} tasks"
        )
    return split


def _groups_text(groups: np.ndarray) -> str:
    count = len(set(groups))
    return f"{count} group{'' if count == 1 else 's'}"


def _shuffled_groups(groups: np.ndarray, seed: int) -> list[np.ndarray]:
    """The task indices of each group, the groups in an order shuffled by `seed`."""
    labels, inverse = np.unique(np.asarray(groups), return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(labels))]
    return [members[g] for g in np.random.default_rng(seed).permutation(len(labels))]


def _grouped_parts(members: list[np.ndarray], sizes: list[int]) -> list[list[np.ndarray]]:
    """`_deal`, and where that leaves a part under MIN_PART tasks, `_deal` that lets an
    empty part take a group no nearer its size than nothing (a sweep of 6 where 3 was
    wanted beats none)."""
    parts = _deal(members, sizes)
    if min(sum(map(len, part)) for part in parts) >= MIN_PART:
        return parts
    return _deal(members, sizes, fill_empty=True)


def _deal(
    members: list[np.ndarray], sizes: list[int], fill_empty: bool = False
) -> list[list[np.ndarray]]:
    """Deal groups, in order, to parts of the given sizes: each to the part furthest short
    of its size that it brings nearer it (`fill_empty`: or no further, while the part is
    empty), else to one more part (the rest)."""
    parts: list[list[np.ndarray]] = [[] for _ in range(len(sizes) + 1)]
    have = [0] * len(sizes)
    for member in members:
        for j in sorted(range(len(sizes)), key=lambda j: have[j] - sizes[j]):
            after, before = abs(have[j] + len(member) - sizes[j]), abs(have[j] - sizes[j])
            if after < before or (fill_empty and have[j] == 0 and after == before):
                parts[j].append(member)
                have[j] += len(member)
                break
        else:
            parts[-1].append(member)
    return parts


def fold_parts(n: int, folds: int, seed: int, groups: np.ndarray | None = None) -> list:
    """The task indices of each CV fold: a shuffle cut in k, or whole groups, each dealt to
    the fold with the fewest tasks so far."""
    if groups is None:
        return np.array_split(np.random.default_rng(seed).permutation(n), folds)
    parts: list[list[int]] = [[] for _ in range(folds)]
    members = sorted(_shuffled_groups(groups, seed), key=len, reverse=True)  # ties: shuffled
    for member in members:
        min(parts, key=len).extend(member.tolist())
    return [np.sort(np.asarray(part, dtype=int)) for part in parts]


def check_folds(n: int, folds: int, groups: np.ndarray | None = None, seed: int = 0) -> None:
    if folds >= 2:
        sizes = (
            [n // folds] if groups is None else list(map(len, fold_parts(n, folds, seed, groups)))
        )
        if min(sizes) >= MIN_PART:
            return
    grouped = "" if groups is None else f" in {_groups_text(groups)} (probes.group_by)"
    raise SteeropsError(
        f"probes.cv_folds: {folds} folds of {n} tasks{grouped}; need >= 2 folds of >= "
        f"{MIN_PART} tasks"
    )


def _fit_on(x: np.ndarray, y: np.ndarray, alphas: list[float], standardize: bool):
    mean, std = fit_scaler(x, standardize)
    weights, biases = ridge_path((x - mean) / std, y, alphas)
    return fold_scaler(weights, biases, mean, std)  # per alpha


class DegenerateFit(SteeropsError):
    """No alpha gives a prediction with a defined r: the layer is reported, not fatal."""


# Spread, relative to a feature's size, below which it counts as constant: the same tokens
# extracted in batches of other shapes differ by rounding (float32: about 1e-7 to 1e-6 of the
# values), which standardising would blow up into features. A model or activations in 16
# bits round about 2**-8 (bfloat16) or 2**-11 (float16).
CONSTANT_SPREAD = {"float32": 1e-5, "float16": 4e-3, "bfloat16": 3e-2}


def rounding_spread(*dtypes: str) -> float:
    """`CONSTANT_SPREAD` of the coarsest of the dtypes the activations went through (the
    model's, "auto" taken as 16-bit, and the stored activations')."""
    return max(CONSTANT_SPREAD.get(d, CONSTANT_SPREAD["bfloat16"]) for d in dtypes)


def constant_features(x: np.ndarray, spread: float = CONSTANT_SPREAD["float32"]) -> bool:
    """True when every feature is constant across the rows up to rounding (e.g. activations
    at a BOS token, or at positions every task shares): any probe then predicts one value,
    or fits rounding noise. Each feature is judged by its own size, so a massive dim cannot
    hide the others' spread; a feature near zero by a typical feature's size (the median),
    since its rounding comes from sums over its neighbours."""
    if x.size == 0:
        return True
    size = np.abs(x).max(axis=0)
    return bool((np.ptp(x, axis=0) <= spread * np.maximum(size, np.median(size))).all())


def _best(scores: list[float], alphas: list[float]) -> int:
    if all(np.isnan(scores)):
        # the scores are checked to vary before any fit, so the predictions are constant
        raise DegenerateFit(
            f"no alpha in {alphas} gives a prediction that varies across the tasks scored"
        )
    return int(np.nanargmax(scores))


def alpha_edge(alpha: float, alphas: list[float]) -> str | None:
    """ "lowest" or "highest" when the chosen alpha is at that end of a grid of >= 2 values:
    the optimum may lie beyond it."""
    if len(set(alphas)) < 2:
        return None
    return "lowest" if alpha == min(alphas) else "highest" if alpha == max(alphas) else None


def _targets(y: np.ndarray, design: np.ndarray | None, train: np.ndarray) -> np.ndarray:
    """The scores with the confounds regressed out on the training rows (`design`: the
    confounds' one-hot design, None: no confounds)."""
    return y if design is None else residuals(y, design, train)


def fit_holdout(
    x: np.ndarray,
    y: np.ndarray,
    alphas: list[float],
    split: Split,
    standardize: bool = True,
    design: np.ndarray | None = None,
) -> ProbeFit:
    y = _targets(y, design, split.train)
    weights, biases = _fit_on(x[split.train], y[split.train], alphas, standardize)
    sweep_pred = weights @ x[split.sweep].T + biases[:, None]
    sweep_r = [pearson(p, y[split.sweep]) for p in sweep_pred]
    best = _best(sweep_r, alphas)
    final_pred = x[split.final] @ weights[best] + biases[best]
    return ProbeFit(
        weight=weights[best],
        bias=float(biases[best]),
        alpha=float(alphas[best]),
        alpha_r=sweep_r,
        sweep_r=sweep_r[best],
        final_r=pearson(final_pred, y[split.final]),
        eval_index=split.final,
        eval_pred=final_pred,
        eval_true=y[split.final],
        counts={"train": len(split.train), "sweep": len(split.sweep), "final": len(split.final)},
    )


def fit_cv(
    x: np.ndarray,
    y: np.ndarray,
    alphas: list[float],
    folds: int,
    seed: int,
    standardize: bool = True,
    design: np.ndarray | None = None,
    groups: np.ndarray | None = None,
) -> ProbeFit:
    n = len(y)
    check_folds(n, folds, groups, seed)
    parts = fold_parts(n, folds, seed, groups)
    oof = np.zeros((len(alphas), n))
    oof_true = np.zeros(n)  # each fold's held-out targets, residualised on its training rows
    fold_r = np.zeros((folds, len(alphas)))
    for k, test in enumerate(parts):
        train = np.setdiff1d(np.arange(n), test)
        target = _targets(y, design, train)
        weights, biases = _fit_on(x[train], target[train], alphas, standardize)
        oof[:, test] = weights @ x[test].T + biases[:, None]
        oof_true[test] = target[test]
        fold_r[k] = [pearson(p, target[test]) for p in oof[:, test]]
    mean_r = [float(np.mean(col)) for col in fold_r.T]  # nan if any fold is degenerate
    best = _best(mean_r, alphas)
    everything = _targets(y, design, np.arange(n))
    weights, biases = _fit_on(x, everything, [alphas[best]], standardize)
    return ProbeFit(
        weight=weights[0],
        bias=float(biases[0]),
        alpha=float(alphas[best]),
        alpha_r=mean_r,
        sweep_r=mean_r[best],
        final_r=pearson(oof[best], oof_true),
        eval_index=np.arange(n),
        eval_pred=oof[best],
        eval_true=oof_true,
        counts={"train": n, "folds": folds},
    )


def pairwise_accuracy(
    pred: dict[str, float],
    comparisons: list[tuple[str, str, str]],
    seed: int,
    group_of: dict[str, str] | None = None,
) -> Interval:
    """Fraction of comparisons between tasks in `pred` that the probe orders like the
    winner (ties count half), with how many comparisons were scored and a 95% bootstrap
    interval over the tasks compared (`steerops.stats.pairwise_share`), or over their
    groups (`group_of`: a task's `probes.group_by` label)."""
    hits, first, second = [], [], []
    unit = (lambda task: task) if group_of is None else group_of.__getitem__
    for a, b, winner in comparisons:
        if a in pred and b in pred:
            loser = b if winner == a else a
            diff = pred[winner] - pred[loser]
            hits.append(1.0 if diff > 0 else 0.5 if diff == 0 else 0.0)
            first.append(unit(a))
            second.append(unit(b))
    return pairwise_share(hits, first, second, seed)
