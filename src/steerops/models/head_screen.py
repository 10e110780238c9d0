"""Greedy tokens from a large float32 LM head, screened in bfloat16 on CPU.

On a CPU with bfloat16 matrix instructions the head's bf16 product runs 3-5x faster than
its float32 one (SmolLM2's 49,152 x 576 head at 256 rows: about 360 against 70-100
GFLOP/s), and in a decode step the head is about a third of the time. The bf16 logits
only pick candidates: each row's 16 largest are recomputed in float32, and the row keeps
their argmax when a bound proves no other word can reach it; on other rows every word
whose own bound reaches that value is recomputed too (the whole float32 product where
there are many: flat logits). The token is the float32 argmax (first index among equal maxima, as
`torch.argmax`), up to the summation order of the float32 dot products.

The bound: with bf16 unit roundoff u = 2^-9, rounding h and w makes each product off by
at most (2u + u^2)|h_i w_i|, float32 accumulation over k <= 2^14 terms adds at most
2^-10 sum |h_i w_i|, and the bf16 output adds u|approx|; sum |h_i w_i| <= |h| |w_v|
(Cauchy-Schwarz). `ERROR` = 2^-7 bounds each term with room to spare.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
import torch.nn.functional as F

ERROR = 2.0**-7
TOP = 16
# A row the top leaves open recomputes at most this many words, else its whole product.
MAX_CANDIDATES = 256
# A smaller head costs too little for the screen to pay for its extra passes.
MIN_VOCAB = 16384


class ScreenedHead:
    """`argmax(hidden)`: the float32 head's greedy token per row, computed mostly in bf16."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        weight, bias = weight.detach(), None if bias is None else bias.detach()
        self.weight, self.bias = weight, bias
        self.low = weight.to(torch.bfloat16)
        self.low_bias = None if bias is None else bias.to(torch.bfloat16)
        self.norms = weight.norm(dim=-1)
        self.norm_max = float(self.norms.max())
        self.bias_abs = torch.zeros(()) if bias is None else bias.abs()
        self.rows = 0  # rows screened
        self.refined_rows = 0  # rows settled by the per-word bound (second pass)
        self.fallback_rows = 0  # rows given the whole float32 product

    def argmax(self, hidden: torch.Tensor) -> torch.Tensor:
        """[rows, hidden] float32 -> [rows] token ids."""
        approx = F.linear(hidden.to(torch.bfloat16), self.low, self.low_bias)
        top, index = approx.topk(min(TOP, approx.shape[-1]), dim=-1)
        exact = torch.einsum("rh,rkh->rk", hidden, self.weight[index])
        if self.bias is not None:
            exact = exact + self.bias[index]
        best = exact.amax(-1)
        # the first index among equal maxima, as torch.argmax over the whole row
        token = torch.where(exact == best[:, None], index, self.weight.shape[0]).amin(-1)
        # The largest value any word outside the top could have: its bf16 logit is at most
        # the smallest top one, plus the error bound (increasing in the logit).
        last = top[:, -1].float()
        size = hidden.norm(dim=-1)
        outside = last + ERROR * (last.abs() + size * self.norm_max + self.bias_abs.max())
        self.rows += hidden.shape[0]
        unsettled = (~(outside < best)).nonzero().squeeze(-1)  # NaN reads unsettled too
        if unsettled.numel():
            token[unsettled] = self._refine(hidden[unsettled], approx[unsettled], best[unsettled])
        return token

    def _refine(self, hidden, approx, best) -> torch.Tensor:
        """Rows whose top did not settle them: every word whose own bound reaches the
        top's best is recomputed in float32; rows with too many such words (flat logits)
        or none (NaN) get the whole product."""
        low = approx.float()
        size = hidden.norm(dim=-1, keepdim=True)
        reach = low + ERROR * (low.abs() + size * self.norms + self.bias_abs) >= best[:, None]
        counts = reach.sum(-1)
        light = (counts > 0) & (counts <= MAX_CANDIDATES)
        vocab = self.weight.shape[0]
        token = torch.full_like(best, vocab, dtype=torch.long)
        rows, words = reach[light].nonzero().unbind(-1)
        value = (hidden[light][rows] * self.weight[words]).sum(-1)
        if self.bias is not None:
            value = value + self.bias[words]
        n = int(light.sum())
        row_max = value.new_full((n,), -torch.inf).scatter_reduce(0, rows, value, "amax")
        first = torch.where(value == row_max[rows], words, vocab)
        token[light] = token.new_full((n,), vocab).scatter_reduce(0, rows, first, "amin")
        heavy = (~light).nonzero().squeeze(-1)
        self.refined_rows += n
        self.fallback_rows += heavy.numel()
        if heavy.numel():
            token[heavy] = F.linear(hidden[heavy], self.weight, self.bias).argmax(-1)
        return token


_HEADS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def screened_head(model: Any, force: bool | None = None) -> ScreenedHead | None:
    """The model's head as a `ScreenedHead` where it pays (a float32 head of at least
    MIN_VOCAB words on a CPU with bf16 instructions), None where it does not apply: another
    dtype or device, a head that is not a plain linear layer, or logits transformed after
    the head (soft-capping). `force`: True screens any plain float32 CPU head (tests),
    False never."""
    if force is False:
        return None
    head = model.get_output_embeddings()
    if type(head) is not torch.nn.Linear or head.weight.dtype != torch.float32:
        return None
    if head.weight.device.type != "cpu":
        return None
    if not force and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return None
    text = model.config.get_text_config(decoder=True)
    if getattr(text, "final_logit_softcapping", None):
        return None
    if not force and head.weight.shape[0] < MIN_VOCAB:
        return None
    kept = _HEADS.get(model)
    if kept is None or kept.weight.data_ptr() != head.weight.data_ptr():
        kept = _HEADS[model] = ScreenedHead(head.weight, head.bias)
    return kept
