"""The statistics behind every steering number a researcher reads.

One seeded split of the steering questions into a selection half and a held-out half is
shared by the grid, the search and the report (`split_questions`). A "best" config is
always chosen on the selection half (`choose`) and reported with its numbers on the
held-out half, which played no part in choosing it.

Each number comes with a 95% interval for the trait delta: a paired bootstrap over
questions against the unsteered baseline on the same questions (`paired_delta`). The recipe,
so anyone can recompute it:

    d[i]  = sign * (trait[i] - baseline_trait[i])  for every question scored in both
    rng   = numpy.random.default_rng(seed)
    idx   = rng.integers(0, n, size=(RESAMPLES, n))  # questions drawn with replacement
    means = d[idx].mean(axis=1)
    z     = math.sqrt(n / (n - 1)) * scipy.stats.t.ppf(0.975, n - 1)
    tail  = scipy.stats.norm.cdf(-z)  # 0.0086 at n = 10, 0.0159 at n = 20, 0.0203 at n = 40
    lo, hi = numpy.quantile(means, [tail, 1 - tail])   # expanded percentile interval

The plain percentile interval (tail 0.025) is too narrow on few questions: in a null
simulation of judge-like deltas it missed zero 7-8% of the time at n = 20 and 8-10% at
n = 10, and two of them claimed together (Bonferroni) 9%. Widening its tail as Student's t would
for the mean (Hesterberg's expanded percentile interval, "What Teachers Should Know About
the Bootstrap", The American Statistician 2015) brings both to about 5% on such deltas
(tests/test_stats.py pins it); it keeps the bootstrap's asymmetry. It is not exact: where a
third of the questions move a lot either way and the rest barely move, it still misses about
7% at n = 20 and 8% at n = 10. Below `min_questions` no effect is claimed from it (an "ok"
verdict, a cleaning "helps" or "hurts", a preclean flag); "no effect" still is.
One question (n = 1) has no spread to widen: its interval is that question's delta.

Each delta also gets a sign-flip permutation test (`sign_flip_p`, one-sided: under no effect
every question's delta is as likely negative as positive; exact, every sign pattern counted,
up to EXACT_FLIPS questions, sampled beyond). It is printed beside the interval, not used
for the verdict. The two disagree where a few questions moved far and the rest not at
all: 4 of 20 questions up by 100 give a lower bound of +5 and p = 0.5**4 = 0.0625, which an
ok line calls out (`unconfirmed`).
Requiring both would cost power where refusal steering lives (bench/verdict_power.py: with
0/100 scores, a baseline that never refuses and 25% of steered answers refusing, 76% of
20-question held-out halves clear the interval, 38% clear both), while the interval alone
stays at its level under a null whose moves go either way (1.9-2.1% one-sided). The report
then adjusts the held-out p of every cell's chosen config over the report's cells together,
an alias or a near copy counted once with its twin (Benjamini-Hochberg,
`false_discovery_q`): one "ok" among many cells tested can be luck, and its q says whether
it holds once the others are counted.

`sign` is -1 with `steering.direction: negative`, so a positive delta always means "more of
what the steering aims for". A config "has an effect" when `lo > 0`.

A share of hits (a vectors' held-out accuracy) gets a Wilson score interval instead
(`proportion`): exact-enough for small n, never outside [0, 1]; examples that come in
clusters (rollouts of one prompt) count at their effective size (`clustered_proportion`).
A share of pairwise comparisons won (a probe's or a utility fit's pairwise accuracy) gets a
bootstrap over the tasks compared (`pairwise_share`): comparisons that share a task are
not independent draws.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Context, Decimal
from statistics import NormalDist
from typing import Any

import numpy as np
from scipy import stats as scipy_stats
from scipy.stats import t as scipy_t

from steerops.errors import SteeropsError

CONFIDENCE = 0.95
RESAMPLES = 20_000  # the Bonferroni tails of 5 claims on 10 questions sit 6 draws in
# one claim at 95% (tails 50 draws in) over thousands of comparisons a resample
PAIRWISE_RESAMPLES = 2000
# a held-out effect's sign-flip test passes under this one-sided p: the level of the
# interval's lower bound (rounded: 1 - 0.95 is not 0.05 in binary)
TEST_LEVEL = round((1 - CONFIDENCE) / 2, 12)
# the false discovery rate a report's q-values are read at
FDR = round(1 - CONFIDENCE, 12)
# a move of an answer's trait score smaller than this (points on the 0-100 scale) is
# counted apart: a graded judge's wobble, where a 0/100 judge moves by 100 or not at all
MOVED_LITTLE = 10.0

# verdicts of a choice (the grid's and the report's; a search words its own, see search)
OK = "ok"
NO_EFFECT = "no effect"
INCOHERENT = "incoherent held out"
NEEDS_FINER = "needs finer coefficients"
# no steered config coherent, and the unsteered model itself under the bar on the selection
# half: no coefficient reaches it (the judge's coherence scale, or the bar, to check)
BASELINE_INCOHERENT = "baseline incoherent"
# steered configs coherent on the selection half but the judge gave none a trait score, or
# it scored no steered config at all: a failure, not a finding
UNSCORED = "trait unscored"
# a choice the judge gave no held-out trait or coherence score: a failure, not a finding
HELDOUT_UNSCORED = "held out unscored"
# an interval above zero on fewer held-out questions than a sign or permutation test could
# find an effect with: every one of n questions moving the same way has sign-test p =
# 2 * 0.5**n, which first falls below 5% at n = 6 (`min_questions`); a bootstrap over 1-5
# questions reads certainty from them
TOO_FEW = "too few held out"
MIN_HELDOUT = 6
# a choice whose held-out interval lies wholly below zero, on enough questions to tell: the
# trait moved against the steering direction (a vector's sign or a trait's direction to
# check), which "no effect" would hide
OPPOSITE = "opposite effect"
# below this many held-out questions a verdict's interval is called out where it is printed
FEW_HELDOUT = 10

Score = tuple[float | None, float | None]  # (trait, coherence) of one response
_WIDE = Context(prec=400)


def split_questions(
    questions: Sequence[str], heldout_fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """(selection, held-out) questions: a seeded shuffle of the distinct questions, both parts
    non-empty, each in the questions' order."""
    unique = list(dict.fromkeys(questions))
    if len(unique) < 2:
        raise SteeropsError(
            "steering.json questions: the held-out protocol needs at least 2 "
            f"distinct questions, got {len(unique)}"
        )
    order = list(range(len(unique)))
    random.Random(seed).shuffle(order)
    n_heldout = min(len(unique) - 1, max(1, round(len(unique) * heldout_fraction)))
    heldout_idx = set(order[:n_heldout])
    selection = [q for i, q in enumerate(unique) if i not in heldout_idx]
    heldout = [q for i, q in enumerate(unique) if i in heldout_idx]
    return selection, heldout


@dataclass(frozen=True)
class Interval:
    n: int  # questions (or trials, for a proportion) in the estimate
    mean: float | None
    lo: float | None
    hi: float | None


def paired_differences(
    steered: Sequence[float | None], baseline: Sequence[float | None], sign: float = 1.0
) -> np.ndarray:
    """sign * (steered - baseline) over the questions scored in both, in question order."""
    if len(steered) != len(baseline):
        raise ValueError("paired: steered and baseline need one score per question each")
    return np.array(
        [
            sign * (s - b)
            for s, b in zip(steered, baseline, strict=True)
            if s is not None and b is not None
        ],
        dtype=float,
    )


def direction_sign(direction: str) -> float:
    """+1 when steering should raise the trait score (`steering.direction` "positive"),
    -1 when it should lower it ("negative"): deltas are multiplied by it."""
    return -1.0 if direction == "negative" else 1.0


def paired_mean(
    steered: Sequence[Score], baseline: Sequence[Score], sign: float = 1.0
) -> float | None:
    """`paired_delta`'s mean without its interval, from (trait, coherence) scores: over the
    questions whose trait both scored; None when none is."""
    d = paired_differences([s for s, _ in steered], [b for b, _ in baseline], sign)
    return float(d.mean()) if len(d) else None


def paired_delta(
    steered: Sequence[float | None],
    baseline: Sequence[float | None],
    seed: int,
    sign: float = 1.0,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
) -> Interval:
    """Mean of sign * (steered - baseline) over the questions scored in both, with its paired
    bootstrap expanded percentile interval (see the module docstring)."""
    return delta_interval(paired_differences(steered, baseline, sign), seed, resamples, confidence)


def delta_interval(
    d: np.ndarray, seed: int, resamples: int = RESAMPLES, confidence: float = CONFIDENCE
) -> Interval:
    """`paired_delta` of the paired differences `d` themselves."""
    n = len(d)
    if n == 0:
        return Interval(0, None, None, None)
    draws = _draws(seed, n, resamples) if n <= SHARED_DRAWS_N else _draw(seed, n, resamples)
    means = d[draws].mean(axis=1)
    tail = expanded_tail(n, confidence)
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    return Interval(n, float(d.mean()), float(lo), float(hi))


# up to this many questions the bootstrap's draws are kept between calls (at most 4 sets
# of RESAMPLES x n indices: 4 x 10 MB at the bound)
SHARED_DRAWS_N = 64


def _draw(seed: int, n: int, resamples: int) -> np.ndarray:
    """The bootstrap's resampled question indices, (resamples, n)."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


@functools.lru_cache(maxsize=4)
def _draws(seed: int, n: int, resamples: int) -> np.ndarray:
    """`_draw`, the same for every config of a half (one seed, one n), so drawn once and
    kept (read-only: shared by every caller)."""
    draws = _draw(seed, n, resamples)
    draws.flags.writeable = False
    return draws


def expanded_tail(n: int, confidence: float = CONFIDENCE) -> float:
    """The percentile bootstrap's tail probability on each side for `n` paired differences,
    widened as Student's t widens the normal interval of a mean (see the module docstring):
    (1 - confidence) / 2 as n grows, smaller on few questions."""
    if n < 2:
        return (1.0 - confidence) / 2.0  # one difference: every resample is that difference
    z = math.sqrt(n / (n - 1)) * scipy_t.ppf(0.5 + confidence / 2.0, n - 1)
    return float(NormalDist().cdf(-z))


def proportion(hits: float, n: int, confidence: float = CONFIDENCE) -> Interval:
    """hits / n with its Wilson score interval (scipy's `binomtest(hits, n).proportion_ci(
    method="wilson")` for whole hits; half hits, from ties, are allowed, which scipy's is
    not); no estimate from no trials."""
    if n == 0:
        return Interval(0, None, None, None)
    if not 0 <= hits <= n:
        raise ValueError(f"proportion: {hits} hits out of {n}")
    return Interval(n, hits / n, *_wilson(hits / n, n, confidence))


def pairwise_share(
    hits: Sequence[float],
    first: Sequence[Any],
    second: Sequence[Any],
    seed: int,
    resamples: int = PAIRWISE_RESAMPLES,
    confidence: float = CONFIDENCE,
) -> Interval:
    """The share of pairwise comparisons won (`hits` 0, 0.5 for a tie, or 1 per comparison
    of tasks `first[i]` and `second[i]`: task ids, drawn in their sorted order), with a
    bootstrap interval over the tasks compared: each resample draws the tasks with
    replacement and weighs a comparison by the product of its two tasks' draw counts.
    Comparisons that share a task are not independent (a mis-scored task loses all of its
    comparisons), which a Wilson interval over comparisons would ignore. Resamples where
    no comparison survives are left out of the percentiles. When every comparison scored
    the same, resamples cannot vary: the interval is then the Wilson interval with each
    task compared counted once (as `clustered_proportion` counts clusters at 0 or n hits),
    not one of no width."""
    y = np.asarray(hits, dtype=np.float64)
    if not len(y) == len(first) == len(second):
        raise ValueError("pairwise_share: one pair of tasks per hit")
    if len(y) == 0:
        return Interval(0, None, None, None)
    _, task = np.unique(np.asarray([*first, *second]), return_inverse=True)
    a, b = task[: len(y)], task[len(y) :]
    k = int(task.max()) + 1
    if np.ptp(y) == 0:
        return Interval(len(y), float(y[0]), *_wilson(float(y[0]), k, confidence))
    rng = np.random.default_rng(seed)
    shares = []
    for start in range(0, resamples, 64):  # [draws, comparisons] weights, a chunk at a time
        rows = min(64, resamples - start)
        drawn = rng.integers(0, k, size=(rows, k)) + (np.arange(rows) * k)[:, None]
        counts = np.bincount(drawn.ravel(), minlength=rows * k).reshape(rows, k)
        weight = (counts[:, a] * counts[:, b]).astype(np.float64)
        total = weight.sum(axis=1)
        shares.append((weight @ y)[total > 0] / total[total > 0])
    means = np.concatenate(shares)
    if len(means) == 0:
        return Interval(len(y), float(y.mean()), None, None)
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    return Interval(len(y), float(y.mean()), float(lo), float(hi))


def clustered_proportion(
    hits: Sequence[float], clusters: Sequence[Any], confidence: float = CONFIDENCE
) -> Interval:
    """The share of `hits` (0/1 per example) with a Wilson interval at the effective sample
    size of examples that come in clusters (the rollouts of one prompt, the two members
    of a pair): n / deff, where the design effect deff is the cluster-robust variance of
    the share (sum over the k clusters of (hits_c - p n_c)^2, over n^2, times k / (k - 1))
    against the binomial p(1 - p) / n, never below 1, and the interval's critical value is
    Student's t with k - 1 degrees of freedom, not the normal's. The variance is estimated
    from k clusters, so on few of them the normal z with the plain variance is too narrow:
    in tests/test_stats.py's simulation 10 prompts x 16 correlated rollouts missed the true
    share 8.0% of the time at 95% and 8 x 8 10.2%; 4.2% and 6.0% now. Where the rows barely
    correlate (the design effect floored at 1) t keeps it conservative: 4 prompts x 10
    independent rows miss about 0.1%. One example per cluster is `proportion` (the binomial variance
    is known from p, nothing to estimate). At 0 or n hits the variance cannot tell the
    design effect, so each cluster counts once (the Wilson interval of k draws: clusters of
    copies give what one example each would, and no cluster is taken for more draws than
    it may be); so does a single cluster, one draw."""
    n = len(hits)
    if len(clusters) != n:
        raise ValueError(f"clustered_proportion: {n} hits but {len(clusters)} cluster labels")
    if n == 0:
        return Interval(0, None, None, None)
    y = np.asarray(hits, dtype=np.float64)
    if not ((y >= 0) & (y <= 1)).all():  # NaN too
        raise ValueError("clustered_proportion: a hit outside [0, 1]")
    # an example of unknown source (None) is its own cluster, not one with every other
    names = [f"\0{i}" if c is None else str(c) for i, c in enumerate(clusters)]
    _, label = np.unique(np.asarray(names), return_inverse=True)
    k = int(label.max()) + 1
    p = float(y.mean())
    binomial = p * (1 - p) / n
    if k == n or k == 1 or binomial <= 0:  # one cluster: no spread between clusters to read
        return Interval(n, p, *_wilson(p, k, confidence))
    residual = np.bincount(label, weights=y - p, minlength=k)  # hits_c - p n_c
    robust = float(residual @ residual) / (n * n) * k / (k - 1)
    n_eff = n / max(1.0, robust / binomial)
    critical = float(scipy_t.ppf(0.5 + confidence / 2.0, k - 1))
    return Interval(n, p, *_wilson(p, n_eff, confidence, critical))


def _wilson(
    p: float, n: float, confidence: float, critical: float | None = None
) -> tuple[float, float]:
    """The Wilson score interval of share p over n trials (n may be an effective size), at
    the normal's critical value for `confidence` unless another (Student's t) is given."""
    z = NormalDist().inv_cdf(0.5 + confidence / 2.0) if critical is None else critical
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # rounding can step a hair past the bounds at 0 or n hits
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class HalfStats:
    """A config's numbers on one half of the questions, against the baseline on that half."""

    n: int  # questions scored for the delta
    trait_mean: float | None
    coherence_mean: float | None
    trait_delta: float | None  # in the steering direction
    delta_lo: float | None
    delta_hi: float | None
    p: float | None  # one-sided sign-flip p of the delta (`sign_flip_p`)

    def prefixed(self, prefix: str) -> dict[str, Any]:
        return {f"{prefix}_{k}": v for k, v in asdict(self).items()}


def half_stats(
    steered: Sequence[Score], baseline: Sequence[Score], seed: int, sign: float = 1.0
) -> HalfStats:
    """Means over scored responses, the paired delta's interval and its sign-flip test
    (scores in question order)."""
    traits = [t for t, _ in steered]
    d = paired_differences(traits, [t for t, _ in baseline], sign)  # one set, two readings
    delta = delta_interval(d, seed)
    return HalfStats(
        delta.n,
        mean_of(traits),
        mean_of([c for _, c in steered]),
        delta.mean,
        delta.lo,
        delta.hi,
        sign_flip_p(d, seed),
    )


def mean_of(values: Sequence[float | None]) -> float | None:
    """The mean of the scored values (None: none scored)."""
    scored = [v for v in values if v is not None]
    return sum(scored) / len(scored) if scored else None


# ---- choosing on the selection half ---------------------------------------------------------


def choose(
    rows: Sequence[Mapping[str, Any]], min_coherence: float
) -> tuple[Mapping[str, Any] | None, str]:
    """The config to report, chosen on selection-half numbers only, and its verdict.

    Rows carry `coefficient`, `selection_trait_delta`, `selection_delta_lo`,
    `selection_coherence_mean` and the held-out `heldout_delta_lo` and
    `heldout_coherence_mean`. The choice is `select`'s; the held-out half then gives the
    verdict (`heldout_verdict`)."""
    pick, verdict = select(rows, min_coherence)
    if pick is None:
        return pick, verdict or NEEDS_FINER
    if verdict is not None:  # the choice among the coherent configs, none with an effect
        return pick, OPPOSITE if moved_against(pick) else verdict
    return pick, heldout_verdict(pick, min_coherence)


def opposite_words(row: Mapping[str, Any]) -> str:
    """What an OPPOSITE choice says: with no effect where it was chosen, every coherent
    config moved the trait the other way (a vector's sign or the trait's direction); with
    one, the two halves disagree (the selection half's effect reversed held out)."""
    if no_effect_on_selection(row):
        return (
            "the trait moved against the steering direction held out; check the vector's "
            "sign and `steering.direction`"
        )
    return (
        "the selection half's effect reversed held out: the halves disagree (more questions "
        "tell which holds)"
    )


def moved_against(row: Mapping[str, Any]) -> bool:
    """Whether a choice's held-out interval lies wholly below zero on at least MIN_HELDOUT
    questions (`OPPOSITE`)."""
    hi = as_number(row.get("heldout_delta_hi"))
    n = as_number(row.get("heldout_n")) or 0
    return hi is not None and hi < 0 and n >= MIN_HELDOUT


def select(
    rows: Sequence[Mapping[str, Any]], min_coherence: float
) -> tuple[Mapping[str, Any] | None, str | None]:
    """Choose on the selection half: candidates are steered configs (coefficient != 0)
    coherent there; among those with an effect there (interval above zero) the largest delta
    wins (ties: more coherent, smaller |coefficient|, lower layer) -> (pick, None). With
    coherent candidates but none with an effect, (the strongest, NO_EFFECT); with none,
    (None, NEEDS_FINER), or (None, UNSCORED) when steered configs are coherent but none has
    a trait score or none has a coherence score, or (None, BASELINE_INCOHERENT) when the
    rows' `selection_baseline_coherence` is under the bar too."""
    candidates = steered_coherent(rows, min_coherence)
    if not candidates:
        steered = any(as_number(r.get("coefficient")) not in (None, 0.0) for r in rows)
        unread = steered and best_steered_coherence(rows) is None  # a judge that read nothing
        if unread or steered_coherent(rows, min_coherence, scored=False):
            return None, UNSCORED
        base = {as_number(r.get("selection_baseline_coherence")) for r in rows} - {None}
        if base and not any(coherent(c, min_coherence) for c in base):  # one per cell
            return None, BASELINE_INCOHERENT
        return None, NEEDS_FINER
    effective = [r for r in candidates if not no_effect_on_selection(r)]
    if not effective:
        return max(candidates, key=choice_rank), NO_EFFECT
    return max(effective, key=choice_rank), None


def steered_coherent(
    rows: Sequence[Mapping[str, Any]], min_coherence: float, scored: bool = True
) -> list[Mapping[str, Any]]:
    """Steered configs (coefficient != 0) coherent on the selection half (`scored`: with a
    trait delta there)."""
    return [
        r
        for r in rows
        if as_number(r.get("coefficient")) not in (None, 0.0)
        and (not scored or as_number(r.get("selection_trait_delta")) is not None)
        and coherent(r.get("selection_coherence_mean"), min_coherence)
    ]


# Decimals a coherence is read to: a mean of scores summed in another order, or a bootstrap
# quantile, is off by about 1e-14 (92.53999999999999 for 92.54); 9 decimals drop that noise
# and keep every real difference. The bar and the printed text both read it so.
COHERENCE_DECIMALS = 9


def coherent(coherence: Any, min_coherence: float) -> bool:
    """Whether a coherence (to COHERENCE_DECIMALS) reaches the bar; a missing one does not
    (0.0 is a score)."""
    value = as_number(coherence)
    return value is not None and round(value, COHERENCE_DECIMALS) >= min_coherence


def under_bar(
    coherences: Iterable[float | None], min_coherence: float
) -> tuple[int | None, int | None]:
    """(answers with a coherence score, how many of them score under the bar); (None, None)
    when none is scored. A config's coherence is a mean: over the bar, it can still hide a
    quarter of its answers under it."""
    scored = [x for x in (as_number(c) for c in coherences) if x is not None]  # NaN: unscored
    if not scored:
        return None, None
    return len(scored), sum(not coherent(c, min_coherence) for c in scored)


def coherence_unscored(deltas: Iterable[float | None], coherences: Iterable[Any]) -> int:
    """Answers with a trait delta that the judge gave no coherence score (None or NaN): left
    out of the mean, which can then stand over the bar on the answers it could read while
    the ones it would not rate (most often gibberish) carry the delta; `credited_delta`
    counts them as unmoved. An answer with no delta (refused, trait unscored) is in no
    delta, so not here either. Per question, in one order, as `credited_delta` reads them."""
    return sum(
        x is not None and as_number(c) is None for x, c in zip(deltas, coherences, strict=True)
    )


def unscored_heldout(row: Mapping[str, Any]) -> int | None:
    """`coherence_unscored` of a config row's held-out answers; None when it has none."""
    answers = _heldout_answers(row)
    return None if answers is None else coherence_unscored(*answers)


def credited_delta(
    deltas: Iterable[float | None],
    coherences: Iterable[Any],
    min_coherence: float,
    seed: int,
) -> Interval:
    """The paired delta (`delta_interval`) over the same questions, with the answers scored
    under the coherence bar counted as unmoved: such an answer keeps a delta against the
    steering but not one along it. A config's coherence is a mean, so an "ok" config can
    still owe part of its delta to broken answers the trait judge read as the trait (a
    garbled "refusal"); here those count as no change. It is not the mean over the coherent
    answers alone. An answer the judge gave no coherence score counts as unmoved too: a
    judge that will not rate an answer is most often reading gibberish, and nothing vouches
    for its delta (`coherence_unscored` counts them). `deltas` and `coherences` are per
    question, in one order, a delta None where the trait was not scored in both."""
    d = [
        min(x, 0.0) if not coherent(c, min_coherence) else x
        for x, c in zip(deltas, coherences, strict=True)
        if x is not None
    ]
    return delta_interval(np.array(d, dtype=float), seed)


def coherence_interval(coherences: Iterable[Any], seed: int) -> Interval:
    """A mean coherence's interval over the answers scored (the bootstrap `delta_interval`
    draws): the bar decides a verdict, so its margin needs one."""
    scored = [c for c in (as_number(x) for x in coherences) if c is not None]
    return delta_interval(np.array(scored, dtype=float), seed)


def credited_heldout(row: Mapping[str, Any], min_coherence: float, seed: int) -> Interval:
    """`credited_delta` of a config row's held-out answers (`_heldout_answers`); n 0 when
    the row has none."""
    answers = _heldout_answers(row)
    if answers is None:
        return Interval(0, None, None, None)
    return credited_delta(*answers, min_coherence, seed)


def moved_under_bar(
    deltas: Iterable[float | None], coherences: Iterable[Any], min_coherence: float
) -> int:
    """Answers under the coherence bar or not scored for it that moved along the steering
    (delta > 0): the ones `credited_delta` counts as unmoved."""
    return sum(
        x is not None and x > 0 and not coherent(c, min_coherence)
        for x, c in zip(deltas, coherences, strict=True)
    )


def moved_under_heldout(row: Mapping[str, Any], min_coherence: float) -> int | None:
    """`moved_under_bar` of a config row's held-out answers; None when the row has none."""
    answers = _heldout_answers(row)
    return None if answers is None else moved_under_bar(*answers, min_coherence)


def _heldout_answers(row: Mapping[str, Any]) -> tuple[list, list] | None:
    """A config row's held-out (deltas, coherences) in one question order, from its
    `heldout_deltas` and `heldout_coherences` ({question: value}); None without them."""
    deltas, coherences = row.get("heldout_deltas"), row.get("heldout_coherences")
    if not isinstance(deltas, Mapping) or not isinstance(coherences, Mapping):
        return None
    return list(deltas.values()), [coherences.get(q) for q in deltas]


def under_bar_phrase(
    scored: Any, under: Any, min_coherence: float | None, unscored: Any = None
) -> str:
    """ "5 of 20 answers under 68, 3 answers not scored for coherence", either part alone, or
    "" when no answer is under the bar (or none was scored) and every answer was scored."""
    scored, under, unscored = as_number(scored), as_number(under), as_number(unscored)
    parts = []
    if scored and under and min_coherence is not None:
        parts.append(f"{int(under)} of {int(scored)} answers under {min_coherence:g}")
    if unscored:
        parts.append(
            f"{int(unscored)} answer{'' if unscored == 1 else 's'} not scored for coherence"
        )
    return ", ".join(parts)


def under_bar_text(
    scored: Any, under: Any, min_coherence: float | None, unscored: Any = None
) -> str:
    """ " (5 of 20 answers under 68)" after a coherence, or "" (`under_bar_phrase`)."""
    phrase = under_bar_phrase(scored, under, min_coherence, unscored)
    return f" ({phrase})" if phrase else ""


def unmoved_phrase(
    under: Any,
    min_coherence: float | None,
    moved: Any,
    credited: Sequence[Any],
    unscored: Any = None,
) -> str:
    """ "with the 5 answers under 68 counted as unmoved (2 had moved along the steering),
    delta +40.0 [+10.0, +65.0]": `credited_delta`'s (mean, lo, hi) beside the held-out
    delta, or "" when no answer is under the bar or unscored, or it was not computed.
    `unscored`: answers not scored for coherence, counted as unmoved too."""
    under, moved, unscored = as_number(under), as_number(moved), as_number(unscored)
    if min_coherence is None or not credited or as_number(credited[0]) is None:
        return ""
    which = []
    if under:
        which.append(f"{_answers(under)} under {min_coherence:g}")
    if unscored:
        which.append(f"{_answers(unscored)} not scored for coherence")
    if not which:
        return ""
    had = "" if moved is None else f" ({int(moved)} had moved along the steering)"
    return (
        f"with the {' and the '.join(which)} counted as unmoved{had}, delta "
        f"{interval_text(*credited)}"
    )


def _answers(count: float) -> str:
    return "answer" if count == 1 else f"{int(count)} answers"


def coherence_text(value: Any, decimals: int = 1) -> str:
    """A coherence as text, rounded down: one under the bar never prints at or above it
    (67.996 is "67.9", not "68.0"). Read to COHERENCE_DECIMALS first, as `coherent` reads
    it (92.53999999999999 is "92.54"), so the text is >= the bar exactly when `coherent`
    says it reaches it."""
    value = as_number(value)
    if value is None:
        return "n/a"
    if not math.isfinite(value):
        return str(value)
    step = Decimal(1).scaleb(-decimals)
    # enough digits for any float's integer part (the default context keeps 28)
    snapped = round(value, COHERENCE_DECIMALS)
    return str(Decimal(repr(snapped)).quantize(step, rounding=ROUND_FLOOR, context=_WIDE))


def delta_text(value: Any, decimals: int = 1) -> str:
    """A signed delta or interval bound; a nonzero one that would print as zero keeps
    enough digits to show its sign (an ok lower bound of 0.03 is "+0.03", not "+0.0")."""
    value = as_number(value)
    if value is None:
        return "n/a"
    text = f"{value:+.{decimals}f}"
    if value != 0 and float(text) == 0:
        text = f"{value:+.1g}"
    return text


def p_text(value: Any) -> str:
    """A p or q value to 3 significant digits, rounded up: one above a bar never prints under
    it (0.05001 is "0.0501"), and one just under a bar shows it (0.0249 is "0.0249");
    "< 0.001" below that."""
    value = as_number(value)
    if value is None:
        return "n/a"
    if value < 0.001:
        return "< 0.001"
    decimals = 2 - math.floor(math.log10(value))
    step = Decimal(1).scaleb(-decimals)
    return str(Decimal(repr(value)).quantize(step, rounding=ROUND_CEILING, context=_WIDE))


def interval_text(mid: Any, lo: Any, hi: Any) -> str:
    """ "estimate [low, high]" of a delta and its interval, as `delta_text` prints each."""
    return f"{delta_text(mid)} [{delta_text(lo)}, {delta_text(hi)}]"


def no_effect_on_selection(row: Mapping[str, Any]) -> bool:
    """Whether a config's selection-half interval reaches zero: `select` picks among the
    others, and a NO_EFFECT choice with it was decided there, not by its held-out interval."""
    return (as_number(row.get("selection_delta_lo")) or 0.0) <= 0


def sign_flip_p(deltas: Iterable[float], seed: int, resamples: int = RESAMPLES) -> float | None:
    """One-sided p that paired `deltas` have a mean above zero, by a sign-flip permutation
    test: with no effect each question's delta is as likely negative as positive, so the
    observed mean is ranked among the means under flipped signs. Exact (every sign pattern
    counted) up to `EXACT_FLIPS` deltas, else `resamples` random patterns with the observed
    one counted among them (so p is never 0), as scipy.stats.permutation_test counts (the
    tests compare the two). Written with numpy: every config of a grid gets one per half,
    and scipy's took 40-100 ms a call against about 1 ms. None without deltas, or with one
    that is not finite (no mean to rank: every comparison with nan is false, which read as
    p 0)."""
    d = np.asarray(list(deltas), dtype=float)
    n = d.size
    if n == 0 or not np.isfinite(d).all():
        return None
    observed = d.mean()
    # a flipped pattern that ties the observed mean counts, up to rounding (scipy's margin)
    floor = observed - 100 * np.finfo(float).eps * abs(observed)
    if n <= EXACT_FLIPS:
        return _exact_flip_share(d, floor)
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, resamples, _FLIP_CHUNK):  # bounded memory on long halves
        rows = min(_FLIP_CHUNK, resamples - start)
        signs = 1.0 - 2.0 * rng.integers(0, 2, size=(rows, n))
        hits += int(np.count_nonzero(signs @ d / n >= floor))
    return (hits + 1) / (resamples + 1)


def _exact_flip_share(d: np.ndarray, floor: float) -> float:
    """The share of all 2**n sign patterns whose mean reaches `floor`, counted without
    listing them: every signed sum of each half of `d`, one half sorted, each sum of the
    other looked up in it (2 x 2**(n/2) sums instead of 2**n)."""

    def signed_sums(values: np.ndarray) -> np.ndarray:
        sums = np.zeros(1)
        for v in values:
            sums = np.concatenate((sums + v, sums - v))
        return sums

    half = d.size // 2
    first, second = signed_sums(d[:half]), np.sort(signed_sums(d[half:]))
    # two half sums round apart from the mean's one sum: a tie (the observed pattern
    # itself) must still count, so the bar is lowered by their rounding's bound as well
    # (deltas that cancel to under it, 1e15 against -1e15, would count too many: judge
    # deltas, within +-100, are far from it)
    bar = floor * d.size - d.size * np.finfo(float).eps * np.abs(d).sum()
    below = np.searchsorted(second, bar - first, side="left")
    return float(np.sum(second.size - below)) / 2.0**d.size


# the exact count takes about 10 ms at 34 deltas (2 x 131,072 sums) and 4x more per 2 beyond
EXACT_FLIPS = 34


_FLIP_CHUNK = 4096


def false_discovery_q(ps: Sequence[float | None]) -> list[float | None]:
    """Benjamini-Hochberg adjusted p-values of the tests in `ps` read together (a None is no
    test: it stays None and does not count): the findings with q < 0.05 are a set in which
    at most 5% are expected to be false, however many tests the reader looked at."""
    known = [i for i, p in enumerate(ps) if p is not None]
    out: list[float | None] = [None] * len(ps)
    if known:
        q = scipy_stats.false_discovery_control([float(ps[i]) for i in known], method="bh")
        for i, value in zip(known, np.atleast_1d(q), strict=True):
            out[i] = float(value)
    return out


def family_confidence(k: int) -> float:
    """Each interval's confidence when `k` are claimed together (Bonferroni): all k hold
    at CONFIDENCE."""
    return 1 - (1 - CONFIDENCE) / max(k, 1)


def min_questions(k: int = 1) -> int:
    """Fewest paired questions on which any test could claim one of `k` effects together at
    CONFIDENCE: n questions all moving one way have one-sided sign-test p = 0.5**n, which
    must reach (1 - CONFIDENCE) / (2k). 6 for one claim (MIN_HELDOUT), 7 for 2-3, 8 for
    4-6. Below it a bootstrap interval shrinks to the data's range and reads certainty
    from a handful of questions."""
    return math.ceil(math.log2(2 * max(k, 1) / (1 - CONFIDENCE)) - 1e-9)


def heldout_verdict(row: Mapping[str, Any], min_coherence: float) -> str:
    """OK, NO_EFFECT (OPPOSITE when the interval lies below zero: `moved_against`) or
    INCOHERENT from the held-out interval and coherence; HELDOUT_UNSCORED
    when the judge gave either no score there (a judge failure must not read as "no
    effect"); TOO_FEW for an interval above zero on fewer than MIN_HELDOUT questions. The
    sign-flip test does not decide (`unconfirmed` says where it disagrees): where few
    questions move, its discreteness would halve the verdict's power (see the module
    docstring)."""
    lo, coherence = (
        as_number(row.get("heldout_delta_lo")),
        as_number(row.get("heldout_coherence_mean")),
    )
    if lo is None or coherence is None:
        return HELDOUT_UNSCORED
    if lo <= 0:
        return OPPOSITE if moved_against(row) else NO_EFFECT
    if not coherent(coherence, min_coherence):
        return INCOHERENT
    return OK if (as_number(row.get("heldout_n")) or 0) >= MIN_HELDOUT else TOO_FEW


def unconfirmed(p: Any, lo: Any) -> bool:
    """Whether an interval above zero (lower bound `lo`) lacks its sign-flip test: one-sided
    `p` at or above TEST_LEVEL, the level of the interval's lower bound (False without a p)."""
    p, lo = as_number(p), as_number(lo)
    return p is not None and lo is not None and lo > 0 and p >= TEST_LEVEL


SCORE_RANGE = (0.0, 100.0)  # every judge scores trait and coherence 0-100
# a mean this close to the scale's end has no room to move (a probability-weighted judge's
# answers of "100" average a hair under it)
SATURATED_WITHIN = 0.5


def saturated(pick: Mapping[str, Any]) -> bool:
    """Whether `pick` moved the trait along the steering to within SATURATED_WITHIN of the
    judge's scale end on the selection half (100 pushing up, 0 pushing down; a positive
    delta in the steering direction cannot end at the other one): a larger coefficient
    cannot steer more there, only cost coherence."""
    mean = as_number(pick.get("selection_trait_mean"))
    delta = as_number(pick.get("selection_trait_delta"))  # in the steering direction
    if mean is None or delta is None or not delta > 0:
        return False
    return min(abs(mean - end) for end in SCORE_RANGE) <= SATURATED_WITHIN


def at_largest_coefficient(rows: Sequence[Mapping[str, Any]], pick: Mapping[str, Any]) -> bool:
    """Whether `pick` sits at the largest |coefficient| its layer was run with (of more than
    one) and is not `saturated`: the optimum may lie beyond the grid."""
    if saturated(pick):
        return False
    at_layer = {
        abs(c)
        for r in rows
        if r.get("layer") == pick["layer"] and (c := as_number(r.get("coefficient"))) is not None
    }
    return len(at_layer) > 1 and abs(as_number(pick["coefficient"]) or 0.0) >= max(at_layer)


def few_questions_note(n: Any) -> str | None:
    """The caveat a verdict on fewer than FEW_HELDOUT held-out questions carries."""
    n = int(as_number(n) or 0)
    if n >= FEW_HELDOUT:
        return None
    return (
        f"only {n} held-out questions: too few for the interval to mean much; steer more "
        "questions, e.g. --subset 40"
    )


def degenerate(lo: Any, hi: Any) -> bool:
    """Whether a bootstrap interval has no width: every question gave the same difference,
    so resampling cannot vary it (few questions, not precision)."""
    lo, hi = as_number(lo), as_number(hi)
    return lo is not None and lo == hi


DEGENERATE_NOTE = "every question gave the same delta: an interval of no width, not precision"


def best_steered_coherence(rows: Sequence[Mapping[str, Any]]) -> float | None:
    """The best selection-half coherence any steered (coefficient != 0) config reached."""
    values = [
        as_number(r.get("selection_coherence_mean"))
        for r in rows
        if as_number(r.get("coefficient")) not in (None, 0.0)
    ]
    scored = [v for v in values if v is not None]
    return max(scored) if scored else None


def choice_rank(row: Mapping[str, Any]) -> tuple[float, float, float, float, float, int, str]:
    """The key the choice on the selection half maximises (`select`): delta, coherence
    (both to COHERENCE_DECIMALS: float noise is no lead), the smaller |coefficient|, the
    lower layer; the last keys make it independent of row order: a positive coefficient
    before its negative twin, one vector before several ("4+8"), then the layer's text."""
    coefficient = as_number(row["coefficient"]) or 0.0
    layer = str(row.get("layer"))
    return (
        round(as_number(row["selection_trait_delta"]) or 0.0, COHERENCE_DECIMALS),
        round(as_number(row.get("selection_coherence_mean")) or 0.0, COHERENCE_DECIMALS),
        -abs(coefficient),
        -_first_layer(row.get("layer")),
        coefficient,
        -layer.count("+"),
        layer,
    )


def _first_layer(layer: Any) -> float:
    """A config's (first) layer as a number: 12, "12", or "4+8" (several vectors) -> 4."""
    value = as_number(layer)
    if value is None and isinstance(layer, str) and "+" in layer:
        value = as_number(layer.split("+")[0])
    return value or 0.0


def as_number(value: Any) -> float | None:
    """A float, or None for missing and NaN (pandas rows carry NaN for missing)."""
    if value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return None if x != x else x
