"""The `norm` unit's per-layer statistics: the prompt median, three exact ways (four).

Extraction computes `token_norm_stats` for every layer of every batch. Its costly part is
each row's median |x| over the prompt's tokens and all dims: sorted (`prompt_median`:
nanmedian over NaN-masked values), bisected (15 counting passes over the bf16 bit
patterns) or counted (one bincount of each row's bf16 bit patterns, then a cumulative sum).
The last two were tried because a sort seemed wasteful; on an H200 both were slower, and on
CPUs at extraction's shapes (docs/benchmarks.md), so extraction sorts and they live on here
as the record. `--compiled` adds the bisection under torch.compile (each pass one fused
counting reduction; slower too on the H200; its first call compiles for tens of seconds).
The ways run on the same random batch, rotate `--repeats` times, and must agree exactly.

    python bench/token_norm.py                          # CPU, a SmolLM2-sized batch
    python bench/token_norm.py --device cuda --batch 64 --seq 256 --hidden 2560  # gemma-3-4b
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from steerops.extract.token_norm import prompt_median
from summary import ratios, spread

# Non-negative 16-bit floats: the bit pattern of +inf, the largest non-NaN value
_HALF_INF = {torch.bfloat16: 0x7F80, torch.float16: 0x7C00}


def histogram_median(magnitude: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
    """`prompt_median` of a 16-bit float `magnitude` from one count of each row's bit
    patterns (non-negative floats order as their patterns do): no sort."""
    inf = _HALF_INF[magnitude.dtype]
    bins = inf + 2  # every pattern from +0 to +inf, then one for the values left out
    valid = prompt[..., None] & ~magnitude.isnan()
    bits = magnitude.contiguous().view(torch.int16).int()
    row_start = torch.arange(len(magnitude), device=magnitude.device, dtype=torch.int32) * bins
    index = torch.where(valid, bits, inf + 1) + row_start[:, None, None]
    counts = torch.bincount(index.flatten(), minlength=len(magnitude) * bins)
    at_or_below = counts.view(len(magnitude), bins)[:, :-1].cumsum(-1)
    rank = torch.div(valid.flatten(1).sum(-1) + 1, 2, rounding_mode="floor")
    # the lower median is the smallest pattern with at least `rank` values at or below it
    pattern = (at_or_below < rank[:, None]).sum(-1)
    median = pattern.to(torch.int16).view(magnitude.dtype)
    return torch.where(rank > 0, median, float("nan"))


# Non-negative floats order as their bit patterns read as signed integers; per dtype: that
# integer type, the pattern of +inf (the largest non-NaN value) and a pattern above it.
_BITS = {
    torch.bfloat16: (torch.int16, 0x7F80, 0x7FFF),
    torch.float16: (torch.int16, 0x7C00, 0x7FFF),
    torch.float32: (torch.int32, 0x7F800000, 0x7FFFFFFF),
}


def bisected_median(magnitude: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
    """`prompt_median` by bisection on the values' bit patterns: a fixed number of counting
    passes (15 for 16-bit floats, 31 for float32), no sort and no host synchronisation."""
    if magnitude.dtype not in _BITS:
        magnitude = magnitude.float()
    int_type, inf, above = _BITS[magnitude.dtype]
    bits = magnitude.contiguous().view(int_type)
    valid = prompt[..., None] & ~magnitude.isnan()  # NaNs of either sign are left out
    bits = torch.where(valid, bits, above).flatten(1)  # the rest count above every value
    # the lower median is the smallest v with at least `rank` values <= v
    rank = torch.div(valid.flatten(1).sum(-1) + 1, 2, rounding_mode="floor")
    lo = torch.full_like(rank, -1)  # fewer than `rank` values <= lo
    hi = torch.full_like(rank, inf)  # at least `rank` values <= hi (for rows with any)
    for _ in range(int(inf).bit_length()):
        mid = (lo + hi) // 2
        enough = (bits <= mid[:, None].to(int_type)).sum(-1) >= rank
        hi, lo = torch.where(enough, mid, hi), torch.where(enough, lo, mid)
    median = hi.to(int_type).view(magnitude.dtype)
    return torch.where(rank > 0, median, float("nan"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--hidden", type=int, default=576)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--compiled", action="store_true", help="also the bisection, compiled")
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

    ways = {
        "nanmedian": prompt_median,
        "bisection": bisected_median,
        "histogram": histogram_median,
    }
    if args.compiled:  # one fused counting reduction a pass, not a bool tensor written and summed
        ways["bisection_compiled"] = torch.compile(bisected_median, dynamic=True, fullgraph=True)
    results = {name: way(magnitude, prompt) for name, way in ways.items()}  # warm-up
    same = all(torch.equal(results["nanmedian"], got) for got in results.values())
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    names = list(ways)
    for rep in range(args.repeats):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:  # each place in turn
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
        raise SystemExit("the ways disagree")
    for name in names[1:]:
        paired = ratios(seconds["nanmedian"], seconds[name])
        print(f"nanmedian / {name}: {spread(paired, '.2f', 'x')}")


if __name__ == "__main__":
    main()
