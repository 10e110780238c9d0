"""The static buffers of the decode loop and its one fixed-shape step.

`decode_step` runs entirely on the device with no host synchronisation: every tensor it
touches has a fixed shape and address (the buffers below and the static cache), so
`torch.compile` captures one graph per slot count and CUDA can replay it.
"""

from __future__ import annotations

import weakref
from typing import Any, cast

import torch
from transformers.cache_utils import Cache, StaticLayer


class WindowLayer(StaticLayer):
    """A static cache layer whose attention can read only cache indices [lo, hi): on an
    eager step, the indices padding for every live row and those not written yet cost no
    attention (the mask keeps absolute indices through the offset, so sliding windows and
    padding read the same). None: the whole cache (a compiled step's fixed shape)."""

    window: tuple[int, int] | None = None

    def update(self, key_states, value_states, *args, **kwargs):
        keys, values = super().update(key_states, value_states, *args, **kwargs)
        if self.window is None:
            return keys, values
        lo, hi = self.window
        return keys[:, :, lo:hi], values[:, :, lo:hi]

    def get_mask_sizes(self, *args, **kwargs) -> tuple[int, int]:
        if self.window is None:
            return super().get_mask_sizes(*args, **kwargs)
        lo, hi = self.window
        return hi - lo, lo


class SlotState:
    """A static cache of `slots` rows and the per-slot buffers a step reads and writes."""

    def __init__(self, n_layers: int, slots: int, cache_len: int, width: int, device):
        self.slots, self.cache_len = slots, cache_len
        # Full-length layers only: a sliding window comes from the attention mask.
        self.layers = [WindowLayer(cache_len) for _ in range(n_layers)]
        self.cache = Cache(layers=list[Any](self.layers))
        self.keys: list[torch.Tensor] = []  # per layer, allocated by the first placement
        self.values: list[torch.Tensor] = []
        self.tokens = torch.zeros(slots, dtype=torch.long, device=device)
        self.positions = torch.zeros(slots, dtype=torch.long, device=device)
        self.mask = torch.zeros(slots, cache_len, dtype=torch.bool, device=device)
        self.done = torch.ones(slots, dtype=torch.bool, device=device)
        self.count = torch.zeros(slots, dtype=torch.long, device=device)
        self.out = torch.zeros(slots, width, dtype=torch.long, device=device)
        for buffer in (self.tokens, self.positions, self.mask, self.done, self.count, self.out):
            torch._dynamo.mark_static_address(buffer)
        self._t = 0

    def _allocate(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Size the cache like these [rows, heads, seq, dim] states (HF marks it static)."""
        for layer in self.layers:
            layer.lazy_initialization(keys[:1].expand(self.slots, -1, -1, -1), values[:1])
        self.keys = [cast(torch.Tensor, layer.keys) for layer in self.layers]
        self.values = [cast(torch.Tensor, layer.values) for layer in self.layers]
        self._set_t(self._t)

    def attend(self, window: tuple[int, int] | None) -> None:
        """Let the next steps attend to cache indices [lo, hi) only (None: all)."""
        for layer in self.layers:
            layer.window = window

    @property
    def t(self) -> int:
        """The shared write index (the next step writes there), mirrored on the host."""
        return self._t

    def advanced(self, steps: int) -> None:
        self._t += steps

    def _set_t(self, t: int) -> None:
        self._t = t
        for layer in self.layers if self.keys else ():
            layer.cumulative_length.fill_(t)

    def reset(self, t: int) -> None:
        self.done.fill_(True)
        self.mask.fill_(False)
        self.positions.zero_()
        self._set_t(t)

    def place(
        self,
        slots: list[int],
        first: torch.Tensor,
        kv: list[tuple[torch.Tensor, torch.Tensor]],
        prompt_mask: torch.Tensor,
        lengths: list[int],
        stops: torch.Tensor,
        max_new: int,
    ) -> None:
        """Put freshly prefilled rows into `slots`, their prompts ending at index t."""
        if not self.keys:
            self._allocate(*kv[0])
        index = torch.tensor(slots, device=self.mask.device)
        t, width = self._t, prompt_mask.shape[1]
        new = [k for k, _ in kv] + [v for _, v in kv]
        for mine, theirs in zip((*self.keys, *self.values), new, strict=True):
            mine[index, :, t - width : t] = theirs.to(mine.dtype)
        self.mask[index] = False
        self.mask[index, t - width : t] = prompt_mask
        self.positions[index] = torch.tensor(lengths, device=index.device)
        self.tokens[index] = first
        self.out[index, 0] = first
        self.count[index] = 1
        self.done[index] = torch.isin(first, stops) | (max_new <= 1)

    def read_done(self) -> tuple[list[bool], list[int]]:
        both = torch.stack([self.done.long(), self.count]).tolist()  # one host sync
        return [bool(d) for d in both[0]], both[1]

    def take(self, other: SlotState, live: list[int]) -> None:
        """Copy `other`'s slots `live` into this (smaller) state's first slots."""
        if not self.keys:
            self._allocate(other.keys[0], other.values[0])
        n, index = len(live), torch.tensor(live, device=self.mask.device)
        for mine, theirs in zip(
            (*self.keys, *self.values), (*other.keys, *other.values), strict=True
        ):
            mine[:n] = theirs[index]
        for name in ("tokens", "positions", "mask", "done", "count", "out"):
            getattr(self, name)[:n] = getattr(other, name)[index]
        self.done[n:] = True
        self.mask[n:] = False
        self.positions[n:] = 0
        self._set_t(other.t)

    def shift(self, by: int) -> None:
        """Move every slot's cache `by` indices to the left (the dropped prefix is padding)."""
        if by <= 0:
            return
        keep = self.cache_len - by
        for buffer in (*self.keys, *self.values):
            buffer[:, :, :keep] = buffer[:, :, by:].clone()
        self.mask[:, :keep] = self.mask[:, by:].clone()
        self.mask[:, keep:] = False
        self._set_t(self._t - by)


# For a compiled step, static states (cache + buffers) are reused across calls while their
# shapes match, so its graphs (a CUDA graph holds their addresses) are reused too.
_POOLS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def release(model: torch.nn.Module) -> None:
    """Free the static caches kept for `model`."""
    _POOLS.pop(model, None)


def slot_state(model, slots: int, cache_len: int, width: int, keep: bool) -> SlotState:
    device = model.get_input_embeddings().weight.device
    pool = _POOLS.setdefault(model, {}) if keep else {}
    key = (slots, cache_len, width, device)
    if key not in pool:
        layers = model.config.get_text_config(decoder=True).num_hidden_layers
        pool[key] = SlotState(layers, slots, cache_len, width, device)
    return pool[key]


def decode_step(model, state: SlotState, stops: torch.Tensor, max_new: int) -> None:
    """Feed each slot its last token, append the argmax; finished slots stay finished."""
    t = state.layers[0].cumulative_length
    state.mask.index_fill_(1, t.view(1), True)
    logits = model(
        input_ids=state.tokens[:, None],
        position_ids=state.positions[:, None],
        attention_mask=state.mask,
        cache=state.cache,
        use_cache=True,
    ).logits[:, -1]
    token = logits.argmax(-1)
    live = ~state.done
    # A finished row writes past its count (column max_new is scratch), never over its tokens.
    state.out.scatter_(1, state.count.clamp(max=max_new)[:, None], token[:, None])
    state.count.add_(live.long())
    state.done.logical_or_(torch.isin(token, stops) | (state.count >= max_new))
    state.tokens.copy_(token)
    # Only live rows move on: an idle slot's position would grow call after call in a kept
    # state, past a learned position table (GPT-2) or a long-context rope's original length.
    state.positions.add_(live.long())


_COMPILED: dict = {}


def step_mode(backend, mode: str | None, cuda: bool) -> str | None:
    """The torch.compile mode of the step: by default CUDA graphs under inductor on CUDA."""
    return mode or ("reduce-overhead" if cuda and backend == "inductor" else None)


def compiled_step(backend, mode: str | None, model):
    """`decode_step` compiled once per (backend, mode); graphs are cached per slot count."""
    cuda = model.get_input_embeddings().weight.device.type == "cuda"
    mode = step_mode(backend, mode, cuda)
    key = (backend, mode)
    if key not in _COMPILED:
        _COMPILED[key] = torch.compile(
            decode_step, fullgraph=True, dynamic=False, backend=backend, mode=mode
        )
    return _COMPILED[key]
