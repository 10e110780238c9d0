"""Streamed, sharded, resumable extraction of pooled activations.

Examples (token ids with a prompt/response boundary) are sorted longest first and cut into
shards of `shard_examples`. Each shard runs in token-budget batches through
`steerops.models.capture.forward_capture` (which stops after the deepest requested layer), pools
each example's position window in fp32 (and gathers the per-token norms of the `norm`
coefficient unit, `steerops.extract.token_norm`), and is saved to `<out>/.partial/` with the
hash of everything its result depends on and the MD5 of its tensor bytes, by a writer thread
while the next shard computes. A rerun reuses every shard whose settings hash and bytes
match, so a killed run resumes where it stopped and ends with the same bytes (given the same
batches: a rerun with another `token_budget`, or past an out-of-memory halving, can differ in
float rounding, about 1e-7 of a value, which the hash leaves out on purpose). The final
file is assembled one layer at a time in example order, then `metadata.json` (with the
file's MD5) is written and the shards removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from tqdm.auto import tqdm

from steerops.errors import SteeropsError
from steerops.extract import token_norm
from steerops.extract.store import METADATA_FILE, PARTIAL_DIR, TENSORS_FILE, write_streamed
from steerops.io import write_json
from steerops.models.batching import Batcher, length_order, pad_batch
from steerops.models.capture import forward_capture
from steerops.models.compiled_blocks import compiled_blocks
from steerops.models.loading import LoadedModel
from steerops.models.resolver import ModelLayout
from steerops.specs import Position

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass
class Example:
    ids: np.ndarray  # int64 token ids: prompt, then response
    prompt_len: int
    info: dict  # row metadata for metadata.json (polarity, source_index... or task_id)


@dataclass
class Extractor:
    """The model side of an extraction."""

    model: torch.nn.Module
    layout: ModelLayout
    pad_id: int
    padding_side: str = "right"
    device: torch.device | str = "cpu"  # where input ids go
    compile: bool = False  # decoder blocks compiled (same activations, up to float order)


@dataclass
class Job:
    out_dir: Path
    position: Position
    layers: list[int]
    component: str = "residual"
    dtype: str = "float32"
    settings: dict = field(default_factory=dict)  # model identity etc., part of the hash
    shard_examples: int = 256
    token_budget: int = 16384
    massive: tuple[float, float] = (100.0, 1000.0)  # (threshold, ratio) of a massive token
    label: str = ""  # what the progress bar names besides the position (not hashed)


def extractor_for(loaded: LoadedModel, padding_side: str, compile: bool = False) -> Extractor:
    tok = loaded.tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    return Extractor(
        loaded.model, loaded.layout, int(pad_id or 0), padding_side, loaded.input_device, compile
    )


def select(examples: list[Example], position: Position) -> tuple[list[Example], list[range]]:
    """Examples whose window is non-empty, with their windows."""
    kept, windows = [], []
    for ex in examples:
        window = position.window(ex.prompt_len, len(ex.ids) - ex.prompt_len)
        if len(window):
            kept.append(ex)
            windows.append(window)
    return kept, windows


def window_record(example: Example, position: Position) -> dict:
    """Where `position` read `example`, for its metadata row: token indices into prompt +
    response ids (`[start, stop]`, or `[start, stop, step]` for a strided slice) and how
    many tokens were pooled."""
    w = position.window(example.prompt_len, len(example.ids) - example.prompt_len)
    return {"window": [w.start, w.stop] + ([w.step] if w.step != 1 else []), "tokens": len(w)}


def require_windows(examples: list[Example], position: Position) -> None:
    """One line when `position` reads no token of any example (callers check it before a
    tracking run opens)."""
    if not any(len(position.window(ex.prompt_len, len(ex.ids) - ex.prompt_len)) for ex in examples):
        raise SteeropsError(
            f"position {position.text!r}: every example's window is empty "
            f"({len(examples)} examples); nothing to extract"
        )


def prompts_only(examples: list[Example], position: Position) -> list[Example]:
    """The examples `select` drops, cut to their prompts: they pool nothing, but the
    coefficient unit counts every example's prompt tokens, so it is the same at every
    position (a prompt token's state does not depend on the response after it)."""
    return [
        Example(ex.ids[: ex.prompt_len], ex.prompt_len, ex.info)
        for ex in examples
        if not len(position.window(ex.prompt_len, len(ex.ids) - ex.prompt_len))
    ]


def settings_hash(job: Job, kept: list[Example], windows: list[range]) -> str:
    h = hashlib.md5()
    h.update(
        json.dumps(
            {
                "settings": job.settings,
                "position": job.position.text,
                "component": job.component,
                "layers": job.layers,
                "dtype": job.dtype,
                # 2: first token out; 3: each example's median kept-token norm; "of": the
                # residual's, for a component's activations
                "token_norm": {
                    "massive": list(job.massive),
                    "version": 3,
                    **({"of": "residual"} if job.component != "residual" else {}),
                },
            },
            sort_keys=True,
            default=str,
        ).encode()
    )
    for ex, w in zip(kept, windows, strict=True):
        h.update(np.asarray(ex.ids, dtype=np.int64).tobytes())
        h.update(json.dumps([w.start, w.stop, w.step, ex.info], sort_keys=True).encode())
    return h.hexdigest()


def job_hash(job: Job, examples: list[Example]) -> str:
    """The hash a finished extraction of `examples` records: what it pooled, and the
    prompts-only rows of the unit (unchanged when there are none)."""
    kept, windows = select(examples, job.position)
    return _rows_hash(job, kept, windows, prompts_only(examples, job.position))


def _rows_hash(job: Job, kept: list[Example], windows: list[range], extra: list[Example]) -> str:
    digest = settings_hash(job, kept, windows)
    if not extra:
        return digest
    h = hashlib.md5(digest.encode())
    for ex in extra:
        h.update(b"prompt only")
        h.update(np.asarray(ex.ids, dtype=np.int64).tobytes())
    return h.hexdigest()


def run_job(
    extractor: Extractor,
    examples: list[Example],
    job: Job,
    describe: Callable[[list[Example]], dict],
    progress: bool = True,
    on_shard: Callable[[int], None] | None = None,
) -> dict:
    """Extract, assemble and write `activations.safetensors` + `metadata.json`.

    `describe(kept)` gives the row-dependent metadata (example list, counts); `on_shard(k)`
    is called after shard k is on disk, or for a computed last shard, in memory (tests use
    it to simulate a kill).
    """
    start = time.perf_counter()
    require_windows(examples, job.position)
    kept, windows = select(examples, job.position)
    dropped = len(examples) - len(kept)
    extra = prompts_only(examples, job.position)
    digest = _rows_hash(job, kept, windows, extra)
    # rows: the kept examples, then the dropped ones' prompts (token norms only)
    rows_in, row_windows = kept + extra, windows + [range(0)] * len(extra)
    partial = Path(job.out_dir) / PARTIAL_DIR
    lengths = [len(ex.ids) for ex in rows_in]
    order = length_order(lengths)
    shards = [order[i : i + job.shard_examples] for i in range(0, len(order), job.shard_examples)]
    batcher = Batcher(job.token_budget)
    tokens = reused = 0
    # hooks inside a block would be traced into its graph: only `residual` runs compiled
    blocks = (
        compiled_blocks(extractor.layout, max(job.layers))
        if extractor.compile and job.component == "residual"
        else contextlib.nullcontext()
    )
    with (
        torch.inference_mode(),
        blocks,
        tqdm(
            total=len(rows_in),
            unit="ex",
            disable=None if progress else True,
            desc=f"extract {job.label + ' ' if job.label else ''}{job.position.text}",
        ) as bar,
    ):
        # Shard k is written by a thread while shard k+1 computes. `on_shard(k)` runs once
        # shard k is on disk and before shard k+1's write starts, so a kill there leaves
        # exactly shards 0..k behind. A computed last shard goes straight into the final
        # file: writing it and reading it back costs more than recomputing it after a kill.
        previous: tuple[int, Future | None] | None = None
        sources: list[Path | dict[str, torch.Tensor]] = []
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-writer") as writer:
            for k, rows in enumerate(shards):
                path = partial / f"shard_{k:05d}.safetensors"
                # the shard's slice of the length order: a shard of another shard size
                # (a resume with a new `shard_examples`) holds other rows
                shard_hash = f"{digest}:{k * job.shard_examples}:{len(rows)}"
                tensors = None
                if _intact_shard(path, shard_hash):
                    reused += 1
                    bar.update(len(rows))
                else:
                    tensors = _compute_shard(
                        extractor, batcher, rows_in, row_windows, lengths, rows, job, bar
                    )
                    tensors["rows"] = torch.tensor(rows, dtype=torch.int64)
                    tokens += sum(lengths[i] for i in rows)
                _shard_done(previous, on_shard)
                last = k == len(shards) - 1
                written = None
                if tensors is not None and not last:
                    written = writer.submit(_write_shard, path, tensors, shard_hash)
                sources.append(tensors if tensors is not None and last else path)
                previous = (k, written)
            _shard_done(previous, on_shard)
    mean_norm, token_norms, tensors_md5 = _assemble(job, sources, len(kept), digest)
    seconds = time.perf_counter() - start
    meta = {
        **describe(kept),
        "position": job.position.text,
        "component": job.component,
        "layers": job.layers,
        "dtype": job.dtype,
        # mean norm of the pooled rows (a record; not the coefficient unit)
        "mean_norm": {str(layer): v for layer, v in mean_norm.items()},
        # the `norm` coefficient unit and its massive-token counts, per layer
        "token_norm": {str(layer): v for layer, v in token_norms.items()},
        "token_norm_rule": {
            "tokens": "prompt tokens of every example but its first, massive tokens excluded",
            "of": "residual",  # the block output at the layer, whatever the component
            "massive_threshold": job.massive[0],
            "massive_ratio": job.massive[1],
        },
        "settings_hash": digest,
        "tensors_md5": tensors_md5,
    }
    meta.setdefault("counts", {})["dropped_empty"] = dropped
    write_json(Path(job.out_dir) / METADATA_FILE, meta)
    shutil.rmtree(partial, ignore_errors=True)
    # this invocation's, for its console line and MLflow run; not in the DVC-tracked file, so
    # a rerun that writes the same tensors writes the same bytes
    meta["timing"] = {
        "seconds": round(seconds, 3),
        "tokens": tokens,
        "tokens_per_s": round(tokens / seconds, 1) if seconds > 0 else None,
        "reused_shards": reused,
        "batch_halvings": batcher.halvings,
    }
    return meta


def _write_shard(path: Path, tensors: dict[str, torch.Tensor], shard_hash: str) -> None:
    """One shard, atomically, with the hash of its settings and of its tensor bytes. Hashing
    and file writes release the GIL, so the next shard's forwards keep running meanwhile."""
    metadata = {"shard_hash": shard_hash, "data_md5": _tensors_md5(tensors)}
    specs = [(name, tuple(t.shape), t.dtype) for name, t in sorted(tensors.items())]
    write_streamed(path, specs, tensors.__getitem__, metadata=metadata)


def _shard_done(shard: tuple[int, Future | None] | None, on_shard) -> None:
    """Wait until shard k's write (if any) is on disk, then report k."""
    if shard is None:
        return
    k, written = shard
    if written is not None:
        written.result()  # a failed write raises here
    if on_shard is not None:
        on_shard(k)


def _intact_shard(path: Path, shard_hash: str) -> bool:
    """Whether `path` is a shard of these settings whose tensor bytes are as written."""
    if not path.is_file():
        return False
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("shard_hash") != shard_hash:
                return False
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except Exception:  # a foreign, truncated or damaged file: recompute it
        return False
    return meta.get("data_md5") == _tensors_md5(tensors)


def _tensors_md5(tensors: dict[str, torch.Tensor]) -> str:
    """MD5 over the names, dtypes, shapes and bytes of `tensors`, in name order."""
    h = hashlib.md5()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{list(t.shape)}".encode())
        if t.numel():
            h.update(memoryview(t.view(torch.uint8).numpy()))
    return h.hexdigest()


def _compute_shard(
    extractor: Extractor,
    batcher: Batcher,
    kept: list[Example],
    windows: list[range],
    lengths: list[int],
    rows: list[int],
    job: Job,
    bar,
) -> dict:
    out_dtype = DTYPES[job.dtype]
    slot = {row: i for i, row in enumerate(rows)}
    buffers: dict[int, torch.Tensor] = {}
    norms = {
        layer: torch.zeros(len(rows), len(token_norm.FIELDS), dtype=torch.float64)
        for layer in job.layers
    }

    def compute(batch: list[int]):
        return pool_batch(
            extractor,
            [kept[i].ids for i in batch],
            [windows[i] for i in batch],
            job.layers,
            job.component,
            prompt_lens=[kept[i].prompt_len for i in batch],
            massive=job.massive,
        )

    def done(batch: list[int], result) -> None:
        pooled, stats = result
        where = torch.tensor([slot[i] for i in batch])
        for layer, values in pooled.items():
            if layer not in buffers:
                buffers[layer] = torch.empty(len(rows), values.shape[-1], dtype=out_dtype)
            buffers[layer][where] = values.to(out_dtype)
            norms[layer][where] = stats[layer]
        bar.update(len(batch))

    batcher.run(rows, lengths, compute, done)
    return {
        **{f"layer_{layer}": buffers[layer] for layer in job.layers},
        **{f"tokennorm_{layer}": norms[layer] for layer in job.layers},
    }


def pool_batch(
    extractor: Extractor,
    seqs: list[np.ndarray],
    windows: list[range],
    layers: list[int],
    component: str,
    prompt_lens: list[int] | None = None,
    massive: tuple[float, float] = (100.0, 1000.0),
) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """({layer: [batch, hidden] float32 CPU}: each row's window mean-pooled in fp32,
    {layer: [batch, FIELDS] token-norm stats} when `prompt_lens` is given, else {})."""
    ids, mask, offsets = pad_batch(seqs, extractor.pad_id, extractor.padding_side)
    prompt = window_mask = None
    if prompt_lens is not None:
        prompt = torch.zeros(ids.shape, dtype=torch.bool)
        window_mask = torch.zeros(ids.shape, dtype=torch.bool)
        for r, (n, window, off) in enumerate(zip(prompt_lens, windows, offsets, strict=True)):
            prompt[r, off : off + n] = True
            if len(window):
                window_mask[r, torch.tensor(list(window)) + off] = True
    weights = torch.zeros(ids.shape, dtype=torch.float32)
    for r, (window, off) in enumerate(zip(windows, offsets, strict=True)):
        if len(window):  # an empty window (a prompts-only row) pools nothing
            weights[r, torch.tensor(list(window)) + off] = 1.0 / len(window)
    used = weights.sum(0).nonzero().flatten()
    lo, hi = (int(used.min()), int(used.max()) + 1) if len(used) else (0, 0)
    weights = weights[:, lo:hi]
    # one token per row (a prompts-only row's empty window takes column lo; it is dropped)
    single = len(used) > 0 and all(len(w) <= 1 for w in windows)
    cols = weights.argmax(-1) + lo if single else None
    norms: dict[int, torch.Tensor] = {}
    placed: dict[tuple[str, torch.device], torch.Tensor] = {}

    def on(name: str, host: torch.Tensor, device: torch.device | str) -> torch.Tensor:
        # each host tensor copied to a device once a batch: a copy from host memory waits
        # for the device's queued work, which inside the forward would be once a layer
        key = (name, torch.device(device))
        if key not in placed:  # kept as asked ("cuda") and as it landed ("cuda:0")
            moved = host.to(device)
            placed[key] = placed[name, moved.device] = moved
        return placed[key]

    if prompt is not None and window_mask is not None:  # before the forward is queued
        on("prompt", prompt, extractor.device)
        on("window", window_mask, extractor.device)

    def residual_norms(layer: int, block: torch.Tensor) -> None:
        # the norm unit is the residual's whatever the component (the steering adds to
        # it), reduced as each block runs: a component's extraction keeps no second tensor
        assert prompt is not None and window_mask is not None
        norms[layer] = _to_host(
            token_norm.token_norm_stats(
                block,
                on("prompt", prompt, block.device),
                on("window", window_mask, block.device),
                *massive,
            )
        )

    store = forward_capture(
        extractor.model,
        extractor.layout,
        ids.to(extractor.device),
        mask.to(extractor.device),
        layers,
        component,
        on_residual=residual_norms if prompt is not None else None,
    )
    pooled = {}
    queued: set[torch.device] = set()  # GPUs whose copies to pinned memory are in flight
    for layer in layers:
        hidden = store.pop(layer)
        if single:
            rows = torch.arange(len(seqs), device=hidden.device)
            values = hidden[rows, on("cols", cols, hidden.device)].float()
        else:
            pool = on("weights", weights, hidden.device)
            values = torch.einsum("bs,bsh->bh", pool, hidden[:, lo:hi].float())
        pooled[layer] = _to_host(values)
        if values.device.type == "cuda":
            queued.add(values.device)
        del hidden
    for device in queued:  # a device_map spreads layers over several GPUs
        torch.cuda.synchronize(device)
    return pooled, norms


def _to_host(values: torch.Tensor) -> torch.Tensor:
    """`values` on the CPU; from a GPU, queued into pinned memory without waiting (the
    caller synchronises once per batch, not once per layer)."""
    if values.device.type != "cuda":
        return values.cpu()
    out = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
    return out.copy_(values, non_blocking=True)


def _assemble(
    job: Job, shards: list[Path | dict[str, torch.Tensor]], n_rows: int, digest: str
) -> tuple[dict[int, float], dict[int, dict], str]:
    """Write the final tensors in example order, one layer at a time, from the shards (files,
    or tensors still in memory); (mean norms of the pooled rows, token-norm summaries, MD5)."""
    rows = [_shard_tensor(shard, "rows") for shard in shards]
    hidden = _shard_tensor(shards[0], f"layer_{job.layers[0]}").shape[-1]
    dtype = DTYPES[job.dtype]
    mean_norm: dict[int, float] = {}

    def produce(name: str) -> torch.Tensor:
        out = torch.empty(n_rows, hidden, dtype=dtype)
        for shard, where in zip(shards, rows, strict=True):
            pooled = where < n_rows  # rows past n_rows are prompts only: no pooled row
            out[where[pooled]] = _shard_tensor(shard, name)[pooled]
        layer = int(name.removeprefix("layer_"))
        mean_norm[layer] = round(float(out.float().norm(dim=-1).mean()), 6)
        return out

    token_norms = {
        layer: token_norm.summarize(
            torch.cat([_shard_tensor(shard, f"tokennorm_{layer}") for shard in shards])
        )
        for layer in job.layers
    }
    specs = [(f"layer_{layer}", (n_rows, hidden), dtype) for layer in job.layers]
    md5 = write_streamed(
        Path(job.out_dir) / TENSORS_FILE,
        specs,
        produce,
        metadata={"format": "pt", "settings_hash": digest},
    )
    return mean_norm, token_norms, md5


def _shard_tensor(shard: Path | dict[str, torch.Tensor], name: str) -> torch.Tensor:
    if isinstance(shard, dict):
        return shard[name]
    with safe_open(str(shard), framework="pt") as f:
        return f.get_tensor(name)
