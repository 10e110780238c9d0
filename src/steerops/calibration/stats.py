"""Massive-activation statistics as pure functions on tensors.

Per layer, the activations of every token of the calibration texts (first token and chat
template tokens included) stream through `LayerSums.add`: running sums, each dim's peak
|x| and where it occurred, and a histogram of |x| for the layer's median; never all tokens
in memory. `layer_stats` turns the sums into the calibration record.

Two dim sets, kept apart:
- massive (the massive-activations rule): a dim is massive at a layer when its peak |x|
  exceeds `threshold` and `ratio` x the median |x| over all tokens and dims of that layer;
- top_mean: the dims with the largest |mean| over tokens, ranked per layer, and the
  cross-layer `global_dims` rule in `steerops.calibration.aggregate`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from steerops.calibration.median import LogHistogram


@dataclass
class LayerSums:
    sum: torch.Tensor  # [hidden] float64, sum of activations over tokens
    peak: torch.Tensor  # [hidden] float32, max |x| over tokens
    peak_value: torch.Tensor  # [hidden] float32, the signed x at the peak
    peak_where: torch.Tensor  # [hidden, 2] int64, (sequence, position) of the peak
    histogram: LogHistogram
    n_tokens: int = 0
    norm_sum: float = 0.0  # sum of token L2 norms

    @classmethod
    def zeros(cls, hidden: int) -> LayerSums:
        return cls(
            torch.zeros(hidden, dtype=torch.float64),
            torch.full((hidden,), -1.0),
            torch.zeros(hidden),
            torch.zeros((hidden, 2), dtype=torch.int64),
            LogHistogram(),
        )

    def add(self, x: torch.Tensor, where: torch.Tensor) -> None:
        """Fold in `x`: [tokens, hidden] activations; `where`: [tokens, 2] (sequence index,
        position in the sequence) of each row."""
        if x.shape[0] == 0:
            return
        x = x.float()
        magnitude = x.abs()
        # Float64 sums keep the mean exact over millions of tokens (MPS has no float64).
        wide = torch.float32 if x.device.type == "mps" else torch.float64
        self.sum += x.sum(0, dtype=wide).cpu().double()
        self.n_tokens += x.shape[0]
        self.norm_sum += float(x.norm(dim=-1).sum(dtype=wide))
        self.histogram.add(magnitude)
        best, row = magnitude.max(0)
        best, row = best.cpu(), row.cpu()
        better = best > self.peak
        self.peak = torch.where(better, best, self.peak)
        picked = x.gather(0, row.to(x.device)[None]).squeeze(0).cpu()
        self.peak_value = torch.where(better, picked, self.peak_value)
        self.peak_where[better] = where.cpu()[row[better]]


def relative_magnitude(mean: torch.Tensor) -> torch.Tensor:
    """|mean_d| divided by the layer's average |mean| over dims."""
    magnitude = mean.abs()
    scale = magnitude.mean()
    return magnitude / scale if scale > 0 else torch.zeros_like(magnitude)


def massive_dims(sums: LayerSums, threshold: float, ratio: float) -> list[int]:
    """Dims whose peak |x| exceeds `threshold` and `ratio` x the layer median, by peak."""
    median = sums.histogram.median()
    order = sums.peak.argsort(descending=True, stable=True).tolist()
    return [d for d in order if sums.peak[d] > threshold and sums.peak[d] > ratio * median]


def layer_stats(
    sums: LayerSums, top_k: int, threshold: float, ratio: float, token_text=None
) -> dict:
    """The per-layer calibration record (see docs/internals.md, Calibration).

    `token_text(sequence, position)` names the token at a peak (default: no text)."""
    n = max(sums.n_tokens, 1)
    mean = sums.sum / n
    relative = relative_magnitude(mean)
    top = mean.abs().argsort(descending=True, stable=True)[:top_k].tolist()
    median = sums.histogram.median()
    scale = median if median > 0 else float("nan")
    massive = massive_dims(sums, threshold, ratio)
    peaks = sums.peak.argsort(descending=True, stable=True)[:top_k].tolist()

    def peak(d: int) -> dict:
        seq, pos = (int(v) for v in sums.peak_where[d])
        entry = {
            "dim": d,
            "value": round(float(sums.peak_value[d]), 4),
            "ratio": round(float(sums.peak[d]) / scale, 2),
            "sequence": seq,
            "position": pos,
        }
        if token_text is not None:
            entry["token"] = token_text(seq, pos)
        return entry

    return {
        "n_tokens": sums.n_tokens,
        # top_mean: largest |mean| over tokens
        "top_dims": top,
        "top_values": [round(float(mean[d]), 6) for d in top],
        "relative": [round(float(relative[d]), 4) for d in top],
        # peaks: largest max |x| over tokens, with the token where each occurred
        "median_abs": round(median, 6),
        "max_median_ratio": round(float(sums.peak.max()) / scale, 2),
        "top_max": [peak(d) for d in peaks],
        "massive_dims": massive,
        "massive": {str(d): peak(d) for d in massive},
        "norm": round(sums.norm_sum / n, 6),
    }
