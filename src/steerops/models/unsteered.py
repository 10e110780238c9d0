"""What the unsteered model computes along a steered row's response, kept for a reader.

A steering hook adds to a block's output, so below a row's first steered block its tokens
go through exactly the blocks the unsteered model runs (`decode_trunk`'s argument, along
the response instead of the prompt). The proxy judge then reads the same response under
the unsteered model: it can start at that block from the states generation computed
instead of running the blocks below it again, and for an unsteered row (the baseline)
from the last block's output, leaving only the head.

The steering session turns keeping on for its model when its judge reads with that model
(`keep`); the static decode loop, running eagerly, then records block `depth - 1`'s output
before any hook at every token a row feeds (`Keeper`), and files it under the row's
(prompt ids, response ids); `judges.fluency` looks a reading up by the same ids, so a
response that does not tokenize back to the generated ids is read in full.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from steerops.models.decode_trunk import forward_replaced


@dataclass(frozen=True)
class Kept:
    """A reader of the response starts at block `depth` from `states` [tokens - 1, hidden]:
    block `depth - 1`'s output at each response token but the last (the tokens a reader
    feeds; the first token is read from the prompt's logits)."""

    depth: int
    states: torch.Tensor


class KeptStates(dict):
    """(prompt ids, response ids) -> `Kept`, for one model whose decoder blocks are
    `blocks`."""

    def __init__(self, blocks: Sequence[torch.nn.Module]):
        super().__init__()
        self.blocks = blocks

    def file(self, prompt: Sequence[int], response: Sequence[int], entry: Kept) -> None:
        """Keep the deepest start for equal rows (a config that leaves the response as
        the baseline's computed all of it unsteered there)."""
        key = (tuple(prompt), tuple(response))
        if key not in self or self[key].depth < entry.depth:
            self[key] = entry


_STORES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def keep(model: torch.nn.Module, blocks: Sequence[torch.nn.Module]) -> KeptStates:
    """Turn keeping on for `model` (its store, created once)."""
    if model not in _STORES:
        _STORES[model] = KeptStates(blocks)
    return _STORES[model]


def kept(model: torch.nn.Module) -> KeptStates | None:
    """`model`'s store, None when keeping is off."""
    return _STORES.get(model)


class Keeper:
    """Records, during decode steps, each row's block `depths[row] - 1` output (before
    any hook) at the token it feeds, and files finished rows in `store`."""

    def __init__(
        self,
        store: KeptStates,
        prompts: Sequence[Sequence[int]],
        depths: Sequence[int],
    ):
        self.store, self.prompts, self.depths = store, prompts, depths
        self.layers = sorted({d - 1 for d in depths if d > 0})
        self.outputs: dict[int, torch.Tensor] = {}
        self.fed: dict[int, list[torch.Tensor]] = {}  # row -> per fed token [hidden]
        self.on = False

    @contextlib.contextmanager
    def capturing(self) -> Iterator[None]:
        """Hooks on the blocks rows start after, ahead of any steering hook there."""
        handles = [
            self.store.blocks[layer].register_forward_hook(self._hook(layer), prepend=True)
            for layer in self.layers
        ]
        self.fed.clear()  # an out-of-memory retry decodes its rows again
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _hook(self, layer: int):
        def hook(module, args, output):
            # Blocks of older transformers return tuples: nothing kept, readings start at 0.
            if self.on and isinstance(output, torch.Tensor):
                self.outputs[layer] = output
            return None

        return hook

    @contextlib.contextmanager
    def stepping(self, rows: Sequence[int]) -> Iterator[None]:
        """Around one decode step over slots holding `rows` (-1: free): its outputs are
        recorded when it completes (a failed step's retry prefills record nothing)."""
        self.on = True
        try:
            yield
        finally:
            self.on = False
        self.step(rows)

    def step(self, rows: Sequence[int]) -> None:
        """After one decode step over slots holding `rows` (-1: free)."""
        slots: dict[int, list[int]] = {}  # layer -> the slots whose rows start after it
        for slot, row in enumerate(rows):
            if row >= 0 and self.depths[row] - 1 in self.outputs:
                slots.setdefault(self.depths[row] - 1, []).append(slot)
        for layer, mine in slots.items():
            out = self.outputs[layer]
            # a copy of those rows only: the step's whole output is not held on to
            picked = out[torch.tensor(mine, device=out.device), -1]
            for slot, state in zip(mine, picked, strict=True):
                self.fed.setdefault(rows[slot], []).append(state)
        self.outputs.clear()

    def finished(self, results: dict[int, list[int]]) -> None:
        """File the rows that have their tokens in `results` now."""
        for row in [r for r in self.fed if r in results]:
            states, tokens = self.fed.pop(row), results[row]
            if 2 <= len(tokens) <= len(states) + 1:
                entry = Kept(self.depths[row], torch.stack(states[: len(tokens) - 1]))
                self.store.file(self.prompts[row], tokens, entry)


@contextlib.contextmanager
def starting_at(blocks: Sequence[torch.nn.Module], depth: int, hidden: torch.Tensor):
    """The model's forward skips blocks [0, depth): each returns `hidden` [rows, seq,
    hidden], which block `depth` reads as its input (what it would have computed). Their
    cache layers are not written: nothing reads them after this forward."""

    def forward(*args, **kwargs):
        return hidden

    with contextlib.ExitStack() as stack:
        for block in blocks[:depth]:
            stack.enter_context(forward_replaced(block, forward))
        yield
