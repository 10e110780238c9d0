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

# The package's modules, by what they compute; every name is read as `stats.NAME`.
from steerops.stats.choice import (  # noqa: F401
    BASELINE_INCOHERENT,
    FEW_HELDOUT,
    HELDOUT_UNSCORED,
    INCOHERENT,
    MIN_HELDOUT,
    NEEDS_FINER,
    NO_EFFECT,
    OK,
    OPPOSITE,
    SATURATED_WITHIN,
    SCORE_RANGE,
    TOO_FEW,
    UNSCORED,
    at_largest_coefficient,
    best_steered_coherence,
    choice_rank,
    choose,
    heldout_verdict,
    moved_against,
    no_effect_on_selection,
    opposite_words,
    saturated,
    select,
    steered,
    steered_coherent,
    unconfirmed,
)
from steerops.stats.coherence import (  # noqa: F401
    COHERENCE_DECIMALS,
    MOVED_LITTLE,
    coherence_interval,
    coherence_unscored,
    coherent,
    credited_delta,
    credited_heldout,
    moved_under_bar,
    moved_under_heldout,
    under_bar,
    unscored_heldout,
)
from steerops.stats.halves import (  # noqa: F401
    HalfStats,
    half_stats,
    split_questions,
)
from steerops.stats.intervals import (  # noqa: F401
    CONFIDENCE,
    PAIRWISE_RESAMPLES,
    RESAMPLES,
    SHARED_DRAWS_N,
    Interval,
    Score,
    as_number,
    clustered_proportion,
    delta_interval,
    direction_sign,
    expanded_tail,
    mean_of,
    paired_delta,
    paired_differences,
    paired_mean,
    pairwise_share,
    proportion,
)
from steerops.stats.permutation import (  # noqa: F401
    EXACT_FLIPS,
    FDR,
    TEST_LEVEL,
    false_discovery_q,
    family_confidence,
    min_questions,
    sign_flip_p,
)
from steerops.stats.words import (  # noqa: F401
    DEGENERATE_NOTE,
    coherence_text,
    degenerate,
    delta_text,
    few_questions_note,
    interval_text,
    p_text,
    under_bar_phrase,
    under_bar_text,
    unmoved_phrase,
)
