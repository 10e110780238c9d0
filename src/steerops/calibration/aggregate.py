"""Cross-layer summary of calibration.json: `layers` and `aggregate` from every layer's sums.

aggregate.global_dims        top_mean set: dims in the top-N by |mean| at >= M layers
aggregate.top_dims_by_layer  each layer's ranking by |mean|
aggregate.massive_dims       massive set: dims massive at >= 1 layer, by number of
                             layers, then peak ratio
aggregate.massive_by_layer   each layer's massive dims, by peak
aggregate.massive_rare_by_layer  dims over both bars in fewer sequences than the rule asks
"""

from __future__ import annotations

import torch

from steerops.calibration.stats import LayerSums, layer_stats, relative_magnitude


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
    *,
    top_k: int,
    threshold: float,
    ratio: float,
    global_top_n: int,
    global_min_layers: int,
    token_text=None,
) -> dict:
    """`layers` and `aggregate` of calibration.json."""
    layers, rankings, relative = {}, {}, {}
    min_sequences = min((len(s.seq_peaks) for s in sums_by_layer.values()), default=1)
    keep = max(top_k, global_top_n)
    for layer in sorted(sums_by_layer):
        sums = sums_by_layer[layer]
        mean = sums.sum / max(sums.n_tokens, 1)
        layers[str(layer)] = layer_stats(sums, top_k, threshold, ratio, token_text)
        rankings[layer] = mean.abs().argsort(descending=True, stable=True)[:keep].tolist()
        relative[layer] = relative_magnitude(mean)
    chosen, counts = global_dims(rankings, global_top_n, global_min_layers, relative)
    mean_relative = {d: sum(float(r[d]) for r in relative.values()) / len(relative) for d in counts}
    by_layer = {int(k): v["massive_dims"] for k, v in layers.items()}
    massive = massive_order(by_layer, layers)
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
        "massive_dims": massive,
        "massive_by_layer": {str(k): v for k, v in by_layer.items()},
        "massive_layers": {
            str(d): [k for k, dims in by_layer.items() if d in dims] for d in massive
        },
        "massive_rule": {
            "threshold": threshold,
            "ratio": ratio,
            "min_sequences": min_sequences,
            "rule": "peak |x| > threshold and > ratio x median |x| over all tokens and dims "
            "of the layer, in at least min_sequences calibration sequences; listed by number "
            "of layers, then peak ratio",
        },
        # over both bars in fewer sequences than the rule asks, per layer: not massive
        "massive_rare_by_layer": {
            k: [int(d) for d in v["massive_rare"]] for k, v in layers.items() if v["massive_rare"]
        },
        "heatmap": heatmap_table(rankings, chosen, relative),
        "massive_heatmap": massive_table(layers, massive, sums_by_layer),
    }
    return {"layers": layers, "aggregate": aggregate}


def massive_order(by_layer: dict[int, list[int]], layers: dict[str, dict]) -> list[int]:
    """Dims massive at any layer: most layers first, then highest peak ratio, then id."""
    count: dict[int, int] = {}
    best: dict[int, float] = {}
    for k, dims in by_layer.items():
        for d in dims:
            count[d] = count.get(d, 0) + 1
            best[d] = max(best.get(d, 0.0), layers[str(k)]["massive"][str(d)]["ratio"])
    return sorted(count, key=lambda d: (-count[d], -best[d], d))


def heatmap_table(
    rankings: dict[int, list[int]],
    chosen: list[int],
    relative: dict[int, torch.Tensor],
    max_dims: int = 24,
) -> dict:
    """Relative |mean| of the global dims, then other per-layer top dims (strongest first),
    at every layer: the numbers behind the top_mean panel of heatmap.png."""
    others = {d for dims in rankings.values() for d in dims} - set(chosen)
    strongest = sorted(others, key=lambda d: (-max(float(r[d]) for r in relative.values()), d))
    dims = (chosen + strongest)[:max_dims]
    return {
        "layers": sorted(relative),
        "dims": dims,
        "relative": [[round(float(relative[k][d]), 4) for d in dims] for k in sorted(relative)],
    }


def massive_table(
    layers: dict[str, dict], massive: list[int], sums: dict[int, LayerSums], max_dims: int = 12
) -> dict:
    """Peak |x| / layer median of the massive dims, then the strongest other peaks, at every
    layer: the numbers behind the massive panel of heatmap.png."""
    ordered = sorted(sums)
    others = {e["dim"] for v in layers.values() for e in v["top_max"]} - set(massive)
    strongest = sorted(others, key=lambda d: (-max(float(sums[k].peak[d]) for k in ordered), d))
    dims = (massive + strongest)[:max_dims]
    ratios = []
    for k in ordered:
        median = layers[str(k)]["median_abs"] or float("nan")
        ratios.append([round(float(sums[k].peak[d]) / median, 2) for d in dims])
    return {"layers": ordered, "dims": dims, "massive": massive, "ratio": ratios}
