"""Massive-activation statistics on planted synthetic activations against numpy references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from steerops.calibration.aggregate import global_dims, summarize
from steerops.calibration.median import LogHistogram
from steerops.calibration.stats import LayerSums, layer_stats

HIDDEN = 64


N_TOKENS = 600


# Dims planted with a large mean at the listed layers (of 6), so every layer's top-5 is
# planted: 7 and 42 everywhere, 21 at four layers, 13 and 55 at three (13 stronger), 30 at
# two (one short of the default rule).
PLANTED = {
    7: (60.0, range(6)),
    42: (-45.0, range(6)),
    21: (20.0, [1, 2, 3, 4]),
    13: (30.0, [1, 2, 4]),
    55: (12.0, [0, 3, 5]),
    30: (40.0, [0, 5]),
}


def planted_activations(layer: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed + layer)
    x = rng.normal(size=(N_TOKENS, HIDDEN))
    for dim, (value, layers) in PLANTED.items():
        if layer in layers:
            x[:, dim] += value
    # Dim 3 spikes to 5000 on the first token of each 60-token "sequence": massive (the
    # median |x| is ~0.7), and a mean of ~83 at every layer. Dim 9 peaks at 300 once: over
    # the 100 floor but only ~450x the median, so not massive.
    x[::60, 3] = 5000.0
    x[7, 9] = -300.0
    return x.astype(np.float32)


def where_of(n: int) -> torch.Tensor:
    """(sequence, position) of token i, sequences of 60 tokens."""
    i = torch.arange(n)
    return torch.stack([i // 60, i % 60], 1)


def stream(x: np.ndarray, chunk: int = 97, sequences: int = 1) -> LayerSums:
    sums = LayerSums.zeros(x.shape[1], sequences)
    where = where_of(len(x))
    for i in range(0, len(x), chunk):
        sums.add(torch.from_numpy(x[i : i + chunk]), where[i : i + chunk])
    return sums


def test_layer_stats_match_numpy_reference():
    x = planted_activations(layer=1)
    stats = layer_stats(stream(x), top_k=4, threshold=100.0, ratio=1000.0)
    mean = x.astype(np.float64).mean(0)
    order = np.argsort(-np.abs(mean), kind="stable")[:4]
    assert stats["top_dims"] == order.tolist() == [3, 7, 42, 13]
    np.testing.assert_allclose(stats["top_values"], mean[order], rtol=1e-5)
    relative = np.abs(mean) / np.abs(mean).mean()
    np.testing.assert_allclose(stats["relative"], relative[order], rtol=1e-3)
    magnitude = np.abs(x.astype(np.float64))
    median = np.median(magnitude)  # over all tokens and dims of the layer
    assert stats["median_abs"] == pytest.approx(median, rel=3e-3)
    peak = magnitude.max(0)
    assert stats["max_median_ratio"] == pytest.approx(peak.max() / median, rel=3e-3)
    ranked = np.argsort(-peak, kind="stable")[:4]
    top = stats["top_max"]
    assert [e["dim"] for e in top] == ranked.tolist()
    for e in top:
        row = int(magnitude[:, e["dim"]].argmax())
        assert e["value"] == pytest.approx(x[row, e["dim"]], rel=1e-5)
        assert (e["sequence"], e["position"]) == (row // 60, row % 60)
        assert e["ratio"] == pytest.approx(peak[e["dim"]] / median, rel=3e-3)
    ranked_all = np.argsort(-peak, kind="stable")
    expected = [d for d in ranked_all if peak[d] > 100 and peak[d] > 1000 * median]
    assert stats["massive_dims"] == expected == [3]
    assert stats["massive"]["3"]["position"] == 0 and stats["massive"]["3"]["value"] == 5000.0
    assert top[1]["dim"] == 9 and top[1]["value"] == -300.0  # large, yet not massive
    assert stats["norm"] == pytest.approx(np.linalg.norm(x, axis=1).mean(), rel=1e-5)
    assert stats["n_tokens"] == N_TOKENS
    # The ratio alone is not enough: scaled down, dim 3 keeps its ratio but not its size.
    small = layer_stats(stream(x * 0.01), top_k=4, threshold=100.0, ratio=1000.0)
    assert small["massive_dims"] == [] and small["max_median_ratio"] > 1000
    # A lower ratio admits dim 9 as well.
    assert layer_stats(stream(x), top_k=4, threshold=100.0, ratio=300.0)["massive_dims"] == [3, 9]


@pytest.mark.parametrize("chunk", [13, 97, N_TOKENS])  # sequences of 60 split across calls
def test_a_dim_over_the_bars_in_fewer_sequences_than_asked_is_rare_not_massive(chunk):
    """With `sequences` 2, a dim is massive only where its peak passes both bars in two
    calibration sequences or more: one outlier token, or two in one text, is `massive_rare`.
    Each dim's largest per-sequence peaks are numpy's whatever the chunking."""
    x = planted_activations(layer=1)  # dim 3: 5000 on token 0 of each of the 10 sequences
    x[130, 11] = 4000.0  # once, in sequence 2
    x[200, 12], x[230, 12] = 4000.0, 3000.0  # twice, both in sequence 3
    x[250, 14], x[490, 14] = 3000.0, 2000.0  # in sequences 4 and 8
    sums = stream(x, chunk, sequences=2)
    per_sequence = np.abs(x).reshape(10, 60, HIDDEN).max(1)  # [sequences, dims]
    largest = -np.sort(-per_sequence, axis=0)[:2]
    np.testing.assert_array_equal(sums.seq_peaks.numpy(), largest)
    owners = sums.seq_ids.numpy()
    np.testing.assert_array_equal(per_sequence[owners, np.arange(HIDDEN)], largest)
    stats = layer_stats(sums, top_k=4, threshold=100.0, ratio=1000.0)
    median = np.median(np.abs(x.astype(np.float64)))
    bar = max(100.0, 1000.0 * median)
    peak = largest[0]
    expected = [d for d in np.argsort(-peak, kind="stable") if largest[1][d] > bar]
    assert stats["massive_dims"] == expected == [3, 14]
    assert sorted(stats["massive_rare"]) == ["11", "12"]  # 9 is under the ratio bar
    assert stats["massive_rare"]["12"]["value"] == 4000.0
    assert stats["massive_rare"]["12"]["recurring_ratio"] < 1000  # sequence 2's |x| of dim 12
    assert stats["massive"]["14"]["recurring_ratio"] == pytest.approx(2000.0 / median, rel=3e-3)
    # one sequence asked (the default): every dim over the bars somewhere, by peak
    once = layer_stats(stream(x, chunk), top_k=4, threshold=100.0, ratio=1000.0)
    assert once["massive_dims"] == [3, 11, 12, 14] and once["massive_rare"] == {}


def test_streaming_is_independent_of_chunking():
    x = planted_activations(layer=2)
    one, many = stream(x, chunk=len(x)), stream(x, chunk=13)
    assert one.n_tokens == many.n_tokens
    torch.testing.assert_close(one.sum, many.sum, rtol=1e-9, atol=1e-6)
    assert torch.equal(one.peak, many.peak) and torch.equal(one.peak_where, many.peak_where)
    assert torch.equal(one.histogram.counts, many.histogram.counts)


@pytest.mark.parametrize("scale", [1e-3, 1.0, 250.0])
def test_histogram_median_matches_numpy(scale):
    rng = np.random.default_rng(3)
    for size in (1, 1001, 4000, 50_000):  # dense enough for the middle values to meet
        values = np.abs(rng.standard_cauchy(size)) * scale
        hist = LogHistogram()
        hist.add(torch.from_numpy(values.astype(np.float32)))
        assert hist.median() == pytest.approx(np.median(values), rel=3e-3)
    assert LogHistogram().median() == 0.0


def test_global_rule_selects_exactly_the_expected_dims_in_order():
    top = {
        0: [1, 2, 3, 4, 9],
        1: [2, 1, 5, 3, 8],
        2: [1, 5, 2, 6, 7],
        3: [5, 1, 3, 0, 2],
        4: [1, 6, 7, 0, 9],
    }
    # counts in the top-5: 1 x5, 2 x4, 3 x3, 5 x3, 0/6/7/9 x2, 4/8 x1.
    relative = {k: torch.zeros(10) for k in top}
    relative[0][5] = 9.0  # 5 ties 3 on count; the larger mean relative magnitude goes first
    dims, counts = global_dims(top, top_n=5, min_layers=3, relative_by_layer=relative)
    assert dims == [1, 2, 5, 3]
    assert counts == {1: 5, 2: 4, 3: 3, 4: 1, 5: 3, 6: 2, 7: 2, 8: 1, 9: 2, 0: 2}
    # Only the first top_n of each ranking count.
    assert global_dims(top, top_n=2, min_layers=2)[0] == [1, 2, 5]
    assert global_dims(top, top_n=5, min_layers=6)[0] == []


def test_planted_dims_are_found_across_layers():
    sums = {layer: stream(planted_activations(layer)) for layer in range(6)}
    record = summarize(
        sums, top_k=5, threshold=100.0, ratio=1000.0, global_top_n=5, global_min_layers=3
    )
    agg = record["aggregate"]
    # Independent count: top-5 by |mean| per layer, from numpy.
    counts: dict[int, int] = {}
    for layer in range(6):
        mean = planted_activations(layer).astype(np.float64).mean(0)
        top = np.argsort(-np.abs(mean), kind="stable")[:5].tolist()
        assert agg["top_dims_by_layer"][str(layer)] == top
        for d in top:
            counts[d] = counts.get(d, 0) + 1
    # 3 (spike mean ~83) is in every layer's top-5; ties on count go by magnitude.
    assert agg["global_dims"] == [3, 7, 42, 21, 13, 55]
    assert {int(d) for d, c in counts.items() if c >= 3} == set(agg["global_dims"])
    assert agg["global_counts"]["30"] == 2
    heat = agg["heatmap"]
    assert heat["dims"][:6] == agg["global_dims"] and heat["dims"][6] == 30
    mean0 = planted_activations(0).astype(np.float64).mean(0)
    np.testing.assert_allclose(
        heat["relative"][0],
        np.abs(mean0[heat["dims"]]) / np.abs(mean0).mean(),
        rtol=1e-3,
        atol=1e-4,
    )
    assert [s["massive_dims"] for s in record["layers"].values()] == [[3]] * 6
    # The massive set is kept apart from the top_mean set.
    assert agg["massive_dims"] == [3] and agg["massive_layers"] == {"3": list(range(6))}
    assert agg["massive_by_layer"] == {str(k): [3] for k in range(6)}
    table = agg["massive_heatmap"]
    assert table["dims"][0] == 3 and table["massive"] == [3]
    assert all(row[0] > 1000 for row in table["ratio"])


# Massive dims planted for the order of the aggregate massive set (threshold 100, ratio
# 1000, median |x| ~0.67): {layer: {dim: peak}}. 40 is massive at three layers with the
# lowest peak; 30 and 8 at two layers each, 30 with the higher peak; 20 at layer 0 and 17 at
# layer 1 with the same peak, layer 1 being layer 0 with dims 17 and 20 swapped (the same
# values, so the same median and exactly the same peak ratio).
SPIKES = {
    0: {20: 4000.0},
    2: {40: 2000.0, 30: 6000.0, 8: 3000.0},
    3: {40: 2000.0, 30: 3000.0, 8: 3000.0},
    4: {40: 2000.0},
}


def spiked_activations(layer: int) -> np.ndarray:
    """Noise with each of the layer's SPIKES at one token (token index = dim)."""
    if layer == 1:
        swap = np.arange(HIDDEN)
        swap[[17, 20]] = [20, 17]
        return spiked_activations(0)[:, swap]
    x = np.random.default_rng(layer).normal(size=(N_TOKENS, HIDDEN))
    for dim, peak in SPIKES.get(layer, {}).items():
        x[dim, dim] = peak
    return x.astype(np.float32)


def test_massive_set_is_ordered_by_layer_count_then_peak_ratio_then_id():
    """The aggregate massive set lists the dims massive at most layers first, then those
    with the highest peak |x| / median at any layer, then by id: each key decides one
    place here (numpy reference)."""
    sums = {layer: stream(spiked_activations(layer)) for layer in range(5)}
    record = summarize(
        sums, top_k=5, threshold=100.0, ratio=1000.0, global_top_n=5, global_min_layers=3
    )
    where: dict[int, list[int]] = {}
    best: dict[int, float] = {}
    for layer in range(5):
        magnitude = np.abs(spiked_activations(layer).astype(np.float64))
        median = np.median(magnitude)
        peak = magnitude.max(0)
        for d in np.flatnonzero((peak > 100) & (peak > 1000 * median)).tolist():
            where.setdefault(d, []).append(layer)
            best[d] = max(best.get(d, 0.0), peak[d] / median)
    dims = np.array(sorted(where))
    ranked = np.lexsort((dims, [-best[d] for d in dims], [-len(where[d]) for d in dims]))
    expected = dims[ranked].tolist()
    # 40 before 30 and 8 by count despite its lower ratio, 30 before 8 by ratio, 17 before
    # 20 by id (layer 0, where 20 is massive, comes first)
    assert expected == [40, 30, 8, 17, 20] and best[17] == best[20]
    agg = record["aggregate"]
    assert agg["massive_dims"] == expected
    assert agg["massive_layers"] == {str(d): where[d] for d in expected}
    layers = record["layers"]
    assert layers["0"]["massive"]["20"]["ratio"] == layers["1"]["massive"]["17"]["ratio"]
