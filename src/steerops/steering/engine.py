"""Batched steered generation: every row of a batch carries its own steering.

A `SteeringTable` holds, per hooked layer, the distinct unit vectors in use and, per row,
up to K (vector index, weight) slots (weight 0 = no-op). While generating, a forward hook
on each hooked decoder block adds `delta[row]` to the block output. The delta of every row
of the current sub-batch is gathered once per sub-batch, by the global row ids of its rows,
into a static buffer; the hook itself only slices that buffer by the batch size (a shape,
not a tensor value), so decode steps do no host synchronisation and no recomputation, and
a row keeps its steering however the batch is split, sorted or padded.

Scopes: `all` steers prompt and generated tokens; `response` steers only decode steps (a
forward over one new token with a cache), so the first generated token still comes from the
unsteered prompt logits. Both loops left-pad every prefill to at least two tokens
(`decode_prefill.MIN_INPUT`), so the hook tells a prefill from a decode step by its width:
a one-token prompt is left unsteered however its rows are batched.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import Iterator, Sequence

import torch
from tqdm.auto import tqdm

from steerops.errors import SteeropsError
from steerops.models import decode, unsteered
from steerops.models.batching import Batcher, length_order
from steerops.models.decode_prefill import MIN_INPUT
from steerops.models.decode_trunk import Trunk
from steerops.models.generation import GenerationInterrupted, cut_at_stop, generate_batch
from steerops.models.resolver import ModelLayout
from steerops.specs import SCOPES

log = logging.getLogger(__name__)
LOOPS = ("static", "hf")

# One steering addition: (layer, unit vector [hidden], weight).
Addition = tuple[int, torch.Tensor, float]


class SteeringTable:
    """Per-row steering for `len(rows)` rows; `rows[r]` lists row r's additions.

    The same vector object used by many rows is stored once per layer (deduplicated by
    identity), so a table for hundreds of configs stays small.
    """

    def __init__(self, rows: Sequence[Sequence[Addition]]):
        self.n_rows = len(rows)
        # layer -> parallel lists (row, slot within the row, vector index, weight); one pass
        entries: dict[int, tuple[list[int], list[int], list[int], list[float]]] = {}
        found: dict[int, dict[int, int]] = {}  # layer -> id(vector) -> index
        self.vectors: dict[int, list[torch.Tensor]] = {}
        for r, additions in enumerate(rows):
            for layer, vector, weight in additions:
                if vector.dim() != 1:
                    raise SteeropsError(
                        f"steering vector for layer {layer} must be 1-D, "
                        f"got shape {tuple(vector.shape)}"
                    )
                index = found.setdefault(layer, {})
                if id(vector) not in index:
                    index[id(vector)] = len(index)
                    self.vectors.setdefault(layer, []).append(vector)
                row, slot, vec, wt = entries.setdefault(layer, ([], [], [], []))
                slot.append(slot[-1] + 1 if row and row[-1] == r else 0)
                row.append(r)
                vec.append(index[id(vector)])
                wt.append(float(weight))
        self.index: dict[int, torch.Tensor] = {}  # layer -> [n_rows, K] long
        self.weight: dict[int, torch.Tensor] = {}  # layer -> [n_rows, K] float32
        for layer, (row, slot, vec, wt) in entries.items():
            k = max(slot) + 1
            self.index[layer] = torch.zeros(self.n_rows, k, dtype=torch.long)
            self.weight[layer] = torch.zeros(self.n_rows, k, dtype=torch.float32)
            at = (torch.tensor(row), torch.tensor(slot))
            self.index[layer][at] = torch.tensor(vec)
            self.weight[layer][at] = torch.tensor(wt, dtype=torch.float32)

    @property
    def layers(self) -> list[int]:
        return sorted(self.vectors)

    def groups(self) -> list[int]:
        """A group id per row; rows of one group carry the same steering."""
        keys: list[tuple] = [() for _ in range(self.n_rows)]
        for layer in self.layers:
            pairs = zip(self.index[layer].tolist(), self.weight[layer].tolist(), strict=True)
            keys = [(*key, layer, *i, *w) for key, (i, w) in zip(keys, pairs, strict=True)]
        ids: dict[tuple, int] = {}
        return [ids.setdefault(key, len(ids)) for key in keys]


# Each hooked module's buffers [row_ids, delta], kept from call to call: dynamo takes the
# tensors a hook reads as inputs at fixed addresses, so new buffers on every call would have
# a CUDA-graph step record each slot count's graph again, every call (and on older torch run
# without graphs after enough of them).
_BUFFERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_IN_USE: weakref.WeakSet = weakref.WeakSet()  # modules whose kept buffers a hook holds now


def _new_buffers(
    max_rows: int, hidden: int, device: torch.device, dtype: torch.dtype
) -> list[torch.Tensor]:
    # not inference tensors, even for a caller under inference mode: `select` writes them
    # between forwards and the next call zeroes them, outside it
    with torch.inference_mode(False):
        return [
            torch.zeros(max_rows, dtype=torch.long, device=device),
            torch.zeros(max_rows, hidden, dtype=dtype, device=device),
        ]


def _kept_buffers(
    module: torch.nn.Module, max_rows: int, hidden: int, device: torch.device, dtype: torch.dtype
) -> list[torch.Tensor]:
    """The module's [row_ids, delta] of its last call, zeroed, when they hold as many rows
    in the dtype and on the device its parameters say (a quantized or offloaded block's hook
    moved them: it gets new ones); else new ones, kept for its next call. The module is in
    use until the caller discards it from `_IN_USE`."""
    held = _BUFFERS.get(module)
    wanted = ((max_rows, hidden), dtype, torch.device(device))
    if held is not None and (held[1].shape, held[1].dtype, held[1].device) == wanted:
        with torch.inference_mode(False):
            for buffer in held:
                buffer.zero_()  # a layer this table leaves alone adds zero
    else:
        held = _BUFFERS[module] = _new_buffers(max_rows, hidden, device, dtype)
    _IN_USE.add(module)
    return held


class _LayerState:
    """One hooked layer's table and static buffers, on that layer's device. A layer the
    table does not steer keeps a zero delta (hooked so one compiled graph fits all tables)."""

    def __init__(self, table: SteeringTable, layer: int, buffers: list[torch.Tensor]):
        self.vectors = None
        device = buffers[1].device
        if layer in table.vectors:
            self.vectors = torch.stack([v.to(torch.float32) for v in table.vectors[layer]])
            self.vectors = self.vectors.to(device)
            self.index = table.index[layer].to(device)
            self.weight = table.weight[layer].to(device)
        self._buffers = buffers  # kept for the module's next call: moves are written back
        self.row_ids, self.delta = buffers

    def follow(self, hidden: torch.Tensor) -> None:
        """Move the buffers to the device and dtype of the hidden states, which for an
        offloaded block (parameters on `meta`) or a quantized one (integer parameters) are
        not its parameters'. A no-op after the first forward, so compiled graphs see fixed
        buffers (the check is on static tensor metadata, a guard, not a graph break)."""
        if self.delta.device != hidden.device or self.delta.dtype != hidden.dtype:
            device = hidden.device
            # the forward runs under inference mode: tensors made there could not be written
            # outside it, as `select` writes the buffers between the forwards
            with torch.inference_mode(False):
                if self.vectors is not None:  # a layer the table leaves alone holds none
                    self.vectors, self.index = self.vectors.to(device), self.index.to(device)
                    self.weight = self.weight.to(device)
                self.row_ids = self.row_ids.to(device)
                self.delta = self.delta.to(device, hidden.dtype)
            self._buffers[:] = [self.row_ids, self.delta]

    def select(self, row_ids: torch.Tensor) -> None:
        if self.vectors is None:
            return
        n = row_ids.shape[0]
        rows = self.row_ids[:n]
        rows.copy_(row_ids, non_blocking=True)
        # sum_k weight[r, k] * vectors[index[r, k]], in float32, then in the model's dtype.
        delta = torch.einsum("rk,rkh->rh", self.weight[rows], self.vectors[self.index[rows]])
        self.delta[:n].copy_(delta)


class SteeringHooks:
    """Controller yielded by `steering_hooks`: `select(row_ids)` before each sub-batch."""

    def __init__(self, states: dict[int, _LayerState], max_rows: int):
        self._states = states
        self.max_rows = max_rows

    def select(self, row_ids: Sequence[int] | torch.Tensor) -> None:
        """Make the next forwards steer their batch rows as table rows `row_ids`."""
        ids = torch.as_tensor(row_ids, dtype=torch.long)
        if ids.shape[0] > self.max_rows:
            raise SteeropsError(
                f"sub-batch of {ids.shape[0]} rows exceeds the "
                f"{self.max_rows} rows the steering buffers hold"
            )
        for state in self._states.values():
            state.select(ids)


def _block_device_dtype(module: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    # A first guess only (the hook's `follow` corrects it): never `meta`, always a float.
    param = next(module.parameters())
    device = param.device if param.device.type != "meta" else torch.device("cpu")
    return device, param.dtype if param.dtype.is_floating_point else torch.float32


def _make_hook(state: _LayerState, scope: str):
    def hook(module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        state.follow(hidden)  # on the prefill, which runs eagerly, also with scope response
        if scope == "response" and hidden.shape[1] != 1:
            return None  # prefill: leave the prompt unsteered
        steered = hidden + state.delta[: hidden.shape[0]].unsqueeze(1)
        return (steered, *output[1:]) if isinstance(output, tuple) else steered

    return hook


@contextlib.contextmanager
def steering_hooks(
    layout: ModelLayout,
    table: SteeringTable,
    scope: str = "all",
    max_rows: int | None = None,
    layers: Sequence[int] | None = None,
    keep: bool = False,
) -> Iterator[SteeringHooks]:
    """Hook every layer of `table` (added to the block output); hooks are always removed.
    `layers` hooks more layers than the table steers (they add zero). `keep`: the buffers
    the hooks read are kept for the next call of the same size (`_kept_buffers`; the static
    loop's compiled step records their addresses)."""
    if scope not in SCOPES:
        raise SteeropsError(f"steering.scope: unknown scope {scope!r} (use all or response)")
    max_rows = max_rows or table.n_rows
    handles = []
    hooked: list[torch.nn.Module] = []
    try:
        states = {}
        for layer in sorted({*table.layers, *(layers or ())}):
            if not 0 <= layer < layout.num_layers:
                raise SteeropsError(
                    f"layer {layer} out of range: the model has {layout.num_layers} layers"
                )
            module = layout.component_module(layer, "residual")
            device, dtype = _block_device_dtype(module)
            if keep and module not in _IN_USE:
                buffers = _kept_buffers(module, max_rows, layout.hidden_size, device, dtype)
                hooked.append(module)
            else:  # HF generate's sizes vary call to call: kept, they would evict the loop's
                buffers = _new_buffers(max_rows, layout.hidden_size, device, dtype)
            states[layer] = _LayerState(table, layer, buffers)
            handles.append(module.register_forward_hook(_make_hook(states[layer], scope)))
        yield SteeringHooks(states, max_rows)
    finally:
        for handle in handles:
            handle.remove()
        for module in hooked:
            _IN_USE.discard(module)


def generate_steered(
    model: torch.nn.Module,
    layout: ModelLayout,
    prompts: Sequence[list[int]],
    table: SteeringTable | None,
    *,
    pad_token_id: int,
    stop_ids: Sequence[int],
    max_new_tokens: int,
    scope: str = "all",
    max_batch_rows: int = 256,
    cache_implementation: str | None = None,
    progress: bool = False,
    desc: str = "steer",
    loop: str = "hf",
    loop_options: decode.StaticLoop | None = None,
    stats: decode.DecodeStats | None = None,
) -> list[list[int]]:
    """Greedy new tokens (cut before the first stop id) for each row, in the caller's order.

    Row i is `prompts[i]` (token ids) steered as `table` row i (no table: unsteered).
    `loop="static"`: the engine's own decode loop (`steerops.models.decode`: static cache,
    compiled fixed-shape step, finished rows' slots refilled; `stats` gets its counters),
    or HF `generate` for a model it does not cover. `loop="hf"`: HF `generate`, the
    reference, in left-padded sub-batches, longest first. Either way at most
    `max_batch_rows` rows at a time, under `steerops.models.batching`'s out-of-memory rule
    (halved and retried, finished rows kept); `cache_implementation` applies to HF only.
    An interrupt raises `GenerationInterrupted` with the rows that had finished.
    """
    if table is not None and table.n_rows != len(prompts):
        raise SteeropsError(f"steering table has {table.n_rows} rows for {len(prompts)} prompts")
    if any(len(p) == 0 for p in prompts):
        raise SteeropsError("cannot generate from an empty prompt")
    if loop not in LOOPS:
        raise SteeropsError(f"steering.loop: unknown loop {loop!r} (use static or hf)")
    why_not = decode.covers(model) if loop == "static" else None
    if why_not:
        log.warning("steered decoding falls back to HF generate: %s", why_not)
    static = loop == "static" and not why_not
    log.info(
        "steered decoding of %d rows with %s",
        len(prompts),
        "the static decode loop" if static else "HF generate",
    )
    if static:
        # rows in tokens' worth (`decode_greedy`'s on_progress): the bar moves every step,
        # not only when rows finish (a first sub-batch of every row finishes at its end)
        with tqdm(
            total=len(prompts),
            desc=desc,
            unit="row",
            disable=None if progress else True,
            bar_format="{l_bar}{bar}| {n:.1f}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]",
        ) as bar:
            return _generate_static(
                model,
                layout,
                prompts,
                table,
                scope,
                max_batch_rows,
                loop_options or decode.StaticLoop(),
                stats,
                bar.update,
                pad_token_id=pad_token_id,
                stop_ids=stop_ids,
                max_new_tokens=max_new_tokens,
            )
    lengths = [len(p) for p in prompts]
    size = max(1, min(max_batch_rows, len(prompts)))
    settings = {
        "max_new_tokens": max_new_tokens,
        "do_sample": False,
        "pad_token_id": pad_token_id,
        "eos_token_id": list(stop_ids),
    }
    if cache_implementation:
        settings["cache_implementation"] = cache_implementation
    results: list[list[int] | None] = [None] * len(prompts)
    hooks = (
        steering_hooks(layout, table, scope, size)
        if table is not None and table.layers
        else contextlib.nullcontext()
    )
    batcher = Batcher(max_rows=size, what="row", hint="lower max_new_tokens or use a smaller model")
    bar = tqdm(total=len(prompts), desc=desc, unit="row", disable=None if progress else True)
    with hooks as control, _compiled_graphs_see_hooks(), bar:

        def compute(chunk: list[int]) -> list[list[int]]:
            if control is not None:
                control.select(chunk)
            return generate_batch(model, [prompts[i] for i in chunk], settings, min_width=MIN_INPUT)

        def done(chunk: list[int], new: list[list[int]]) -> None:
            for i, ids in zip(chunk, new, strict=True):
                results[i] = cut_at_stop(ids, stop_ids)[0]
            bar.update(len(chunk))

        try:
            batcher.run(length_order(lengths), lengths, compute, done)
        except KeyboardInterrupt as exc:
            finished = {i: ids for i, ids in enumerate(results) if ids is not None}
            raise GenerationInterrupted(finished) from exc
    return results  # type: ignore[return-value]


def _generate_static(
    model, layout, prompts, table, scope, max_batch_rows, options, stats, on_progress, **settings
) -> list[list[int]]:
    # Every layer is hooked (adding zero where the table does not steer) into buffers sized
    # for the largest slot count, so one compiled step per slot count serves every table.
    table = table if table is not None else SteeringTable([[]] * len(prompts))
    slots = decode.bucket_sizes(max_batch_rows)[0]
    depths = unsteered_depths(table, layout.num_layers)
    store = unsteered.kept(model)  # on when the judge reads these responses with this model
    with (
        steering_hooks(
            layout, table, scope, slots, layers=range(layout.num_layers), keep=True
        ) as control,
        _compiled_graphs_see_hooks(),
    ):
        return decode.decode_greedy(
            model,
            prompts,
            max_rows=slots,
            steer=control.select,
            # under response scope no prompt is steered: every config of a question shares
            # its prefill whole, and no trunk is needed
            groups=table.groups() if scope == "all" else [0] * len(prompts),
            trunk=Trunk(layout.layers, depths) if scope == "all" else None,
            keeper=unsteered.Keeper(store, prompts, depths) if store is not None else None,
            options=options,
            stats=stats,
            on_progress=on_progress,
            **settings,
        )


def unsteered_depths(table: SteeringTable, num_layers: int) -> list[int]:
    """Per row, how many leading blocks its steering leaves alone: its first steered
    layer + 1 (the hook adds after that block), every block for an unsteered row."""
    depths = [num_layers] * table.n_rows
    for layer in sorted(table.layers, reverse=True):  # the first steered layer wins
        for r, steered in enumerate((table.weight[layer] != 0).any(1).tolist()):
            if steered:
                depths[r] = layer + 1
    return depths


def _compiled_graphs_see_hooks():
    """With a static cache HF compiles the decode step (asked by params, or by the
    checkpoint's own generation config), and by default torch.compile does not guard on
    module hooks: a graph compiled with one steering table (or none) would be replayed for
    another. Guarding on hooks makes a changed table recompile instead; nothing compiled,
    the guard costs nothing."""
    config = getattr(getattr(torch, "_dynamo", None), "config", None)
    if not hasattr(config, "skip_nnmodule_hook_guards"):
        return contextlib.nullcontext()
    return config.patch(skip_nnmodule_hook_guards=False)
