"""Massive-activation statistics as pure functions on tensors.

Per layer, the activations of every token of the calibration texts (first token and chat
template tokens included) stream through `LayerSums.add`: running sums, each dim's peak
|x| and where it occurred, and a histogram of |x| for the layer's median; never all tokens
in memory. `layer_stats` turns the sums into the calibration record.

Two dim sets, kept apart:
- massive (the massive-activations rule): a dim is massive at a layer when its peak |x|
  exceeds `threshold` and `ratio` x the median |x| over all tokens and dims of that layer,
  in at least `sequences` of the calibration sequences (its `sequences`-th largest
  per-sequence peak passes both bars): one token of one text over the bars is no massive
  dim (`massive_rare`). Texts that share a prefix (a chat template's default system prompt)
  share its tokens' activations in a causal model, so a dim over the bars there is in all of
  them by construction: the rule sorts out the tokens they do not share;
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
    # [sequences, hidden]: each dim's largest per-sequence peaks |x| over distinct
    # sequences, largest first (-1: fewer sequences seen), and [sequences, hidden] their ids
    # (an id beside a -1 means nothing)
    seq_peaks: torch.Tensor
    seq_ids: torch.Tensor
    n_tokens: int = 0
    norm_sum: float = 0.0  # sum of token L2 norms

    @classmethod
    def zeros(cls, hidden: int, sequences: int = 1) -> LayerSums:
        return cls(
            torch.zeros(hidden, dtype=torch.float64),
            torch.full((hidden,), -1.0),
            torch.zeros(hidden),
            torch.zeros((hidden, 2), dtype=torch.int64),
            LogHistogram(),
            torch.full((sequences, hidden), -1.0),
            torch.full((sequences, hidden), -1, dtype=torch.int64),
        )

    @property
    def recurring(self) -> torch.Tensor:
        """[hidden]: each dim's peak |x| in the sequence that ranks `sequences`-th by it (-1
        with fewer sequences): what the massive rule asks of every dim."""
        return self.seq_peaks[-1]

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
        self._fold_sequences(magnitude, where[:, 0].to(magnitude.device))

    def _fold_sequences(self, magnitude: torch.Tensor, sequence: torch.Tensor) -> None:
        """Keep each dim's largest peaks over distinct sequences. A sequence may span calls:
        a kept entry of a sequence seen again is folded into its new peak first. Exact: a
        sequence dropped earlier had as many larger sequences then, and peaks only grow."""
        ids, row_of = sequence.unique(return_inverse=True)
        hidden = magnitude.shape[1]
        fresh = torch.full((len(ids), hidden), -1.0, device=magnitude.device)
        index = row_of[:, None].expand(-1, hidden)
        fresh = fresh.scatter_reduce(0, index, magnitude, "amax").cpu()
        ids = ids.cpu()
        same = self.seq_ids[:, :, None] == ids[None, None, :]  # [kept, hidden, fresh]
        carried = torch.where(same, self.seq_peaks[:, :, None], -1.0).amax(0)  # [hidden, fresh]
        fresh = torch.maximum(fresh, carried.T)
        kept = torch.where(same.any(-1), -1.0, self.seq_peaks)
        values = torch.cat([kept, fresh])
        owners = torch.cat([self.seq_ids, ids[:, None].expand(-1, hidden)])
        top = values.topk(len(self.seq_peaks), dim=0)
        self.seq_peaks, self.seq_ids = top.values, owners.gather(0, top.indices)


def relative_magnitude(mean: torch.Tensor) -> torch.Tensor:
    """|mean_d| divided by the layer's average |mean| over dims."""
    magnitude = mean.abs()
    scale = magnitude.mean()
    return magnitude / scale if scale > 0 else torch.zeros_like(magnitude)


def massive_dims(sums: LayerSums, threshold: float, ratio: float) -> list[int]:
    """Dims whose peak |x| exceeds `threshold` and `ratio` x the layer median in at least
    the `sums`' `sequences` sequences, by peak."""
    bar = max(threshold, ratio * sums.histogram.median())
    return [d for d in over_bars(sums, threshold, ratio) if sums.recurring[d] > bar]


def over_bars(sums: LayerSums, threshold: float, ratio: float) -> list[int]:
    """Dims whose peak |x| exceeds `threshold` and `ratio` x the layer median somewhere, by
    peak (the massive rule on one token)."""
    bar = max(threshold, ratio * sums.histogram.median())
    order = sums.peak.argsort(descending=True, stable=True).tolist()
    return [d for d in order if sums.peak[d] > bar]


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
    rare = [d for d in over_bars(sums, threshold, ratio) if d not in massive]
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

    def recurring(d: int) -> dict:
        # the ratio in the sequence that ranks `sequences`-th: how far it recurs
        seen = float(sums.recurring[d])
        return {"recurring_ratio": round(seen / scale, 2) if seen >= 0 else None}

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
        "massive": {str(d): peak(d) | recurring(d) for d in massive},
        # over both bars on fewer sequences than the rule asks: not massive
        "massive_rare": {str(d): peak(d) | recurring(d) for d in rare},
        "norm": round(sums.norm_sum / n, 6),
    }
