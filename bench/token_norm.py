"""The `norm` unit's per-layer statistics: the prompt median, three exact ways (four), and
the massive-token rule it serves, by the median's sort or by bisection over the peaks.

Extraction computes `token_norm_stats` for every layer of every batch. Its costly part is
each row's median |x| over the prompt's tokens and all dims: sorted (`prompt_median`:
nanmedian over NaN-masked values), bisected (15 counting passes over the bf16 bit
patterns) or counted (one bincount of each row's bf16 bit patterns, then a cumulative sum).
The last two were tried because a sort seemed wasteful; on an H200 both were slower, and on
CPUs at extraction's shapes (docs/benchmarks.md), so extraction sorts and they live on here
as the record. `--compiled` adds the bisection under torch.compile (each pass one fused
counting reduction; slower too on the H200; its first call compiles for tens of seconds).
The ways run on the same random batch, rotate `--repeats` times, and must agree exactly.
The rule only asks whether each token's peak exceeds ratio x the median, so it needs no
median (`massive_by_peaks`: a bisection over each row's sorted peaks, each step one count);
not used by extraction until a device shows it faster than the sort.

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


def massive_by_sort(magnitude, prompt, threshold: float, ratio: float) -> torch.Tensor:
    """`token_norm_stats`'s massive tokens [batch, seq]: the peak over `threshold` and over
    `ratio` x the row's prompt median (the sort)."""
    peak = magnitude.amax(-1).float()
    median = prompt_median(magnitude, prompt).float()
    return (peak > threshold) & (peak > ratio * median[:, None])


def massive_by_peaks(magnitude, prompt, threshold: float, ratio: float) -> torch.Tensor:
    """The same tokens with no median: `fl(ratio x m) < peak` holds for the lower median m
    exactly when at least rank = (n + 1) // 2 of the row's values v have
    `fl(ratio x v) < peak` (float32 rounding keeps the product monotone in v), and that
    count only grows with the peak. So the tokens are those whose peak reaches the
    smallest of the row's sorted peaks that passes: a bisection over them, about 9
    counting passes over the values for 256 tokens, and no host synchronisation."""
    peak = magnitude.amax(-1).float()  # [batch, seq]; NaN for a token with a NaN
    valid = prompt[..., None] & ~magnitude.isnan()
    scaled = torch.where(valid, magnitude.float() * ratio, float("inf")).flatten(1)
    rank = torch.div(valid.flatten(1).sum(-1) + 1, 2, rounding_mode="floor")
    # NaN peaks are never massive: searched as -inf, so the predicate stays monotone
    ordered = peak.nan_to_num(nan=float("-inf")).sort(-1).values
    lo = torch.full_like(rank, -1)  # ordered[lo] fails (-1: before the first)
    hi = torch.full_like(rank, ordered.shape[1])  # ordered[hi] passes (seq: past the last)
    for _ in range(ordered.shape[1].bit_length()):
        mid = (lo + hi) // 2
        at = ordered.gather(1, mid.clamp(0, ordered.shape[1] - 1)[:, None])
        inside = (mid >= 0) & (mid < ordered.shape[1])  # converged rows look at lo
        passes = ((scaled < at).sum(-1) >= rank) & inside
        hi, lo = torch.where(passes, mid, hi), torch.where(passes, lo, mid)
    cut = ordered.gather(1, hi.clamp(max=ordered.shape[1] - 1)[:, None])
    found = (hi < ordered.shape[1]) & (rank > 0)
    return (peak > threshold) & (peak >= cut) & found[:, None]


def compare_massive(args, magnitude, prompt, sync) -> bool:
    """The massive-token rule by the sort and by bisection over the peaks: same tokens, and
    their times, alternating. Tokens are planted so about half the planted ones pass."""
    threshold, ratio = 100.0, 1000.0
    planted = magnitude.clone()
    gen = torch.Generator(device=args.device).manual_seed(1)
    rows = torch.arange(args.batch, device=args.device)
    median = prompt_median(planted, prompt).float()
    for token in (-1, 0, args.seq // 2):  # a prompt's first tokens sit at the left padding
        scale = torch.rand(args.batch, generator=gen, device=args.device) * 1.0 + 0.5
        planted[rows, token, 7] = (ratio * median * scale).to(planted.dtype)
    ways = {"sort": massive_by_sort, "peaks": massive_by_peaks}
    got = {name: way(planted, prompt, threshold, ratio) for name, way in ways.items()}
    same = torch.equal(got["sort"], got["peaks"])
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    for rep in range(args.repeats):
        for name in list(ways)[rep % 2 :] + list(ways)[: rep % 2]:
            sync()
            start = time.perf_counter()
            ways[name](planted, prompt, threshold, ratio)
            sync()
            seconds[name].append(time.perf_counter() - start)
    print(f"massive tokens ({int(got['sort'].sum())} of {got['sort'].numel()}), identical: {same}")
    for name, values in seconds.items():
        print(f"{name:>10}: {spread([1e3 * v for v in values], '.2f', ' ms')}")
    print(f"sort / peaks: {spread(ratios(seconds['sort'], seconds['peaks']), '.2f', 'x')}")
    return same


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
    for name in names[1:]:
        paired = ratios(seconds["nanmedian"], seconds[name])
        print(f"nanmedian / {name}: {spread(paired, '.2f', 'x')}")
    massive_same = compare_massive(args, magnitude, prompt, sync)
    if not (same and massive_same):
        raise SystemExit("the ways disagree")


if __name__ == "__main__":
    main()
