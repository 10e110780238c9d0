"""The decode steps between two reads of the done mask, captured as one CUDA graph.

Under `mode="reduce-overhead"` a compiled step replays a CUDA graph too, but each call
first runs dynamo's guards (about 11,000 for a 34-layer model with every layer hooked: 4.7
ms a call on one CPU core) and cudagraph trees' checks of its static inputs: host work
that a GPU step of a few milliseconds waits on. `StepGraphs` (`StaticLoop(capture=True)`)
compiles the step without CUDA graphs, runs a slot state's first `every` steps for real
(they compile it and warm cuBLAS), then captures the next `every` steps by hand and from
then on replays them with one call: no guards, no Python per step.

A replay reads and writes the same addresses as the capture did, which holds while one
`decode_greedy` call lasts: the slot state's cache and buffers (kept per slot count), the
model's parameters, the stop ids and the steering hooks' buffers (`select` fills them in
place). Graphs are therefore owned by one call and keyed by the state's buffers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from steerops.errors import SteeropsError
from steerops.models.decode_step import SlotState


class StepGraphs:
    """`run(...)`: `every` steps of `step` on `state`, replayed from a CUDA graph once
    captured (the first call per state runs them eagerly, the second captures)."""

    def __init__(self, step: Callable, every: int):
        self.step, self.every = step, every
        self.graphs: dict[tuple, torch.cuda.CUDAGraph] = {}
        self.warm: set[tuple] = set()
        self.captured = 0  # graphs captured (one per slot state and stop list)

    def _steps(self, model, state: SlotState, stops: torch.Tensor, max_new: int) -> None:
        for _ in range(self.every):
            self.step(model, state, stops, max_new)

    def run(self, model, state: SlotState, stops: torch.Tensor, max_new: int) -> None:
        # on the state's device: torch's default capture stream is made once, on the device
        # current then, and a capture on another device's stream records nothing
        with torch.cuda.device(state.mask.device):
            self._run(model, state, stops, max_new)

    def _run(self, model, state: SlotState, stops: torch.Tensor, max_new: int) -> None:
        key = (id(state), state.keys[0].data_ptr(), stops.data_ptr(), max_new)
        graph = self.graphs.get(key)
        if graph is None:
            side, current = torch.cuda.Stream(), torch.cuda.current_stream()
            if key not in self.warm:
                # Real steps on a side stream, ordered both ways with the current one (as
                # torch's capture recipe warms up): compiles, allocates, creates handles.
                self.warm.add(key)
                side.wait_stream(current)
                with torch.cuda.stream(side):
                    self._steps(model, state, stops, max_new)
                current.wait_stream(side)
                return
            graph = torch.cuda.CUDAGraph()
            try:
                # records the kernels, nothing runs yet; thread-local: the judge of the
                # previous chunk may be using the device from its own thread meanwhile
                with torch.cuda.graph(graph, stream=side, capture_error_mode="thread_local"):
                    self._steps(model, state, stops, max_new)
            except Exception as exc:
                # no stepping on, nor retrying with fewer rows on an out-of-memory error:
                # after a failed capture torch's allocator may still count it as running
                why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise SteeropsError(
                    f"decode steps could not be captured as a CUDA graph ({why}): run the "
                    "loop without capture"
                ) from exc
            self.graphs[key] = graph
            self.captured += 1
        graph.replay()
