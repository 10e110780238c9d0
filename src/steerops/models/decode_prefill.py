"""Prefill for the decode loop and the proxy judge's likelihood, reusing the prompt prefix
that rows of one steering share.

Chat prompts start with the same tokens (template, system prompt), and rows that carry the
same steering compute the same keys and values there: causal attention never lets a prefix
token see what follows it. So the shared prefix is computed once per steering group, and
each row's prefill feeds only the rest of its prompt, with the group's prefix keys and
values as its past. Every row stays contiguous and right-aligned (past, then its input),
so positions and sliding windows mean what they would without the reuse. Rows of one
prompt under different steering share the blocks below their steering (`decode_trunk`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch
from transformers.cache_utils import DynamicCache

from steerops.models.decode_trunk import Trunk, distinct, forward_sharing_trunk
from steerops.models.head import contiguous_head_input
from steerops.models.kv import KeysValues, cache_of, states_of

# A prefill is never one token wide (short prompts are left-padded): a response-scope
# steering hook tells the prefill from a decode step by its width.
MIN_INPUT = 2
MIN_SHARED = 8  # a shorter shared prefix does not pay for its own forward


class Prefiller:
    """Prefills batches of `rows` (prompt indices); rows with equal `groups` ids share
    steering. `steer(rows)` is called before each forward with its batch rows. With a
    `trunk`, rows of one prompt compute the blocks below their steering once
    (`decode_trunk`)."""

    def __init__(
        self,
        model: Any,
        prompts: Sequence[Sequence[int]],
        groups: Sequence[int] | None,
        pad: int,
        steer: Callable[[Sequence[int]], None] | None,
        rows: Sequence[int],
        stats: Any = None,
        trunk: Trunk | None = None,
    ):
        self.model, self.prompts, self.pad, self.steer = model, prompts, pad, steer
        self.trunk = trunk
        self.stats = (
            stats
            if stats is not None
            else SimpleNamespace(reused_prompt_tokens=0, trunk_block_tokens=0)
        )
        self.device = model.get_input_embeddings().weight.device
        self.groups: Sequence[int] = groups or []
        mine = [list(prompts[r]) for r in rows]
        shared = len(os.path.commonprefix(mine)) if groups else 0
        # Keep at least MIN_INPUT tokens of every prompt as prefill input.
        self.shared = min(shared, min(map(len, mine)) - MIN_INPUT)
        self.prefix: dict[int, KeysValues] = {}  # group -> its shared prefix, per layer
        self.left: dict[int, int] = {}  # group -> rows not yet prefilled
        for r in rows if groups else ():
            self.left[self.groups[r]] = self.left.get(self.groups[r], 0) + 1

    @torch.inference_mode()
    def __call__(self, rows: list[int]) -> tuple[torch.Tensor, KeysValues, torch.Tensor]:
        """Logits after each of `rows`' prompts [rows, vocab], then the prompts' per-layer
        keys and values and their mask, [rows, ..., width] with the prompts right-aligned to
        end at the last index."""
        return self.read(rows).take(rows)

    @torch.inference_mode()
    def read(self, rows: list[int]) -> Prefilled:
        """`rows`' prompts prefilled, each distinct one once; `take` gives them per row."""
        # Rows of one group with the same prompt compute the same states: once each.
        firsts, index = distinct(
            [(self.groups[r], tuple(self.prompts[r])) if self.groups else (r,) for r in rows]
        )
        reps = [rows[k] for k in firsts]
        where = dict(zip(rows, index, strict=True))  # row -> its index among `reps`
        self.stats.reused_prompt_tokens += sum(
            len(self.prompts[r]) for r in rows if reps[where[r]] != r
        )
        logits, states, mask = self._forward(reps)
        for r in rows if self.left else ():
            self.left[self.groups[r]] -= 1
            if not self.left[self.groups[r]]:  # the group's last row: drop its prefix
                self.prefix.pop(self.groups[r], None)
        return Prefilled(logits, states, mask, where)

    def _forward(self, rows: list[int]) -> tuple[torch.Tensor, KeysValues, torch.Tensor]:
        use = self.shared >= MIN_SHARED
        longest = max(len(self.prompts[r]) for r in rows)
        input_len = max(MIN_INPUT, longest - self.shared if use else longest)
        reuse = [max(0, len(self.prompts[r]) - input_len) if use else 0 for r in rows]
        past = max(reuse)
        self.stats.reused_prompt_tokens += sum(reuse)
        if past:
            self._compute_prefixes(rows)
        cache = cache_of(self._pasts(rows, reuse, past) if past else [])
        ids, mask = [], []
        for r, m in zip(rows, reuse, strict=True):
            tail = list(self.prompts[r][m:])
            pad = input_len - len(tail)
            ids.append([self.pad] * pad + tail)
            mask.append([0] * (past - m) + [1] * m + [0] * pad + [1] * len(tail))
        mask_t = torch.tensor(mask, device=self.device)
        inputs = {
            "input_ids": torch.tensor(ids, device=self.device),
            "attention_mask": mask_t,
            "position_ids": (mask_t.cumsum(-1) - 1).clamp(min=0)[:, past:],
        }
        # a row's input is its prompt's tail, and its past that prompt's head
        out = self._run(rows, [tuple(self.prompts[r]) for r in rows], inputs, cache, past)
        return out.logits[:, -1], states_of(cache), mask_t.bool()

    def _run(self, rows: list[int], inputs_of: list, inputs: dict, cache, past: int) -> Any:
        """The model's forward over batch `rows`, whose inputs are equal where `inputs_of`
        is: with a trunk, they compute the blocks below their steering once."""
        depth = min(self.trunk.depths[r] for r in rows) if self.trunk else 0
        kwargs = {**inputs, "use_cache": True, "logits_to_keep": 1}
        with contiguous_head_input(self.model):
            repeats = len(rows) - len(set(inputs_of))
            if depth and repeats:
                self.stats.trunk_block_tokens += repeats * depth * inputs["input_ids"].shape[1]
                steer = self.steer
                return forward_sharing_trunk(
                    self.model,
                    self.trunk.blocks,  # type: ignore[union-attr]
                    depth,
                    inputs_of,
                    kwargs,
                    cache,
                    past,
                    None if steer is None else lambda at: steer([rows[i] for i in at]),
                )
            if self.steer is not None:
                self.steer(rows)
            return self.model(**kwargs, cache=cache)

    def _pasts(self, rows: list[int], reuse: list[int], past: int) -> KeysValues:
        """Per layer, row i's group prefix cut to reuse[i] entries, right-aligned in `past`."""
        shift = torch.tensor([past - m for m in reuse], device=self.device)
        index = (torch.arange(past, device=self.device)[None] - shift[:, None]).clamp(min=0)
        per_row = [self.prefix[self.groups[r]] for r in rows]
        out = []
        for layer in range(len(per_row[0])):
            keys = torch.stack([p[layer][0][:, :past] for p in per_row])
            values = torch.stack([p[layer][1][:, :past] for p in per_row])
            out.append((_gather_seq(keys, index), _gather_seq(values, index)))
        return out

    def _compute_prefixes(self, rows: list[int]) -> None:
        """One forward over the shared prefix for each group of `rows` not computed yet."""
        first: dict[int, int] = {}  # group -> its first row here
        for r in rows:
            if self.groups[r] not in self.prefix:
                first.setdefault(self.groups[r], r)
        if not first:
            return
        reps = list(first.values())
        ids = torch.tensor([list(self.prompts[r][: self.shared]) for r in reps], device=self.device)
        inputs = {
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "position_ids": torch.arange(self.shared, device=self.device)[None].expand_as(ids),
        }
        cache = DynamicCache()
        self._run(reps, [0] * len(reps), inputs, cache, 0)  # every group's prefix is the same
        states = states_of(cache)
        for j, g in enumerate(first):
            self.prefix[g] = [(keys[j], values[j]) for keys, values in states]


@dataclass(frozen=True)
class Prefilled:
    """Distinct prompts' last logits, per-layer keys and values and mask (`Prefiller`),
    and each row's index among them."""

    logits: torch.Tensor
    states: KeysValues
    mask: torch.Tensor
    where: dict[int, int]

    def take(self, rows: Sequence[int]) -> tuple[torch.Tensor, KeysValues, torch.Tensor]:
        """(logits, keys and values, mask) of `rows`, in that order (copies unless they
        are the distinct prompts themselves, in order)."""
        at = [self.where[r] for r in rows]
        if at == list(range(len(self.logits))):
            return self.logits, self.states, self.mask
        index = torch.tensor(at, device=self.mask.device)
        states = [(k[index], v[index]) for k, v in self.states]
        return self.logits[index], states, self.mask[index]


def _gather_seq(states: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """[rows, heads, seq, dim] states read along the sequence at `index` [rows, seq']."""
    at = index[:, None, :, None].expand(-1, states.shape[1], -1, states.shape[3])
    return states.gather(2, at)
