"""The host side of the decode loop: which row sits in which slot, refills, shifts."""

from __future__ import annotations

from collections import deque

import torch

from steerops.models.decode_prefill import Prefiller
from steerops.models.decode_step import SlotState, slot_state
from steerops.models.generation import cut_at_stop


class Run:
    """One call: pending rows, the slot -> row map, and the host side of the loop."""

    def __init__(self, model, prompts, pad, stop_ids, max_new, steer, groups, stats, trunk=None):
        self.model, self.prompts, self.pad, self.max_new = model, prompts, pad, max_new
        self.steer, self.groups, self.stats, self.trunk = steer, groups, stats, trunk
        self.device = model.get_input_embeddings().weight.device
        self.stop_ids = list(stop_ids)
        self.credited: dict[int, int] = {}  # row -> its tokens already reported as progress
        self.stops = torch.tensor(sorted(set(stop_ids)) or [-1], device=self.device)
        self.results: dict[int, list[int]] = {}  # kept across out-of-memory retries

    def start(self, state: SlotState, t: int, order: list[int], share_trunk: bool) -> None:
        """Begin decoding `order` into `state` (rows are ordered by the trunk either way;
        `share_trunk` off, each row prefills its own blocks)."""
        self.prefill = Prefiller(
            self.model,
            self.prompts,
            self.groups,
            self.pad,
            self.steer,
            order,
            self.stats,
            self.trunk if share_trunk else None,
        )
        self.state, self.rows = state, [-1] * state.slots
        self.start_of = [0] * state.slots  # cache index where each slot's row begins
        state.reset(t)

    def refill(self, pending: deque) -> None:
        """Prefill pending rows into free slots, once enough are free to batch them."""
        free = [s for s, r in enumerate(self.rows) if r < 0][: len(pending)]
        live = self.state.slots - sum(r < 0 for r in self.rows)
        if not free or (live and len(free) < min(len(pending), self.state.slots // 8)):
            return
        new = [pending.popleft() for _ in free]
        logits, kv, mask = self.prefill(new)
        first = logits.argmax(-1)
        t = self.state.t
        lengths = [len(self.prompts[r]) for r in new]
        self.state.place(free, first, kv, mask, lengths, self.stops, self.max_new)
        for s, r in zip(free, new, strict=True):
            self.rows[s], self.start_of[s] = r, t - len(self.prompts[r])
        self._steer_slots()
        self.stats.prefills += 1

    def _steer_slots(self) -> None:
        if self.steer is not None:  # empty slots steer as row 0; their tokens are ignored
            self.steer([max(r, 0) for r in self.rows])

    def harvest(self) -> tuple[int, float]:
        """Collect finished rows; returns how many finished and the progress since the last
        harvest in rows: each row is worth 1, reported a token (1 / max_new) at a time and
        in full when it finishes, so progress moves while the first rows are decoding."""
        done, count = self.state.read_done()
        self.stats.host_syncs += 1
        reported = 0
        for s, r in enumerate(self.rows):
            if r >= 0:
                now, seen = self.max_new if done[s] else count[s], self.credited.get(r, 0)
                if now > seen:  # a row run again after running out of memory: not twice
                    reported += now - seen
                    self.credited[r] = now
        finished = [s for s, r in enumerate(self.rows) if r >= 0 and done[s]]
        if finished:
            outs = self.state.out[finished].tolist()
            self.stats.host_syncs += 1
            for s, tokens in zip(finished, outs, strict=True):
                self.stats.useful_row_steps += count[s] - 1  # the first came from prefill
                self.results[self.rows[s]] = cut_at_stop(tokens[: count[s]], self.stop_ids)[0]
                self.rows[s] = -1
        return len(finished), reported / self.max_new

    def compact(self, slots: int, cache_len: int, width: int, keep: bool) -> None:
        live = [s for s, r in enumerate(self.rows) if r >= 0]
        smaller = slot_state(self.model, slots, cache_len, width, keep)
        smaller.take(self.state, live)
        rows, starts = [self.rows[s] for s in live], [self.start_of[s] for s in live]
        self.state, self.rows = smaller, rows + [-1] * (slots - len(live))
        self.start_of = starts + [0] * (slots - len(live))
        self.stats.buckets.append(slots)
        self._steer_slots()

    def first_start(self) -> int:
        """The cache index where the earliest live row begins: every index left of it is
        padding for all live rows."""
        return min((self.start_of[s] for s, r in enumerate(self.rows) if r >= 0), default=0)

    def make_room(self, steps: int, keep: int) -> None:
        """Shift the cache left so `steps` more writes fit; keep t >= `keep` for refills."""
        t = self.state.t
        if t + steps <= self.state.cache_len:
            return
        live = [self.start_of[s] for s, r in enumerate(self.rows) if r >= 0]
        shift = min([*live, t - keep]) if live else t - keep
        if t - shift + steps > self.state.cache_len:
            raise RuntimeError("static cache too short for the rows in flight")
        self.state.shift(shift)
        self.stats.shifts += 1
        self.start_of = [s - shift for s in self.start_of]
