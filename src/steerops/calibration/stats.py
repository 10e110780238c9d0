"""Massive-activation statistics as pure functions on tensors.

Per layer, response-token activations stream through `LayerSums.add` (running sums only,
never all tokens in memory); `layer_stats` turns the sums into the calibration record and
`global_dims` applies the one cross-layer rule every stage shares.

Massive-dim rule: a token's dim is massive when |x_d| > threshold x median_d'(|x_d'|) of
that token; a dim is listed in `massive_dims` when that holds on at least `min_share` of the
layer's response tokens (and on at least one token).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LayerSums:
    sum: torch.Tensor  # [hidden] float64, sum of activations over tokens
    massive_count: torch.Tensor  # [hidden] int64, tokens on which the dim was massive
    n_tokens: int = 0
    norm_sum: float = 0.0  # sum of token L2 norms
    ratio_sum: float = 0.0  # sum over tokens of max|x| / median|x|
    ratio_max: float = 0.0

    @classmethod
    def zeros(cls, hidden: int) -> LayerSums:
        return cls(torch.zeros(hidden, dtype=torch.float64), torch.zeros(hidden, dtype=torch.int64))

    def add(self, x: torch.Tensor, threshold: float) -> None:
        """Fold in `x`: [tokens, hidden] activations of response tokens (any device/dtype)."""
        if x.shape[0] == 0:
            return
        x = x.float()
        magnitude = x.abs()
        median = median_last(magnitude).clamp_min(torch.finfo(torch.float32).tiny)
        ratio = magnitude.amax(-1) / median
        massive = magnitude > threshold * median[:, None]
        # Float64 sums keep the mean exact over millions of tokens (MPS has no float64).
        wide = torch.float32 if x.device.type == "mps" else torch.float64
        self.sum += x.sum(0, dtype=wide).cpu().double()
        self.massive_count += massive.sum(0).cpu()
        self.n_tokens += x.shape[0]
        self.norm_sum += float(x.norm(dim=-1).sum(dtype=wide))
        self.ratio_sum += float(ratio.double().sum())
        self.ratio_max = max(self.ratio_max, float(ratio.max()))


def median_last(x: torch.Tensor) -> torch.Tensor:
    """Median over the last dim, averaging the two middle values for an even count (as numpy
    does; `torch.median` returns the lower one)."""
    values = x.sort(dim=-1).values
    n = values.shape[-1]
    if n % 2:
        return values[..., n // 2]
    return (values[..., n // 2 - 1] + values[..., n // 2]) / 2


def relative_magnitude(mean: torch.Tensor) -> torch.Tensor:
    """|mean_d| divided by the layer's average |mean| over dims."""
    magnitude = mean.abs()
    scale = magnitude.mean()
    return magnitude / scale if scale > 0 else torch.zeros_like(magnitude)


def layer_stats(sums: LayerSums, top_k: int, min_share: float) -> dict:
    """The per-layer calibration record (see docs/internals.md, Calibration)."""
    n = max(sums.n_tokens, 1)
    mean = sums.sum / n
    relative = relative_magnitude(mean)
    top = mean.abs().argsort(descending=True, stable=True)[:top_k].tolist()
    share = sums.massive_count.double() / n
    massive = [
        d
        for d in share.argsort(descending=True, stable=True).tolist()
        if sums.massive_count[d] > 0 and share[d] >= min_share
    ]
    return {
        "n_tokens": sums.n_tokens,
        "top_dims": top,
        "top_values": [round(float(mean[d]), 6) for d in top],
        "relative": [round(float(relative[d]), 4) for d in top],
        "max_median_ratio": {"mean": round(sums.ratio_sum / n, 4), "max": round(sums.ratio_max, 4)},
        "massive_dims": massive,
        "massive_share": {str(d): round(float(share[d]), 4) for d in massive},
        "norm": round(sums.norm_sum / n, 6),
    }


def global_dims(
    top_dims_by_layer: dict[int, list[int]],
    top_n: int,
    min_layers: int,
    relative_by_layer: dict[int, torch.Tensor] | None = None,
) -> tuple[list[int], dict[int, int]]:
    """Dims in the top-`top_n` of at least `min_layers` layers, by count (desc), then by mean
    relative magnitude over all layers (desc), then dim id. Returns (dims, counts of every dim
    that made any layer's top-`top_n`)."""
    counts: dict[int, int] = {}
    for dims in top_dims_by_layer.values():
        for d in dims[:top_n]:
            counts[d] = counts.get(d, 0) + 1

    def mean_relative(d: int) -> float:
        if not relative_by_layer:
            return 0.0
        return sum(float(r[d]) for r in relative_by_layer.values()) / len(relative_by_layer)

    chosen = [d for d, c in counts.items() if c >= min_layers]
    chosen.sort(key=lambda d: (-counts[d], -mean_relative(d), d))
    return chosen, counts


def summarize(
    sums_by_layer: dict[int, LayerSums],
    top_k: int,
    min_share: float,
    global_top_n: int,
    global_min_layers: int,
) -> dict:
    """`layers` and `aggregate` of calibration.json from every layer's sums."""
    layers, rankings, relative = {}, {}, {}
    keep = max(top_k, global_top_n)
    for layer in sorted(sums_by_layer):
        sums = sums_by_layer[layer]
        mean = sums.sum / max(sums.n_tokens, 1)
        layers[str(layer)] = layer_stats(sums, top_k, min_share)
        rankings[layer] = mean.abs().argsort(descending=True, stable=True)[:keep].tolist()
        relative[layer] = relative_magnitude(mean)
    chosen, counts = global_dims(rankings, global_top_n, global_min_layers, relative)
    mean_relative = {d: sum(float(r[d]) for r in relative.values()) / len(relative) for d in counts}
    aggregate = {
        "top_dims_by_layer": {str(k): v for k, v in rankings.items()},
        "global_dims": chosen,
        "global_counts": {str(d): counts[d] for d in sorted(counts, key=lambda d: -counts[d])},
        "global_mean_relative": {str(d): round(mean_relative[d], 4) for d in chosen},
        "rule": {
            "top_n": global_top_n,
            "min_layers": global_min_layers,
            "order": "layer count desc, then mean relative |mean| over layers desc",
        },
        "heatmap": heatmap_table(rankings, chosen, relative),
    }
    return {"layers": layers, "aggregate": aggregate}


def heatmap_table(
    rankings: dict[int, list[int]],
    chosen: list[int],
    relative: dict[int, torch.Tensor],
    max_dims: int = 24,
) -> dict:
    """Relative |mean| of the global dims, then other per-layer top dims (strongest first),
    at every layer: the numbers behind heatmap.png."""
    others = {d for dims in rankings.values() for d in dims} - set(chosen)
    strongest = sorted(others, key=lambda d: (-max(float(r[d]) for r in relative.values()), d))
    dims = (chosen + strongest)[:max_dims]
    return {
        "layers": sorted(relative),
        "dims": dims,
        "relative": [[round(float(relative[k][d]), 4) for d in dims] for k in sorted(relative)],
    }
