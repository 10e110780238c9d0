"""Extraction throughput and memory: steerops vs a naive full forward, same inputs, one run.

The naive way is `model(..., output_hidden_states=True)` on every batch, then reading the
requested position from each layer's hidden states: it runs every block and the LM head
(a [batch, seq, vocab] logits tensor). steerops runs blocks only up to the deepest requested
layer through its hooks and streams pooled results to disk in resumable shards (that I/O is
timed too). Both use the same length-sorted batches under the same token budget, after a
check that both ways return the same activations (layers below the last, read the same way)
on every example. The two ways alternate; prints median tokens/s with the range over
the repeats, peak memory above the weights, and the ratios; on CUDA also the share of the
FLOP-limited rate, measured with a bf16 matmul in the same run.

    python bench/extract.py                        # toy world on CPU (built in a temp dir)
    python bench/extract.py --model data/toy/model
    python bench/extract.py --device cuda          # gemma-3-4b-shaped random bf16 model
    python bench/extract.py --ways steerops,inline --prompts 1024   # the shard writer thread

`inline` is steerops with each shard written before the next one computes (no writer
thread): the way before shards were written in the background.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from steerops.extract import engine
from steerops.extract.store import TENSORS_FILE
from steerops.models.batching import length_order, pad_batch, plan_batches
from steerops.models.compiled_blocks import compiled_blocks
from steerops.models.resolver import resolve_layout
from steerops.specs import parse_layers, parse_position
from summary import ratios, spread

GEMMA3_4B = dict(
    vocab_size=262144,
    hidden_size=2560,
    intermediate_size=10240,
    num_hidden_layers=34,
    num_attention_heads=8,
    num_key_value_heads=4,
    head_dim=256,
)


def toy_model(path: str | None):
    from transformers import AutoModelForCausalLM

    if path is None:
        from steerops.toy.build import build_toy_world

        root = Path(tempfile.mkdtemp(prefix="bench-toy-"))
        print(f"building the toy world in {root} ...")
        build_toy_world(root, seed=0, progress=False)
        path = root / "model"
    return AutoModelForCausalLM.from_pretrained(path).eval()


def gemma3_4b(device: str):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(**GEMMA3_4B, pad_token_id=0, bos_token_id=2, eos_token_id=1)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = Gemma3ForCausalLM(config).eval()
    finally:
        torch.set_default_dtype(old)
    return model


def random_examples(n: int, tokens: int, vocab: int, seed: int = 0) -> list[engine.Example]:
    """Prompts of `tokens` +- 10% random ids (lengths vary, so sorting and padding matter)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(int(tokens * 0.9), int(tokens * 1.1) + 1, size=n)
    return [
        engine.Example(
            np.concatenate([[2], rng.integers(3, vocab, size=int(m) - 1)]), int(m), {"i": i}
        )
        for i, m in enumerate(lengths)
    ]


class PeakMemory:
    """Peak memory above the level at entry: CUDA allocator stats, or sampled RSS on CPU."""

    def __init__(self, device: str):
        self.device, self.peak = device, 0

    def __enter__(self):
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            _trim_heap()
            self.base = self.top = _rss()
            self.running = True
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.top = max(self.top, _rss())
            time.sleep(0.002)

    def __exit__(self, *exc):
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
        else:
            self.running = False
            self.thread.join()
            self.peak = max(self.top, _rss()) - self.base


def _trim_heap() -> None:
    # Hand freed heap pages back to the OS, so RSS at entry does not hide the other
    # method's leftovers (glibc keeps them otherwise).
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


@torch.inference_mode()
def naive(model, examples, batches, layers, position, device) -> dict[int, torch.Tensor]:
    """Full forward with output_hidden_states, then the window mean-pooled at each layer;
    {layer: [examples, hidden]} in example order (layers below the last: HF's last hidden
    state is taken after the final norm, steerops reads the block's output)."""
    pooled: dict[int, list] = {layer: [None] * len(examples) for layer in layers}
    for batch in batches:
        seqs = [examples[i].ids for i in batch]
        ids, mask, _ = pad_batch(seqs, 0, "right")
        weights = torch.zeros(ids.shape)
        for r, seq in enumerate(seqs):
            window = list(position.window(len(seq), 0))
            weights[r, window] = 1.0 / len(window)
        weights = weights.to(device)
        out = model(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            output_hidden_states=True,
            use_cache=False,
        )
        for layer in layers:
            rows = torch.einsum("bs,bsh->bh", weights, out.hidden_states[layer + 1].float()).cpu()
            for i, row in zip(batch, rows, strict=True):
                pooled[layer][i] = row
        del out
    return {
        layer: torch.stack(rows)
        for layer, rows in pooled.items()
        if all(r is not None for r in rows)
    }


def steerops_run(model, layout, examples, layers, position, args, folder) -> dict:
    """steerops extraction with the command line's token budget, device and --compile."""
    job = engine.Job(
        Path(folder),
        position,
        layers,
        "residual",
        "float32",
        shard_examples=256,
        token_budget=args.token_budget,
    )
    return engine.run_job(
        engine.Extractor(model, layout, 0, "right", args.device, args.compile),
        examples,
        job,
        lambda kept: {},
        progress=False,
    )


class InlineWriter:
    """Stands in for the engine's writer thread: runs each write at once, in the caller."""

    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def submit(self, fn, *args) -> Future:
        done: Future = Future()
        done.set_result(fn(*args))
        return done


def inline_run(*args) -> dict:
    real = engine.ThreadPoolExecutor
    engine.ThreadPoolExecutor = InlineWriter  # type: ignore[misc,assignment]
    try:
        return steerops_run(*args)
    finally:
        engine.ThreadPoolExecutor = real  # type: ignore[misc]


def matmul_tflops(device: str, dtype: torch.dtype) -> float:
    n = 8192 if device.startswith("cuda") else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ a
    _sync(device)
    reps = 20 if device.startswith("cuda") else 3
    start = time.perf_counter()
    for _ in range(reps):
        a @ a
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e12


def flops_per_token(model, layout, deepest: int, mean_len: float, head: bool = False) -> float:
    """2 x parameters of blocks 0..`deepest`, plus causal attention scores and mixing, plus
    (`head`) the vocabulary projection."""
    params = sum(p.numel() for i in range(deepest + 1) for p in layout.layers[i].parameters())
    cfg = model.config.get_text_config()
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    attention = 2 * (deepest + 1) * mean_len * heads * head_dim  # QK^T + AV, causal half
    vocabulary = model.get_output_embeddings().weight.numel() if head else 0
    return 2 * (params + vocabulary) + attention


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def same_activations(model, layout, examples, layers, position, args, folder) -> float:
    """Both ways on the same examples: the largest |difference| between their pooled
    activations relative to the activations' scale, at every layer both read the same way
    (all but the last). Fails when it exceeds the dtype's rounding."""
    lengths = [len(ex.ids) for ex in examples]
    batches = plan_batches(length_order(lengths), lengths, args.token_budget)
    want = naive(model, examples, batches, layers, position, args.device)
    steerops_run(model, layout, examples, layers, position, args, folder)
    got = load_file(str(folder / TENSORS_FILE))
    last = layout.num_layers - 1
    worst = 0.0
    for layer in (layer for layer in layers if layer != last):
        ours, theirs = got[f"layer_{layer}"].float(), want[layer]
        worst = max(worst, float((ours - theirs).abs().max() / theirs.abs().max()))
    bf16 = next(model.parameters()).dtype == torch.bfloat16
    tolerance = 2e-2 if bf16 else 1e-4
    if worst > tolerance:
        raise SystemExit(f"the two ways disagree: relative difference {worst:.2e}")
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--model",
        default=None,
        help="local model dir (default: toy; on cuda: gemma-3-4b-shaped random weights)",
    )
    ap.add_argument("--prompts", type=int, default=None, help="default: 512 cuda, 256 cpu")
    ap.add_argument("--tokens", type=int, default=None, help="default: 256 cuda, 48 cpu")
    ap.add_argument("--token-budget", type=int, default=16384)
    ap.add_argument("--layers", default="all")
    ap.add_argument("--position", default="prompt[-1]")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes of each way")
    ap.add_argument("--ways", default="steerops,naive", help="of steerops, naive, inline")
    ap.add_argument(
        "--median",
        choices=("sort", "bisection_compiled"),
        default="sort",
        help="the token-norm median steerops uses: its sort, or bench/token_norm.py's "
        "bisection under torch.compile (a candidate, measured here end to end)",
    )
    ap.add_argument(
        "--compile",
        action="store_true",
        help="compiled decoder blocks (both ways: steerops with extraction.compile, the "
        "naive way with the same compiled blocks)",
    )
    args = ap.parse_args()
    cuda = args.device.startswith("cuda")
    if args.median == "bisection_compiled":
        from steerops.extract import token_norm
        from token_norm import bisected_median

        compiled = torch.compile(bisected_median, dynamic=True, fullgraph=True)
        token_norm.prompt_median = compiled  # type: ignore[assignment]
    if cuda and not args.model:
        model = gemma3_4b(args.device)
    else:
        model = toy_model(args.model).to(args.device)
    model.requires_grad_(False)
    layout = resolve_layout(model)
    layers = parse_layers(args.layers, layout.num_layers)
    position = parse_position(args.position)
    vocab = model.get_input_embeddings().weight.shape[0]
    examples = random_examples(
        args.prompts or (512 if cuda else 256), args.tokens or (256 if cuda else 48), vocab
    )
    lengths = [len(ex.ids) for ex in examples]
    batches = plan_batches(length_order(lengths), lengths, args.token_budget)
    tokens = sum(lengths)
    dtype = next(model.parameters()).dtype
    print(
        f"model: {type(model).__name__} {layout.num_layers} layers, hidden "
        f"{layout.hidden_size}, vocab {vocab}, {dtype}, {args.device}; {len(examples)} "
        f"prompts, {tokens} tokens, {len(batches)} batches; layers {args.layers}, "
        f"position {position.text}"
    )

    blocks = (
        compiled_blocks(layout, layout.num_layers - 1) if args.compile else contextlib.nullcontext()
    )
    with tempfile.TemporaryDirectory() as tmp, blocks:
        # Equality on every example, which also warms both ways up.
        worst = same_activations(model, layout, examples, layers, position, args, Path(tmp) / "eq")
        print(f"same activations: largest difference {worst:.1e} of the activation scale")
        ways = args.ways.split(",")
        results: dict[str, tuple[list[float], int]] = {name: ([], 0) for name in ways}
        for r in range(args.repeats):
            for name in ways[r % len(ways) :] + ways[: r % len(ways)]:  # rotate the order
                with PeakMemory(args.device) as mem:
                    start = time.perf_counter()
                    if name == "naive":
                        naive(model, examples, batches, layers, position, args.device)
                    else:
                        folder = Path(tmp) / f"run{r}-{name}"
                        way = inline_run if name == "inline" else steerops_run
                        way(model, layout, examples, layers, position, args, folder)
                    _sync(args.device)
                    seconds = time.perf_counter() - start
                rates, peak = results[name]
                results[name] = ([*rates, tokens / seconds], max(peak, mem.peak))
    for name, (rates, peak) in results.items():
        print(
            f"{name:>9}: {statistics.median(rates):>10.0f} tokens/s median "
            f"[{min(rates):.0f}-{max(rates):.0f}] of {len(rates)}   peak memory above weights "
            f"{peak / 2**20:>9.1f} MiB"
        )
    first = ways[0]
    for name in ways[1:]:
        paired = spread(ratios(results[first][0], results[name][0]), unit="x tokens/s")
        peaks = results[first][1] / max(results[name][1], 1)
        print(f"ratio {first}/{name}: {paired} paired, {peaks:.2f}x peak memory")
    ours = statistics.median(results["steerops"][0]) if "steerops" in results else 0.0
    naive_rate = statistics.median(results["naive"][0]) if "naive" in results else 0.0
    if cuda:
        peak_tflops = matmul_tflops(args.device, dtype)
        mean_len = tokens / len(lengths)
        limit = peak_tflops * 1e12 / flops_per_token(model, layout, max(layers), mean_len)
        # the naive forward also runs the blocks past the deepest layer and the LM head
        executed = flops_per_token(model, layout, layout.num_layers - 1, mean_len, head=True)
        naive_limit = peak_tflops * 1e12 / executed
        print(
            f"FLOP limit: {limit:.0f} tokens/s at the measured {peak_tflops:.0f} TFLOP/s "
            f"matmul; steerops {100 * ours / limit:.0f}%, naive {100 * naive_rate / limit:.0f}% "
            f"(naive {100 * naive_rate / naive_limit:.0f}% of the rate for what it computes: "
            "every block and the LM head)"
        )


if __name__ == "__main__":
    main()
