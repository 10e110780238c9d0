"""Thurstonian utilities from pairwise choices.

Each task i has a utility mu_i and a noise scale sigma_i, and

    P(i beats j) = Phi((mu_i - mu_j) / sqrt(sigma_i^2 + sigma_j^2)).

The likelihood is unchanged by shifting every mu or by scaling every mu and sigma together,
so the fit maximises it with mild Gaussian priors: mu ~ N(0, prior_mu^2) fixes the origin
(the penalised optimum has mean mu exactly 0; it is re-centred anyway against rounding), and
log sigma ~ N(0, prior_log_sigma^2) fixes the unit (sigmas near 1). The gradient is analytic
and the optimiser is scipy's L-BFGS-B.

The priors fix one origin for the whole fit, not one per group of tasks: tasks never linked
by a chain of comparisons would each be centred at 0 with no information on their offset, so
a disconnected comparison graph is refused. The in-sample accuracy of a fit is optimistic
when each task has few comparisons (coin-flip choices over 3000 tasks, 5 comparisons each,
give 0.69), so `heldout_accuracy` scores a fit on the other comparisons instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.special import log_ndtr

from steerops import stats
from steerops.errors import SteeropsError
from steerops.stats.correlation import pearson, pearson_interval

LOG_SIGMA_BOUNDS = (-4.0, 4.0)


@dataclass
class ThurstonianFit:
    tasks: list[str]
    mu: np.ndarray
    sigma: np.ndarray
    nll: float  # mean negative log-likelihood per comparison (no prior)
    accuracy: float  # fraction of comparisons won by the task with the higher mu
    n_comparisons: int
    converged: bool
    message: str = ""  # the optimiser's, e.g. why it stopped short of convergence

    def scores(self) -> dict[str, tuple[float, float]]:
        return {
            t: (float(m), float(s)) for t, m, s in zip(self.tasks, self.mu, self.sigma, strict=True)
        }


def _log_phi(z: np.ndarray) -> np.ndarray:
    return -0.5 * z * z - 0.5 * np.log(2 * np.pi)


def _objective(
    theta: np.ndarray,
    winners: np.ndarray,
    losers: np.ndarray,
    counts: np.ndarray,
    prior_mu: float,
    prior_log_sigma: float,
) -> tuple[float, np.ndarray]:
    n = len(theta) // 2
    mu, log_sigma = theta[:n], theta[n:]
    var = np.exp(2 * log_sigma)
    scale = np.sqrt(var[winners] + var[losers])
    z = (mu[winners] - mu[losers]) / scale
    log_cdf = log_ndtr(z)
    nll = -float(counts @ log_cdf)
    # d(-log Phi(z))/dz = -phi(z)/Phi(z), computed in log space for large negative z
    dz = -counts * np.exp(_log_phi(z) - log_cdf)
    grad_mu = np.bincount(winners, dz / scale, n) - np.bincount(losers, dz / scale, n)
    # dz/dlog sigma_k = -z * sigma_k^2 / (sigma_w^2 + sigma_l^2)
    share = -z / (scale * scale)
    grad_ls = np.bincount(winners, dz * share * var[winners], n) + np.bincount(
        losers, dz * share * var[losers], n
    )
    nll += 0.5 * float(mu @ mu) / prior_mu**2
    nll += 0.5 * float(log_sigma @ log_sigma) / prior_log_sigma**2
    grad_mu += mu / prior_mu**2
    grad_ls += log_sigma / prior_log_sigma**2
    return nll, np.concatenate([grad_mu, grad_ls])


def _index(comparisons: list[tuple[str, str, str]]) -> tuple[list[str], np.ndarray]:
    """(sorted task ids, [n_comparisons, 2] rows of (winner index, loser index))."""
    tasks = sorted({t for a, b, _ in comparisons for t in (a, b)})
    if len(tasks) < 2:
        raise SteeropsError("thurstonian: need comparisons between at least 2 tasks")
    index = {t: i for i, t in enumerate(tasks)}
    return tasks, np.array([(index[w], index[b if w == a else a]) for a, b, w in comparisons])


def _components(n: int, pairs: np.ndarray) -> tuple[int, np.ndarray]:
    """(how many, [n] labels) of the groups of n tasks that `pairs` link, directly or by a
    chain of comparisons."""
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)


def _check_connected(tasks: list[str], pairs: np.ndarray) -> None:
    n = len(tasks)
    k, labels = _components(n, pairs)
    if k > 1:
        sizes = np.bincount(labels)
        main = int(np.argmax(sizes))
        other = int(np.flatnonzero(labels != main)[0])
        first = int(np.flatnonzero(labels == main)[0])
        shown = sorted(sizes.tolist(), reverse=True)
        raise SteeropsError(
            f"thurstonian: the comparisons split the {n} tasks into {k} groups never compared "
            f"with each other (sizes {shown[:5]}{' ...' if k > 5 else ''}; e.g. {tasks[first]!r}"
            f" and {tasks[other]!r}): utilities of different groups are not on one scale; add "
            "comparisons across the groups or fit each group on its own"
        )


def _fit(
    n: int, pairs: np.ndarray, prior_mu: float, prior_log_sigma: float, max_iter: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool, str]:
    """(mu, sigma, winners, losers, counts, converged, the optimiser's message) for n tasks
    from (winner, loser) rows."""
    unique, counts = np.unique(pairs, axis=0, return_counts=True)
    winners, losers = unique[:, 0], unique[:, 1]
    result = minimize(
        _objective,
        np.zeros(2 * n),
        jac=True,
        method="L-BFGS-B",
        args=(winners, losers, counts.astype(np.float64), prior_mu, prior_log_sigma),
        bounds=[(None, None)] * n + [LOG_SIGMA_BOUNDS] * n,
        options={"maxiter": max_iter},
    )
    mu = result.x[:n] - result.x[:n].mean()
    message = f"{result.message} after {result.nit} of max_iter {max_iter} iterations"
    return mu, np.exp(result.x[n:]), winners, losers, counts, bool(result.success), message


def fit_thurstonian(
    comparisons: list[tuple[str, str, str]],
    prior_mu: float = 10.0,
    prior_log_sigma: float = 1.0,
    max_iter: int = 2000,
) -> ThurstonianFit:
    """MLE (with the priors above) of mu, sigma per task from (task_a, task_b, winner)."""
    if prior_mu <= 0 or prior_log_sigma <= 0:
        raise SteeropsError("probes.thurstonian priors must be positive")
    tasks, pairs = _index(comparisons)
    _check_connected(tasks, pairs)
    mu, sigma, winners, losers, counts, converged, message = _fit(
        len(tasks), pairs, prior_mu, prior_log_sigma, max_iter
    )
    z = (mu[winners] - mu[losers]) / np.sqrt(sigma[winners] ** 2 + sigma[losers] ** 2)
    total = float(counts.sum())
    return ThurstonianFit(
        tasks=tasks,
        mu=mu,
        sigma=sigma,
        nll=-float(counts @ log_ndtr(z)) / total,
        accuracy=float(counts @ (mu[winners] > mu[losers])) / total,
        n_comparisons=int(total),
        converged=converged,
        message=message,
    )


def heldout_accuracy(
    comparisons: list[tuple[str, str, str]],
    prior_mu: float = 10.0,
    prior_log_sigma: float = 1.0,
    fraction: float = 0.2,
    seed: int = 0,
    max_iter: int = 2000,
) -> dict:
    """Fit on a seeded 1 - `fraction` of the comparisons and score the rest: the fraction
    the higher fitted mu wins (ties, e.g. two tasks seen only in held-out comparisons, count
    half), with n and a 95% interval: a bootstrap over the tasks compared, since comparisons
    that share a task are not independent (`stats.pairwise_share`). Chance is 0.5. No
    accuracy (None, with the optimiser's message under "unconverged") when that fit did not
    converge."""
    tasks, pairs = _index(comparisons)
    order = np.random.default_rng(seed).permutation(len(pairs))
    held = np.zeros(len(pairs), dtype=bool)
    held[order[: int(round(fraction * len(pairs)))]] = True
    if held.all() or not held.any():
        return {"accuracy": None, "n": 0, "ci": [None, None], "fraction": fraction}
    mu, *_, converged, message = _fit(len(tasks), pairs[~held], prior_mu, prior_log_sigma, max_iter)
    if not converged:  # an unfinished optimisation's accuracy is no measure of the model
        return {
            "accuracy": None,
            "n": int(held.sum()),
            "ci": [None, None],
            "fraction": fraction,
            "unconverged": message,
        }
    diff = mu[pairs[held, 0]] - mu[pairs[held, 1]]
    hits = (diff > 0) + 0.5 * (diff == 0)
    interval = stats.pairwise_share(hits, pairs[held, 0], pairs[held, 1], seed)
    return {
        "accuracy": interval.mean,
        "n": interval.n,
        "ci": [interval.lo, interval.hi],
        "fraction": fraction,
    }


def split_half(
    comparisons: list[tuple[str, str, str]],
    prior_mu: float = 10.0,
    prior_log_sigma: float = 1.0,
    seed: int = 0,
    max_iter: int = 2000,
) -> dict:
    """How far the fitted utilities are from noise: the comparisons split in two seeded
    halves, each fitted on its own (its largest linked group of tasks: utilities of unlinked
    groups share no scale), and the Pearson r of the two fits over the tasks both hold
    (`n_tasks` of `tasks_total`: with few comparisons per task, the better-linked ones), with
    its 95% interval (Fisher z over those tasks). Spearman-Brown gives the reliability of a
    fit on all of them, 2r / (1 + r), and its square root is the noise ceiling: about the
    largest r any predictor of these scores can expect (a probe's r near it has found all a
    fit of this many comparisons can tell). None each, with `why`, where no r is defined."""
    tasks, pairs = _index(comparisons)
    order = np.random.default_rng(seed).permutation(len(pairs))
    out: dict = {"r": None, "r_ci": [None, None], "reliability": None, "ceiling": None}
    out |= {"ceiling_ci": [None, None], "n_tasks": 0, "tasks_total": len(tasks)}
    out |= {"seed": seed, "why": None}
    fits = []
    for half in (order[: len(order) // 2], order[len(order) // 2 :]):
        mu, converged, message = _half_fit(
            len(tasks), pairs[half], prior_mu, prior_log_sigma, max_iter
        )
        if not converged:
            return out | {"why": f"a half's fit did not converge ({message})"}
        fits.append(mu)
    both = ~np.isnan(fits[0]) & ~np.isnan(fits[1])
    out["n_tasks"] = int(both.sum())
    a, b = fits[0][both], fits[1][both]
    low, high = pearson_interval(a, b)
    if low is None:
        why = (
            f"{out['n_tasks']} tasks in both halves' fits, too few to correlate"
            if out["n_tasks"] < 4
            else "a half's fit gives every task the same score"
        )
        return out | {"why": why}
    r = pearson(a, b)
    out |= {"r": r, "r_ci": [low, high], "reliability": _spearman_brown(r)}
    out["ceiling"] = out["reliability"] ** 0.5
    out["ceiling_ci"] = [_spearman_brown(low) ** 0.5, _spearman_brown(high) ** 0.5]
    return out


def _spearman_brown(r: float) -> float:
    """The reliability of a fit on twice the comparisons from the r of two halves' fits (0
    where they do not agree at all)."""
    return 2 * r / (1 + r) if r > 0 else 0.0


def _half_fit(
    n: int, pairs: np.ndarray, prior_mu: float, prior_log_sigma: float, max_iter: int
) -> tuple[np.ndarray, bool, str]:
    """([n] utilities fitted on `pairs`' largest linked group of tasks, NaN elsewhere,
    converged, the optimiser's message)."""
    seen = np.zeros(n, dtype=bool)
    seen[pairs.ravel()] = True
    if not seen.any():  # a half of one comparison holds none
        return np.full(n, np.nan), True, ""
    _, labels = _components(n, pairs)
    keep = seen & (labels == np.bincount(labels[seen]).argmax())
    index = np.full(n, -1)
    index[keep] = np.arange(int(keep.sum()))
    linked = keep[pairs[:, 0]] & keep[pairs[:, 1]]
    mu, *_, converged, message = _fit(
        int(keep.sum()), index[pairs[linked]], prior_mu, prior_log_sigma, max_iter
    )
    out = np.full(n, np.nan)
    out[keep] = mu
    return out, converged, message


def sample_comparisons(
    rng: np.random.Generator, tasks: list[str], mu: np.ndarray, sigma: np.ndarray, n: int
) -> list[tuple[str, str, str]]:
    """Draw n comparisons between random distinct task pairs from the Thurstonian model."""
    a = rng.integers(0, len(tasks), n)
    b = (a + rng.integers(1, len(tasks), n)) % len(tasks)  # never equal to a
    a_wins = mu[a] + sigma[a] * rng.standard_normal(n) > mu[b] + sigma[b] * rng.standard_normal(n)
    return [
        (tasks[i], tasks[j], tasks[i] if w else tasks[j])
        for i, j, w in zip(a, b, a_wins, strict=True)
    ]
