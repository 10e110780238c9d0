"""The `norm` unit's per-layer statistics: the prompt median by bisection vs nanmedian.

Extraction computes `token_norm_stats` for every layer of every batch. Its costly part is
each row's median |x| over the prompt's tokens and all dims: sorted (`nanmedian` over
NaN-masked values, what `prompt_median` does off CUDA) or bisected (`bisected_median`: 15
counting passes over the bf16 bit patterns, what it does on CUDA).
Both ways run on the same random batch, alternate `--repeats` times, and must agree exactly.

    python bench/token_norm.py                          # CPU, a SmolLM2-sized batch
    python bench/token_norm.py --device cuda --batch 64 --seq 256 --hidden 2560  # gemma-3-4b
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from steerops.extract.token_norm import bisected_median
from summary import ratios, spread


def nanmedian(magnitude: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
    """The sort (what `prompt_median` does off CUDA)."""
    masked = magnitude.masked_fill(~prompt[..., None], float("nan")).flatten(1)
    return masked.nanmedian(-1).values


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=576)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    gen = torch.Generator(device=args.device).manual_seed(0)
    shape = (args.batch, args.seq, args.hidden)
    hidden = torch.randn(shape, generator=gen, device=args.device).bfloat16()
    # left padding: prompts of varied length end at the last column
    lengths = torch.randint(args.seq // 4, args.seq + 1, (args.batch,), device=args.device)
    prompt = torch.arange(args.seq, device=args.device) >= (args.seq - lengths)[:, None]
    magnitude = hidden.abs()  # as token_norm_stats passes it

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    ways = {"bisection": bisected_median, "nanmedian": nanmedian}
    results = {name: way(magnitude, prompt) for name, way in ways.items()}  # warm-up
    same = torch.equal(results["bisection"], results["nanmedian"])
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    for rep in range(args.repeats):
        for name in ways if rep % 2 == 0 else reversed(list(ways)):
            sync()
            start = time.perf_counter()
            ways[name](magnitude, prompt)
            sync()
            seconds[name].append(time.perf_counter() - start)
    print(
        f"token-norm median of {args.batch} x {args.seq} x {args.hidden} on {args.device}, "
        f"identical: {same}"
    )
    for name, values in seconds.items():
        print(
            f"{name:>10}: {1e3 * statistics.median(values):9.2f} ms median "
            f"[{1e3 * min(values):.2f}-{1e3 * max(values):.2f}] of {len(values)}"
        )
    if not same:
        raise SystemExit("the two ways disagree")
    paired = ratios(seconds["nanmedian"], seconds["bisection"])
    print(f"nanmedian / bisection: {spread(paired, '.1f', 'x')}")


if __name__ == "__main__":
    main()
