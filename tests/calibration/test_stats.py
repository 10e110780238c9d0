"""Massive-activation statistics on planted synthetic activations against numpy references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from steerops.calibration.stats import LayerSums, global_dims, layer_stats, median_last, summarize

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
    # Dim 3 spikes to 500 on 10% of tokens: massive (tests use a 200x threshold, above the
    # planted means), and a mean of ~50 at every layer.
    x[: N_TOKENS // 10, 3] = 500.0
    return x.astype(np.float32)


def stream(x: np.ndarray, threshold: float = 200.0, chunk: int = 97) -> LayerSums:
    sums = LayerSums.zeros(x.shape[1])
    for i in range(0, len(x), chunk):
        sums.add(torch.from_numpy(x[i : i + chunk]), threshold)
    return sums


def test_layer_stats_match_numpy_reference():
    x = planted_activations(layer=1)
    x[:2, 5] = 500.0  # a rare spike: 2 tokens of 600
    stats = layer_stats(stream(x), top_k=4, min_share=0.05)
    mean = x.astype(np.float64).mean(0)
    order = np.argsort(-np.abs(mean), kind="stable")[:4]
    assert stats["top_dims"] == order.tolist() == [7, 3, 42, 13]
    np.testing.assert_allclose(stats["top_values"], mean[order], rtol=1e-5)
    relative = np.abs(mean) / np.abs(mean).mean()
    np.testing.assert_allclose(stats["relative"], relative[order], rtol=1e-3)
    magnitude = np.abs(x.astype(np.float64))
    ratio = magnitude.max(1) / np.median(magnitude, axis=1)
    assert stats["max_median_ratio"]["mean"] == pytest.approx(ratio.mean(), rel=1e-4)
    assert stats["max_median_ratio"]["max"] == pytest.approx(ratio.max(), rel=1e-4)
    share = (magnitude > 200 * np.median(magnitude, axis=1, keepdims=True)).mean(0)
    assert (
        stats["massive_dims"]
        == [d for d in np.argsort(-share, kind="stable") if share[d] >= 0.05]
        == [3]
    )
    assert stats["massive_share"] == {"3": pytest.approx(0.1)}
    assert stats["norm"] == pytest.approx(np.linalg.norm(x, axis=1).mean(), rel=1e-5)
    assert stats["n_tokens"] == N_TOKENS
    # The rare spike is massive only under a lower share.
    assert 5 in layer_stats(stream(x), top_k=4, min_share=0.003)["massive_dims"]


def test_streaming_is_independent_of_chunking():
    x = planted_activations(layer=2)
    one, many = stream(x, chunk=len(x)), stream(x, chunk=13)
    assert one.n_tokens == many.n_tokens
    torch.testing.assert_close(one.sum, many.sum, rtol=1e-9, atol=1e-6)
    assert torch.equal(one.massive_count, many.massive_count)
    assert one.ratio_max == pytest.approx(many.ratio_max)


def test_median_matches_numpy_for_odd_and_even_counts():
    for width in (7, 8):
        x = torch.rand(5, width)
        np.testing.assert_allclose(median_last(x).numpy(), np.median(x.numpy(), axis=1), rtol=1e-6)


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
    record = summarize(sums, top_k=5, min_share=0.05, global_top_n=5, global_min_layers=3)
    agg = record["aggregate"]
    # Independent count: top-5 by |mean| per layer, from numpy.
    counts: dict[int, int] = {}
    for layer in range(6):
        mean = planted_activations(layer).astype(np.float64).mean(0)
        top = np.argsort(-np.abs(mean), kind="stable")[:5].tolist()
        assert agg["top_dims_by_layer"][str(layer)] == top
        for d in top:
            counts[d] = counts.get(d, 0) + 1
    # 3 (spike mean ~50) is in every layer's top-5; ties on count go by magnitude.
    assert agg["global_dims"] == [7, 3, 42, 21, 13, 55]
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
