"""Greedy decoding in a static KV cache: one compiled fixed-shape step, refilled slots.

The cache holds `slots` rows and one write index `t` shared by every slot. A step feeds
one token per slot (its own position id, its own attention mask over the cache), takes
the argmax and updates the done mask, all on the device: `torch.compile(fullgraph=True)`
captures it, and on CUDA `mode="reduce-overhead"` replays it as a CUDA graph. The host
reads the done mask only every `check_every` steps. A finished row's slot is refilled
with a pending row: its prompt is prefilled (eagerly, in a throwaway dynamic cache) and
copied into the slot right-aligned to end at `t`, so finished rows stop costing compute.
When `t` nears the end of the cache, every slot shifts left by the padding all live rows
share (rotary and absolute positions come from position ids, not cache indices, and a
row's tokens stay contiguous, so sliding windows keep their meaning). When no row is
pending, live rows move to fewer slots (`_SlotPlan`: a few buckets for a compiled step).
Under steering of the prompt, rows of one prompt side by side prefill the blocks below
their steering once (`decode_trunk`).
An eager step (CPU) attends only from the first live row's start to the last write
(`WindowLayer`): the padding every row shares and the unwritten end cost nothing.

Every layer is a full-length cache layer: sliding-window layers get their window from
the attention mask HF builds, not from a rolling buffer. HF's own continuous batching
(`generate_batch`) packs every request into one flat sequence behind a scheduler thread,
where a per-row steering hook could not tell its rows apart; hence this loop.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from steerops.errors import SteeropsError
from steerops.models.batching import is_out_of_memory, release_memory
from steerops.models.decode_attention import packed_gqa
from steerops.models.decode_graphs import StepGraphs
from steerops.models.decode_memory import CUDA_CACHE_MULTIPLE, CUDA_CHECK_EVERY, cache_length
from steerops.models.decode_prefill import MIN_INPUT
from steerops.models.decode_run import Run
from steerops.models.decode_step import (
    compiled_step,
    decode_step,
    release,
    slot_state,
    step_mode,
)
from steerops.models.decode_trunk import Trunk
from steerops.models.generation import GenerationInterrupted
from steerops.models.unsteered import Keeper

log = logging.getLogger(__name__)

_LIMIT_HIT = getattr(torch._dynamo.exc, "FailOnRecompileLimitHit", ())

# Model types whose tokens the loop reproduces exactly (tested against HF generate).
LOOP_ARCHITECTURES = frozenset(
    {
        "llama",
        "mistral",
        "qwen2",
        "qwen3",
        "gemma",
        "gemma2",
        "gemma3_text",
        "gemma3",
        "gpt2",
        "gpt_neox",
        "phi3",
        "olmo2",
    }
)
SMALLEST_BUCKET = 8
# Graphs the compiled step may hold in a process (one per slot count and cache shape):
# past it dynamo refuses a fullgraph step, and the loop starts the count again.
RECOMPILE_LIMIT = 64
# its name in this torch: recompile_limit, cache_size_limit before torch 2.6 (and an alias
# of it since, which a later torch may drop)
_RECOMPILE_KEY = (
    "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
)
# With a trunk, rows are ordered by depth, then prompt by prompt, within blocks of
# max_rows // GROUPS_PER_BLOCK steering groups: a prefill then holds many configs of one
# prompt (their trunk is computed once), while the groups whose shared prefix is kept
# stay about as many as a quarter of the slots (fewer after an out-of-memory retry).
GROUPS_PER_BLOCK = 4


@dataclass(frozen=True)
class StaticLoop:
    """How the loop runs. `backend`: a torch.compile backend for the step, None to run it
    eagerly, "auto" for inductor on CUDA (with `mode=None`: "reduce-overhead", i.e. CUDA
    graphs) and eager on CPU, where inductor's minutes of compiling did not pay back on
    SmolLM2 (matmul-bound) and gained about 1.2x on the toy. `check_every`: decode steps
    between reads of the done mask; None: 4 on CUDA, 1 on CPU (a read costs no sync).
    `share_trunk`: rows of one prompt prefill the blocks below their steering once
    (`decode_trunk`); off, every row computes its own, in the same row order (to measure
    the sharing). `capture`: on CUDA with a compiled step, the `check_every` steps between
    reads of the done mask are captured by hand as one CUDA graph (`decode_graphs`; the
    step is compiled without CUDA graphs of its own) and replayed with no per-step host
    work; elsewhere it changes nothing. `prompt_room`: the static cache has room for
    prompts of at least this many tokens, so calls with shorter longest prompts (a
    session's question subsets) share one cache length: one set of kept states and one
    graph per slot count, not one per call."""

    backend: str | Callable | None = "auto"
    mode: str | None = None
    check_every: int | None = None
    share_trunk: bool = True
    capture: bool = False
    prompt_room: int = 0


@dataclass
class DecodeStats:
    steps: int = 0  # decode-step replays
    row_steps: int = 0  # steps x slots
    useful_row_steps: int = 0  # row-steps that produced a token of a live row
    # blocking reads of the device by the host while decoding: the done mask (every
    # `check_every` steps) and the tokens of rows that finished; each prefill (a refill)
    # adds its own few blocking copies, not counted here
    host_syncs: int = 0
    prefills: int = 0
    reused_prompt_tokens: int = 0  # prompt tokens not recomputed (shared prefix, equal prompt)
    trunk_block_tokens: int = 0  # (block, token) pairs of prefills the trunk did not compute
    shifts: int = 0  # cache shifts to the left
    graphs: int = 0  # CUDA graphs captured by hand (`StaticLoop(capture=True)`)
    buckets: list[int] = field(default_factory=list)

    @property
    def useful_share(self) -> float:
        return self.useful_row_steps / self.row_steps if self.row_steps else 1.0


def covers(model: torch.nn.Module) -> str | None:
    """None when the loop can decode `model` exactly, else why not (one phrase)."""
    model_type = getattr(model.config, "model_type", type(model).__name__)
    if model_type not in LOOP_ARCHITECTURES:
        return f"architecture {model_type!r} is not covered by the static loop"
    if len({p.device for p in model.parameters()}) > 1:
        return "the model is split over several devices"
    if getattr(model, "hf_quantizer", None) is not None:  # its kernels: not in one graph
        return "the model is quantized"
    return None


def bucket_sizes(max_rows: int) -> list[int]:
    """Slot counts, largest first: max_rows, then halves down to SMALLEST_BUCKET (at most
    half the slots idle when rows are fewer; each count compiles its own graph)."""
    sizes = [max(1, max_rows)]
    while sizes[-1] // 2 >= SMALLEST_BUCKET:
        sizes.append(sizes[-1] // 2)
    return sizes


class _SlotPlan:
    """Slot counts. A compiled step has one graph per count, so counts come from
    `bucket_sizes`; an eager step takes any count (rows rounded up to 8), and moves to fewer
    slots once a quarter of them would sit idle."""

    def __init__(self, max_rows: int, compiled: bool):
        self.max_rows, self.compiled = max_rows, compiled
        self.sizes = bucket_sizes(max_rows)

    def fit(self, rows: int) -> int:
        if not self.compiled:
            return min(self.max_rows, -(-rows // 8) * 8)
        return min((s for s in self.sizes if s >= rows), default=self.sizes[0])

    def smaller(self, slots: int, live: int) -> int | None:
        target = self.fit(live)
        return target if target < slots and (self.compiled or 4 * target <= 3 * slots) else None


def decode_greedy(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    *,
    pad_token_id: int,
    stop_ids: Sequence[int],
    max_new_tokens: int,
    max_rows: int,
    steer: Callable[[Sequence[int]], None] | None = None,
    groups: Sequence[int] | None = None,
    options: StaticLoop = StaticLoop(),
    stats: DecodeStats | None = None,
    on_progress: Callable[[float], object] | None = None,
    trunk: Trunk | None = None,
    keeper: Keeper | None = None,
) -> list[list[int]]:
    """Greedy new tokens for each prompt (cut before the first stop id), in input order.

    At most `max_rows` rows decode at once. `steer(rows)` is called with the prompt indices
    of the next forward's batch rows (before every prefill, and with the slot layout before
    decode steps resume). Rows with equal `groups` ids carry the same steering over their
    prompts, so they share their prompts' common prefix, and equal prompts prefill once.
    With a `trunk`, rows of one prompt prefill the blocks below their steering once
    (`decode_trunk`). A `keeper` records what the unsteered model computes along each
    row's response when the step runs eagerly (`models.unsteered`). Out of memory
    (`models.batching`'s rule), the slot count is halved and the unfinished rows run again;
    finished rows are kept. An interrupt raises `GenerationInterrupted` with them.
    """
    stats = stats if stats is not None else DecodeStats()
    run = Run(model, prompts, pad_token_id, stop_ids, max_new_tokens, steer, groups, stats, trunk)
    max_rows = min(max_rows, _ROWS_THAT_FIT.get(model, max_rows))
    recompiled = False
    try:
        while True:
            try:
                _decode(run, max_rows, options, on_progress, keeper)
                return [run.results[i] for i in range(len(prompts))]
            except Exception as exc:
                if isinstance(exc, _LIMIT_HIT) and not recompiled:
                    # A long process (many traits, each its own cache length) filled the
                    # step's graphs: drop them and compile afresh; finished rows are kept.
                    recompiled = True
                    release(model)
                    torch.compiler.reset()
                    continue
                if not is_out_of_memory(exc):
                    raise
                if max_rows == 1:
                    raise SteeropsError(
                        "out of memory decoding a single row: lower "
                        "max_new_tokens or use a smaller model"
                    ) from None
            release(model)
            graph_trees = _records_graph_trees(model, options)
            if graph_trees:
                # out of memory inside a CUDA-graph recording may leave torch's graph trees
                # mid-recording; they are dropped only with everything compiled (a compiled
                # step keeps its tree manager), so the step compiles anew
                torch.compiler.reset()
            release_memory()
            max_rows //= 2
            # said, since a run then takes longer than its max_batch_rows suggests
            log.warning(
                "out of memory decoding %d rows a step: going on at %d%s",
                max_rows * 2,
                max_rows,
                " (this model's later calls in this process start there)" if graph_trees else "",
            )
            if graph_trees:  # later calls start at what fits: one reset, not one a call
                _ROWS_THAT_FIT[model] = max_rows
    except KeyboardInterrupt as exc:
        release(model)  # a kept state or graph may have stopped mid-step
        raise GenerationInterrupted(dict(run.results)) from exc


# The slot count a model's CUDA-graph step last ran out of memory above, halved (per model,
# for the process): a later call starts there rather than failing and compiling anew again.
_ROWS_THAT_FIT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _step_backend(options: StaticLoop, cuda: bool):
    """The step's torch.compile backend (None: eager): "auto" is inductor on CUDA."""
    return ("inductor" if cuda else None) if options.backend == "auto" else options.backend


def _records_graph_trees(model, options: StaticLoop) -> bool:
    """Whether the step runs as torch's CUDA graph trees (a compiled step on CUDA in a
    mode that records graphs; not the graphs `capture` takes by hand)."""
    cuda = model.get_input_embeddings().weight.device.type == "cuda"
    backend = _step_backend(options, cuda)
    if not cuda or options.capture or backend != "inductor":
        return False
    return step_mode(backend, options.mode, cuda) in ("reduce-overhead", "max-autotune")


def _decode(
    run: Run, max_rows: int, options: StaticLoop, on_progress, keeper: Keeper | None
) -> None:
    """Decode every row not in `run.results` yet, at most `max_rows` at a time."""
    model, prompts, groups, stats = run.model, run.prompts, run.groups, run.stats
    # Group by group (its shared prefix is then freed early), longest prompt first within,
    # equal prompts side by side (a group prefills each prompt once per refill). With a
    # trunk, blocks of groups instead, by depth then prompt by prompt within
    # (see GROUPS_PER_BLOCK).
    rank = {g: k for k, g in enumerate(dict.fromkeys(groups or [0]))}
    same = {p: k for k, p in enumerate(dict.fromkeys(map(tuple, prompts)))}
    per_block = max(1, max_rows // GROUPS_PER_BLOCK) if run.trunk else 1
    depths = run.trunk.depths if run.trunk else [0] * len(prompts)

    def place(i: int) -> tuple[int, ...]:
        group = rank[groups[i]] if groups else 0
        # a prefill shares the trunk of its shallowest row: equal depths side by side
        return (group // per_block, -depths[i], -len(prompts[i]), same[tuple(prompts[i])], group)

    order = sorted((i for i in range(len(prompts)) if i not in run.results), key=place)
    if not order:
        return
    pending = deque(order)
    # longest_left[j]: the widest prefill among order[j:] (refills need t >= its width)
    longest_left = [max(MIN_INPUT, len(prompts[i])) for i in order] + [0]
    for j in range(len(order) - 1, -1, -1):
        longest_left[j] = max(longest_left[j], longest_left[j + 1])
    cuda = run.device.type == "cuda"
    every = options.check_every or (CUDA_CHECK_EVERY if cuda else 1)
    backend = _step_backend(options, cuda)
    multiple = CUDA_CACHE_MULTIPLE if cuda and backend is not None else 8
    longest = max(longest_left[0], options.prompt_room)
    cache_len = cache_length(longest, run.max_new, every, multiple)
    width = run.max_new + 1
    step = decode_step if backend is None else compiled_step(backend, options.mode, model)
    graphs = None
    if options.capture and cuda and backend is not None:
        # the captured graph holds the kernels: the step itself compiles without graphs
        graphs = StepGraphs(compiled_step(backend, "default", model), every)
    plan, keep = _SlotPlan(max_rows, compiled=backend is not None), backend is not None
    # An eager step may attend to a window of the cache (a compiled one keeps its shape);
    # flash attention's mask ignores the window's offset, sdpa's and eager's read it.
    attention = getattr(model.config, "_attn_implementation", None)
    windowed = backend is None and attention in ("sdpa", "eager")
    # A compiled step cannot hand states to the host: only an eager one keeps them.
    keeper = keeper if backend is None else None
    capturing = keeper.capturing() if keeper is not None else contextlib.nullcontext()
    # One graph per slot count and cache shape: allow more than dynamo's default 8. A
    # compiled step attends to the cache without copying it per query head (`packed_gqa`).
    packing = packed_gqa() if backend is not None else contextlib.nullcontext()
    with (
        torch.inference_mode(),
        torch._dynamo.config.patch(_RECOMPILE_KEY, RECOMPILE_LIMIT),
        capturing,
        packing,
    ):
        # A kept state's tensors are made in inference mode (on CUDA the cache's write
        # index is moved there at its first placement), so they are reset in it too.
        state = slot_state(model, plan.fit(len(order)), cache_len, width, keep)
        run.start(state, longest_left[0], order, options.share_trunk)
        stats.buckets.append(run.state.slots)
        live = 0
        while pending or live:
            run.refill(pending)
            live = sum(r >= 0 for r in run.rows)
            smaller = None if pending else plan.smaller(run.state.slots, live)
            if smaller:
                run.compact(smaller, cache_len, width, keep)
            run.make_room(every, longest_left[len(order) - len(pending)])
            if windowed:  # attend from the first live row's start to the last write
                run.state.attend((run.first_start(), run.state.t + every))
            if graphs is not None:
                graphs.run(model, run.state, run.stops, run.max_new)
                stats.graphs = graphs.captured
            else:
                for _ in range(every):
                    with keeper.stepping(run.rows) if keeper else contextlib.nullcontext():
                        step(model, run.state, run.stops, run.max_new)
            run.state.advanced(every)
            stats.steps += every
            stats.row_steps += every * run.state.slots
            finished, progress = run.harvest()
            if keeper is not None and finished:
                keeper.finished(run.results)
            live = sum(r >= 0 for r in run.rows)
            if on_progress is not None and progress:
                on_progress(progress)
