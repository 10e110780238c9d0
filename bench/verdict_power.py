"""How often a held-out verdict says "effect": the interval alone (the verdict's rule) vs the
interval and the sign-flip test together, on simulated 0/100 judge scores.

Each run draws n held-out questions, scores the baseline and the steered answers 0 or 100
(refused or not) and asks `stats.paired_delta` (lower bound above zero) and
`stats.sign_flip_p` (one-sided p under `stats.TEST_LEVEL`). Under a null, moves go either
way at random: the share of runs called an effect is the false-positive rate (one-sided, the
bound's level is 2.5%). Under an alternative, steering raises refusals by 25 points: the
share is the power.

    python bench/verdict_power.py --runs 1500
"""

from __future__ import annotations

import argparse

import numpy as np

from steerops import stats

# name -> (baseline refusal rate, steered refusal rate), answers drawn independently
ALTERNATIVES = {
    "baseline never refuses, 25% steered": (0.0, 0.25),
    "30% -> 55%, independent": (0.30, 0.55),
}
NULL_SHARES = (0.2, 0.5)  # under the null: the share of questions that move, up or down
NULL_MOVED = 4  # and a null where exactly this many move: the interval's weak spot


def called(d: np.ndarray, seed: int) -> tuple[bool, bool]:
    """(the interval's lower bound is above zero, and the sign-flip test passes too)."""
    interval = stats.paired_delta(list(d), [0.0] * len(d), seed=seed)
    effect = interval.lo is not None and interval.lo > 0
    p = stats.sign_flip_p(d, seed=seed)
    return effect, effect and p is not None and p < stats.TEST_LEVEL


def rates(draw, runs: int, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    hits = np.array([called(draw(rng), seed=i) for i in range(runs)], dtype=float)
    return float(hits[:, 0].mean()), float(hits[:, 1].mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1500, help="simulated held-out halves a row")
    ap.add_argument("--questions", default="20,40", help="held-out questions n")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    sizes = [int(n) for n in args.questions.split(",")]
    print("| scores | n | interval alone | interval and sign-flip test |")
    print("| --- | --- | --- | --- |")
    for share in NULL_SHARES:
        for n in sizes:

            def null(rng, n=n, share=share):
                moved = rng.random(n) < share
                return np.where(moved, rng.choice([-100.0, 100.0], n), 0.0)

            alone, both = rates(null, args.runs, args.seed)
            what = f"null: {share:.0%} of questions move 100 either way"
            print(f"| {what} | {n} | {alone:.3f} | {both:.3f} |")
    for n in sizes:

        def few(rng, n=n):
            d = np.zeros(n)
            d[rng.choice(n, NULL_MOVED, replace=False)] = rng.choice([-100.0, 100.0], NULL_MOVED)
            return d

        alone, both = rates(few, args.runs, args.seed)
        what = f"null: exactly {NULL_MOVED} questions move 100 either way"
        print(f"| {what} | {n} | {alone:.3f} | {both:.3f} |")
    for name, (base, steered) in ALTERNATIVES.items():
        for n in sizes:

            def alternative(rng, n=n, base=base, steered=steered):
                return 100.0 * ((rng.random(n) < steered) * 1.0 - (rng.random(n) < base))

            alone, both = rates(alternative, args.runs, args.seed)
            print(f"| {name} | {n} | {alone:.3f} | {both:.3f} |")


if __name__ == "__main__":
    main()
