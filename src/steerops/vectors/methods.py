"""The vector-method registry: a method is one function, registered with `@register`.

    fn(pos: Tensor[n_pos, d], neg: Tensor[n_neg, d], *, seed: int, config: VectorsConfig)
        -> Tensor[d]   (raw direction, float32, pointing from negative to positive)

The caller unit-normalises the result and records its norm as `raw_norm`, so what that
norm means is the method's own: mean_diff ||mean(pos) - mean(neg)||, probe the norm of the
logistic weights, gradient and pca the gap between the class means along the direction
(pca on paired rows: the mean gap of the pairs, which leaves out rows without a partner),
random_baseline the norm of the Gaussian draw. Rows of `pos` and `neg` are sorted by
(source_index, rollout), so equal counts mean row i of each came from the same source.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch

from steerops.config.vectors import VectorsConfig
from steerops.errors import SteeropsError
from steerops.specs.methods import IMPLEMENTATIONS

VectorMethod = Callable[..., torch.Tensor]
METHODS: dict[str, VectorMethod] = IMPLEMENTATIONS  # the method-name grammar reads it too


def register(name: str) -> Callable[[VectorMethod], VectorMethod]:
    """Register base method `name`; the method-name grammar (cleaning suffixes included)
    then accepts it. A built-in is also listed in `steerops.specs.BASE_METHODS`."""

    def add(fn: VectorMethod) -> VectorMethod:
        if name in METHODS:
            raise ValueError(f"vector method {name!r} registered twice")
        METHODS[name] = fn
        return fn

    return add


def get_method(name: str) -> VectorMethod:
    if name not in METHODS:
        raise SteeropsError(f"unknown method {name!r} (known: {', '.join(sorted(METHODS))})")
    return METHODS[name]


def _mean_gap(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    return pos.mean(0) - neg.mean(0)


@register("mean_diff")
def mean_diff(
    pos: torch.Tensor, neg: torch.Tensor, *, seed: int, config: VectorsConfig
) -> torch.Tensor:
    """Difference of the class means, computed in float32."""
    return _mean_gap(pos.float(), neg.float())


@register("probe")
def probe(
    pos: torch.Tensor, neg: torch.Tensor, *, seed: int, config: VectorsConfig
) -> torch.Tensor:
    """Weights of an L2-regularised logistic regression (sklearn, strength 1/probe_c).

    Inputs are rescaled first (`probe_rows`):
    - "unit" (default): every row to unit L2 norm. Layer norms differ by orders of
      magnitude, so without it one `probe_c` would mean a different penalty at every layer,
      and rows with a huge norm would dominate the fit. A massive dim that carries most of
      a row's norm is kept, which is why pre-cleaning changes this probe.
    - "standardize": every column to zero mean, unit variance, then the weights are mapped
      back to activation coordinates (divided by the column std). Without it a massive dim
      buys a large logit for a tiny weight, so the L2 penalty barely charges for using it.
    - "none": raw activations.
    """
    from sklearn.linear_model import LogisticRegression

    x = torch.cat([pos, neg]).double()
    y = [1] * len(pos) + [0] * len(neg)
    scale = None
    if config.probe_rows == "unit":
        x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
    elif config.probe_rows == "standardize":
        scale = x.std(0, unbiased=False)
        scale[scale == 0] = 1.0
        x = (x - x.mean(0)) / scale
    # The same optimum, fitted in well-scaled coordinates: centring moves only the
    # (unpenalised) intercept, and features divided by s with C * s^2 give weights times s.
    # Unscaled, a massive dim that carries ~all of a unit row (|x| ~ 10^4 x the rest) leaves
    # the other features ~10^-4, sklearn's gradient is below its tolerance at w = 0 and the
    # probe came back all zeros. s is the median column std, so a few massive dims do not
    # set it.
    x = x - x.mean(0)
    std = x.std(0, unbiased=False)
    s = float(std.median()) or float(std.max()) or 1.0
    clf = LogisticRegression(
        C=config.probe_c * s**2, max_iter=config.probe_max_iter, random_state=seed
    )
    clf.fit((x / s).numpy(), y)
    weights = torch.from_numpy(clf.coef_[0].copy()) / s
    if scale is not None:
        weights = weights / scale
    return weights.float()


@register("gradient")
def gradient(
    pos: torch.Tensor, neg: torch.Tensor, *, seed: int, config: VectorsConfig
) -> torch.Tensor:
    """A direction found by Adam from a seeded random start, maximising class separation:
    (gap between the class means of the projections) / sqrt(pooled within-class variance +
    shrinkage * average variance of the data along any direction). The shrinkage keeps the
    ratio bounded when there are fewer examples than dims."""
    pos, neg = pos.float(), neg.float()
    both = torch.cat([pos, neg])
    scale = (both - both.mean(0)).pow(2).sum(1).mean().sqrt().clamp_min(1e-12)
    gap = (pos.mean(0) - neg.mean(0)) / scale  # scaled so the data has total variance 1
    # ||within @ w||^2 is the pooled (mean of the two classes') variance along w
    within = (
        torch.cat(
            [
                (pos - pos.mean(0)) / (2 * len(pos)) ** 0.5,
                (neg - neg.mean(0)) / (2 * len(neg)) ** 0.5,
            ]
        )
        / scale
    )
    floor = config.gradient_shrinkage / both.shape[1] + 1e-6
    generator = torch.Generator().manual_seed(seed)
    w = torch.randn(both.shape[1], generator=generator).requires_grad_(True)
    optimiser = torch.optim.Adam([w], lr=config.gradient_lr)
    with torch.enable_grad(), _threads_for(within.numel()):
        for _ in range(config.gradient_steps):
            # invariant to the scale of w, so no projection onto the unit sphere is needed
            spread = (within @ w).pow(2).sum() + floor * w.pow(2).sum()
            loss = -(gap @ w) / spread.sqrt()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    v = (w / w.norm()).detach()
    return v * (_mean_gap(pos, neg) @ v)


@contextlib.contextmanager
def _threads_for(work: int) -> Iterator[None]:
    """One intra-op thread for small per-step work: the steps are too small to split, and
    on a busy CPU the threads' synchronisation costs ten times the arithmetic."""
    before = torch.get_num_threads()
    if work < 1 << 20:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@register("random_baseline")
def random_baseline(
    pos: torch.Tensor, neg: torch.Tensor, *, seed: int, config: VectorsConfig
) -> torch.Tensor:
    """A seeded Gaussian direction that ignores the data: the floor other methods must beat."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(pos.shape[1], generator=generator)


# Methods that take `paired=`: the caller passes matched rows (same source prompt, same
# rollout) and paired=True on a paired trait, paired=False on an unpaired one.
PAIRED_METHODS = {"pca"}


@register("pca")
def pca(
    pos: torch.Tensor,
    neg: torch.Tensor,
    *,
    seed: int,
    config: VectorsConfig,
    paired: bool | None = None,
) -> torch.Tensor:
    """First principal component of the paired differences pos[i] - neg[i], uncentred (the
    same direction as centred PCA of differences with random sign flips), with its sign
    aligned to the mean difference.

    Without pairs (paired=False, or paired=None with unequal class counts) the rule is the
    top direction of the second moment of every cross difference pos[i] - neg[j], which is
    cov(pos) + cov(neg) + gap gap^T (class-centred rows plus the mean gap), read off an SVD
    without forming any d x d matrix. paired=None with equal counts pairs rows by index."""
    pos, neg = pos.double(), neg.double()
    gap = _mean_gap(pos, neg)
    if paired is None:
        paired = len(pos) == len(neg)
    if paired:
        if len(pos) != len(neg):
            raise SteeropsError(f"pca: {len(pos)} positive rows but {len(neg)} negative pairs")
        stacked = pos - neg
    else:
        stacked = torch.cat(
            [
                (pos - pos.mean(0)) / len(pos) ** 0.5,
                (neg - neg.mean(0)) / len(neg) ** 0.5,
                gap[None],
            ]
        )
    direction = torch.linalg.svd(stacked, full_matrices=False).Vh[0]
    if direction @ gap < 0:
        direction = -direction
    return (direction * (direction @ gap)).float()
