"""The judge's likelihood of a batch: the log-softmax a few rows at a time vs over the whole.

`judges.fluency` reads a batch's per-token NLL from the prompts' last logits and the
answers' own ([rows, 1 + columns, vocab] in all). It used to concatenate the two and take one
log-softmax: two fresh copies as large as the logits (about 150 MB each for 32 rows of 24
tokens and SmolLM2's 49,152 words), paid in page faults. Now it takes the log-softmax of a
few rows at a time from each block. Both ways run on the same random logits, alternate
`--repeats` times, and must give the same values.

    python bench/nll_chunks.py --threads 2
"""

from __future__ import annotations

import argparse
import time

import torch

from steer_stage import _one_log_softmax  # the way before, as the stage bench runs it
from steerops.judges.fluency import _mean_nll
from summary import ratios, spread


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=32, help="the judge's batch_size")
    ap.add_argument("--tokens", type=int, default=24, help="answer tokens per row")
    ap.add_argument("--vocab", type=int, default=49152, help="SmolLM2's")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    last = torch.randn(args.rows, args.vocab)
    logits = torch.randn(args.rows, args.tokens - 1, args.vocab)
    targets = torch.randint(0, args.vocab, (args.rows, args.tokens))
    mask = torch.ones(args.rows, args.tokens)
    ways = {
        "chunked": lambda: _mean_nll([last[:, None], logits], targets, mask),
        "one": lambda: _one_log_softmax([last[:, None], logits], targets, mask),
    }
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    values = {}
    for _ in range(args.repeats):
        for name, way in ways.items():
            start = time.perf_counter()
            values[name] = way()
            seconds[name].append(time.perf_counter() - start)
    for name, s in seconds.items():
        print(f"{name:>8}: {spread([1e3 * x for x in s], '.0f', ' ms')}")
    paired = spread(ratios(seconds["one"], seconds["chunked"]), ".1f", "x")
    print(f"one / chunked, paired: {paired}")
    print(f"same values: {values['chunked'] == values['one']}")


if __name__ == "__main__":
    main()
