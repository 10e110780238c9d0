"""Steered decoding: the engine's static loop vs the engine on HF generate vs the naive way.

Every way produces the same greedy tokens for every (config, question) row:
- static: `generate_steered(loop="static")`, the engine's own loop (static cache, compiled
  fixed-shape step, finished rows' slots refilled);
- static_own: the same loop (same row order) with every row computing the blocks below its
  steering itself (`StaticLoop(share_trunk=False)`): `models.decode_trunk`'s gain alone;
- static_graph: the same loop with the steps between done-mask reads captured by hand as one
  CUDA graph (`StaticLoop(capture=True)`, `models.decode_graphs`; on CPU the same as static);
- hf: `generate_steered(loop="hf")`, the same per-row steering around HF `generate`;
- naive: one `generate` per config with a plain forward hook (batch = the questions).
Each way is warmed up (the static loop compiles its step for every slot count it uses),
then the ways alternate, `--repeats` times, in rotating order. Printed: median seconds and
new tokens/s with [min-max], the share of computed decode row-steps that produced a token
of a live row, host syncs per decode step, and the per-repeat speed ratios. `--flops` adds
one counted pass of each way (`flop_count.py`): its FLOPs, and so the most a way can gain
over another where both are matmul-bound (CPU).

    python bench/steer.py --model data/toy/model              # toy world, CPU
    python bench/steer.py --model hf-folder --questions data/toy/traits/toy/refusal/steering.json
    python bench/steer.py --model gemma3-4b --device cuda --configs 64,256,1024 --ways static,hf

`gemma3-4b` is a random-weight bf16 model of gemma-3-4b's text shape fed random 32-token
prompts (random weights rarely stop early, so rows run to max_new_tokens); `gemma3-tiny` is
the same architecture shrunk, to try that path on CPU.

`--sdpa BACKEND` runs every way under one attention backend of torch's sdpa (a process per
backend: a compiled step keeps the backend it was traced with). On an H200 cuDNN's kernel,
the default there, took 94 µs a layer for one query token a row, 30% of the step's device
time and about 7x what reading that layer's cache costs.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import time
from pathlib import Path

import torch
from torch._dynamo.utils import counters
from torch.nn.attention import SDPBackend, sdpa_kernel

import flop_count
from steerops.models import decode
from steerops.models.decode_memory import auto_rows
from steerops.models.generation import cut_at_stop
from steerops.models.resolver import resolve_layout
from steerops.steering.engine import SteeringTable, generate_steered
from summary import spread

GEMMA3_4B = dict(
    vocab_size=262144,
    hidden_size=2560,
    intermediate_size=10240,
    num_hidden_layers=34,
    num_attention_heads=8,
    num_key_value_heads=4,
    head_dim=256,
)
GEMMA3_TINY = dict(
    vocab_size=512,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
)


def load_folder(path: str, questions_file: str | None, n_questions: int):
    """A local HF model and its chat-formatted steering questions, as token ids."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from steerops.models.generation import encode_prompt, render_prompts, stop_token_ids

    default = Path(path).parent / "traits/toy/refusal/steering.json"  # the toy world's layout
    source = Path(questions_file) if questions_file else default
    if not source.is_file():
        raise SystemExit(f"--questions: no steering.json at {source}")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(path)
    questions = json.loads(source.read_text())["questions"][:n_questions]
    prompts = [encode_prompt(tok, t) for t in render_prompts(tok, questions)]
    return model, prompts, tok.pad_token_id, stop_token_ids(model, tok)


def random_gemma3(shape: dict, device: str, dtype: torch.dtype, n_prompts: int, prompt_len: int):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(**shape, pad_token_id=0, bos_token_id=2, eos_token_id=1)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = Gemma3ForCausalLM(config).eval()
    finally:
        torch.set_default_dtype(old)
    gen = torch.Generator().manual_seed(0)
    prompts = [
        [2] + torch.randint(3, shape["vocab_size"], (prompt_len - 1,), generator=gen).tolist()
        for _ in range(n_prompts)
    ]
    return model, prompts, 0, [1]


def make_configs(layout, n_configs: int, norm: float):
    """n_configs (layer, unit vector, weight) configs: random directions at 4 layers, weights
    0.1x to 2x `norm` (the mean activation norm at the middle layer)."""
    layers = sorted({round(f * (layout.num_layers - 1)) for f in (0.25, 0.4, 0.55, 0.7)})
    gen = torch.Generator().manual_seed(1)
    per_layer = -(-n_configs // len(layers))
    configs = []
    for layer in layers:
        v = torch.randn(layout.hidden_size, generator=gen)
        v = v / v.norm()
        for k in range(per_layer):
            configs.append((layer, v, norm * (0.1 + 1.9 * k / max(1, per_layer - 1))))
    return configs[:n_configs]


def activation_norm(model, layout, prompts) -> float:
    from steerops.models.capture import forward_capture

    layer = layout.num_layers // 2
    device = model.get_input_embeddings().weight.device
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    acts = forward_capture(model, layout, ids, mask, [layer])[layer]
    return float(acts[mask.bool()].float().norm(dim=-1).mean())


def naive(model, layout, prompts, configs, pad, stops, max_new_tokens, scope="all"):
    """One generate per config with a plain forward hook; batch = the prompts (response
    scope: the hook skips the prompt's forward)."""
    width = max(len(p) for p in prompts)
    device = model.get_input_embeddings().weight.device
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    out = []
    for layer, vector, weight in configs:
        add = (weight * vector).to(device, next(model.parameters()).dtype)

        def hook(module, args, output, add=add):
            hidden = output[0] if isinstance(output, tuple) else output
            if scope == "response" and hidden.shape[1] > 1:
                return None
            if isinstance(output, tuple):
                return (output[0] + add, *output[1:])
            return output + add

        handle = layout.component_module(layer, "residual").register_forward_hook(hook)
        try:
            with torch.inference_mode():
                gen = model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    do_sample=False,
                    max_new_tokens=max_new_tokens,
                    pad_token_id=pad,
                    eos_token_id=stops,
                )
        finally:
            handle.remove()
        out.extend(cut_at_stop(row, stops)[0] for row in gen[:, width:].tolist())
    return out


def padded_share(prompts, outputs, batches, max_new_tokens) -> float:
    """Useful share of decode row-steps when each batch runs until its longest row stops."""
    useful = total = 0
    for batch in batches:
        steps = [min(len(outputs[i]) + 1, max_new_tokens) - 1 for i in batch]
        useful += sum(steps)
        total += max(steps) * len(batch)
    return useful / total if total else 1.0


def bench(args, model, layout, prompts, pad, stops, n_configs, first, on_repeat=None) -> list[dict]:
    """Each way's records at `n_configs` configs; `on_repeat` gets them after each whole
    repeat but the last (a run cut later keeps them)."""
    device = str(model.get_input_embeddings().weight.device)
    configs = make_configs(layout, n_configs, activation_norm(model, layout, prompts))
    table = SteeringTable([[c] for c in configs for _ in prompts])
    rows = [p for _ in configs for p in prompts]
    options = decode.StaticLoop(
        backend=None if args.backend == "none" else args.backend, check_every=args.check_every
    )
    stats: dict[str, decode.DecodeStats] = {}

    def engine(loop, name=None, share_trunk=True, capture=False):
        stats[name or loop] = decode.DecodeStats()
        return generate_steered(
            model,
            layout,
            rows,
            table,
            pad_token_id=pad,
            stop_ids=stops,
            max_new_tokens=args.max_new_tokens,
            loop=loop,
            max_batch_rows=args.max_batch_rows,
            loop_options=dataclasses.replace(options, share_trunk=share_trunk, capture=capture),
            stats=stats[name or loop],
            scope=args.scope,
        )

    ways = {
        "static": lambda: engine("static"),
        "static_own": lambda: engine("static", "static_own", share_trunk=False),
        "static_graph": lambda: engine("static", "static_graph", capture=True),
        "hf": lambda: engine("hf"),
        "naive": lambda: naive(
            model, layout, prompts, configs, pad, stops, args.max_new_tokens, args.scope
        ),
    }
    ways = {name: ways[name] for name in args.ways.split(",")}
    # Warm-up: a compiled step needs the whole workload (every slot count it will use);
    # otherwise a full batch of rows warms the kernels and the allocator at the shape
    # each way is timed at, through the same hooks.
    compiled = compiles(args.backend, device)
    started = time.perf_counter()
    chunk = configs[: max(1, args.max_batch_rows // len(prompts))]

    def warm_up(warm, loop: str, **more) -> None:
        generate_steered(
            model,
            layout,
            [p for _ in warm for p in prompts],
            SteeringTable([[c] for c in warm for _ in prompts]),
            pad_token_id=pad,
            stop_ids=stops,
            max_new_tokens=args.max_new_tokens,
            loop=loop,
            max_batch_rows=args.max_batch_rows,
            scope=args.scope,
            **more,
        )

    # later config counts use the slot counts the first compiled: one chunk warms them
    warm = configs if compiled and first else chunk
    # a step compiled for capture (no CUDA graphs of its own) is a graph of its own
    captures = {name == "static_graph" for name in ways if name.startswith("static")}
    for capture in sorted(captures):
        warm_up(warm, "static", loop_options=dataclasses.replace(options, capture=capture))
    print(f"  warm-up of the static loop: {time.perf_counter() - started:.1f} s", flush=True)
    if device.startswith("cuda"):
        graphs = {k: v for k, v in counters["inductor"].items() if "cudagraph" in k}
        print(f"  inductor's CUDA graph counters: {graphs or 'none'}", flush=True)
    if "hf" in ways:  # (on one config's 4 rows, its first timed pass paid for the rest)
        warm_up(chunk, "hf")
    if "naive" in ways:  # one generate per config: one config's rows are its shape
        naive(model, layout, prompts, configs[:1], pad, stops, args.max_new_tokens)
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    outputs: dict[str, list[list[int]]] = {}
    for rep in range(args.repeats):
        names = list(ways)
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            _sync(device)
            start = time.perf_counter()
            outputs[name] = ways[name]()
            _sync(device)
            seconds[name].append(time.perf_counter() - start)
            print(
                f"  {n_configs} configs, {name}, repeat {rep + 1}: {seconds[name][-1]:.1f} s",
                flush=True,
            )
        if on_repeat is not None and rep + 1 < args.repeats:
            on_repeat(records_of(args, ways, rows, prompts, configs, outputs, seconds, stats, {}))
    flops: dict[str, flop_count.Flops] = {}
    if args.flops:  # one more pass of each way, counted (not timed)
        for name in ways:
            with flop_count.counting(model, layout) as flops[name]:
                ways[name]()
    return records_of(args, ways, rows, prompts, configs, outputs, seconds, stats, flops)


def records_of(args, ways, rows, prompts, configs, outputs, seconds, stats, flops) -> list[dict]:
    """One record a way from the repeats timed so far."""
    n_configs = len(configs)
    tokens = {name: sum(map(len, out)) for name, out in outputs.items()}
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    shares = {
        "hf": padded_share(
            rows,
            outputs.get("hf"),
            [order[i : i + args.max_batch_rows] for i in range(0, len(order), args.max_batch_rows)],
            args.max_new_tokens,
        )
        if "hf" in outputs
        else None,
        "naive": padded_share(
            rows,
            outputs.get("naive"),
            [range(k * len(prompts), (k + 1) * len(prompts)) for k in range(len(configs))],
            args.max_new_tokens,
        )
        if "naive" in outputs
        else None,
    }
    records = []
    for name in ways:
        st = stats.get(name) if name.startswith("static") else None
        records.append(
            {
                "configs": n_configs,
                "rows": len(rows),
                "max_batch_rows": args.max_batch_rows,
                "way": name,
                "seconds": seconds[name],
                "tokens": tokens[name],
                "tokens_per_s": [tokens[name] / t for t in seconds[name]],
                "useful_share": st.useful_share if st else shares[name],
                # the done mask and finished rows' tokens; each prefill adds a few copies
                "host_syncs_per_step": st.host_syncs / max(1, st.steps) if st else None,
                "prefills": st.prefills if st else None,
                # (block, token) pairs of the last pass's prefills the trunk did not compute
                "trunk_block_tokens": st.trunk_block_tokens if st else None,
                # per pass: its seconds over its decode steps (its prefills included)
                "ms_per_step": [1e3 * t / st.steps for t in seconds[name]] if st else None,
                "identical_rows": sum(
                    x == y for x, y in zip(outputs[name], outputs[next(iter(ways))], strict=True)
                )
                / len(rows),
                "time_vs_first": [
                    a / b for a, b in zip(seconds[name], seconds[next(iter(ways))], strict=True)
                ],
                "flops": dataclasses.asdict(flops[name]) | {"total": flops[name].total}
                if name in flops
                else None,
            }
        )
    return records


def flop_report(records) -> list[str]:
    """With --flops: each way's counted GFLOP a pass (blocks, head, attention) and the
    first way's share of it, the most the first way can gain at equal efficiency."""
    lines = []
    for r in records:
        g = r["flops"]
        if g is None:
            continue
        first = next(x for x in records if x["configs"] == r["configs"])["flops"]
        attention = "-" if g["attention"] is None else f"{g['attention'] / 1e9:.1f}"
        lines.append(
            f"{r['configs']:>7} {r['way']:<10} {g['total'] / 1e9:>9.1f} {g['blocks'] / 1e9:>9.1f} "
            f"{g['head'] / 1e9:>9.1f} {attention:>9} "
            f"{g['total'] / first['total']:>12.2f}x"
        )
    return lines


FLOP_HEADER = (
    f"{'configs':>7} {'way':<10} {'GFLOP':>9} {'blocks':>9} {'head':>9} {'attention':>9} "
    f"{'/ first way':>13}"
)


def report(records) -> list[str]:
    """Table rows: one per (configs, way). `time / first way` is this way's time over the
    first way's in the same repeat: > 1 means the first way was that much faster (every
    way generates the same tokens when `identical` is 100%). `trunk saved`: the (block,
    token) pairs of a pass's prefills that rows of one prompt did not compute again
    (`models.decode_trunk`; 0 under response scope, where prompts are unsteered). `host
    reads/step`: the static loop's blocking reads of the device (the done mask every
    `check_every` steps, finished rows' tokens); each of its `prefills` (refills) adds a
    few blocking copies of its own, not counted there."""
    lines = []
    for r in records:
        syncs = (
            f"{r['host_syncs_per_step']:.2f}"
            if r["host_syncs_per_step"] is not None
            else ">=1 (stop check)"
        )
        lines.append(
            f"{r['configs']:>7} {r['way']:<10} {spread(r['seconds'], '.3g'):>22} "
            f"{r['tokens']:>8} {spread(r['tokens_per_s'], '.3g'):>24} "
            f"{r['useful_share']:>7.1%} {syncs:>17} "
            f"{spread(r['time_vs_first'], '.3g'):>20} {r['identical_rows']:>9.1%} "
            f"{'-' if r['trunk_block_tokens'] is None else r['trunk_block_tokens']:>12} "
            f"{'-' if r.get('prefills') is None else r['prefills']:>8}"
        )
    return lines


HEADER = (
    f"{'configs':>7} {'way':<10} {'seconds':>22} {'tokens':>8} {'new tokens/s':>24} "
    f"{'useful':>7} {'host reads/step':>17} {'time / first way':>20} {'identical':>9} "
    f"{'trunk saved':>12} {'prefills':>8}"
)


def compiles(backend: str, device: str) -> bool:
    """Whether the static loop's step is compiled: `--backend auto` compiles on CUDA only."""
    return backend != "none" and (backend != "auto" or device.startswith("cuda"))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        required=True,
        help="an HF model folder (e.g. the toy's), gemma3-4b or gemma3-tiny",
    )
    parser.add_argument(
        "--questions", help="steering.json (default: the toy world's, next to the model folder)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--configs", default="64", help="comma-separated config counts")
    parser.add_argument(
        "--n-questions",
        type=int,
        default=40,
        help="the default grid's question count (random models: --prompts)",
    )
    parser.add_argument("--prompts", type=int, default=4, help="random prompts (gemma shapes)")
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument(
        "--max-batch-rows",
        type=lambda text: text if text == "auto" else int(text),
        default=256,
        help="rows a step, or auto: what steering.max_batch_rows: auto picks for this "
        "model and device",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ways", default="static,hf,naive")
    parser.add_argument(
        "--backend",
        default="auto",
        help="static loop step: auto (inductor on CUDA, eager on CPU), "
        "inductor, eager (dynamo only) or none",
    )
    parser.add_argument(
        "--check-every",
        type=int,
        default=None,
        help="steps between reads of the done mask (default: 1 CPU, 4 CUDA)",
    )
    parser.add_argument(
        "--scope",
        default="all",
        choices=["all", "response"],
        help="steer prompt and response (all) or only the response",
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument(
        "--dtype",
        default=None,
        help="weights in this dtype (default: float32; the gemma shapes bfloat16 on CUDA)",
    )
    parser.add_argument(
        "--require-identical",
        action="store_true",
        help="exit 1 when a way's tokens differ from the first way's in any row (float32: "
        "the ways must agree exactly; bfloat16 flips near-ties)",
    )
    parser.add_argument(
        "--sdpa",
        choices=sorted(SDPA_BACKENDS),
        default="default",
        help="torch's sdpa attention backend for every way (default: torch's choice)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the measurements here")
    parser.add_argument(
        "--flops",
        action="store_true",
        help="also count each way's FLOPs in one more pass (bench/flop_count.py; eager)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="end with one static pass of the first config count under torch.profiler",
    )
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as attention:
        if args.sdpa != "default":
            attention.enter_context(sdpa_kernel(SDPA_BACKENDS[args.sdpa]))
        run(args)


SDPA_BACKENDS = {
    "default": None,
    "math": SDPBackend.MATH,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "flash": SDPBackend.FLASH_ATTENTION,
}


def run(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model in ("gemma3-4b", "gemma3-tiny"):
        dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
        dtype = getattr(torch, args.dtype) if args.dtype else dtype
        shape = GEMMA3_4B if args.model == "gemma3-4b" else GEMMA3_TINY
        model, prompts, pad, stops = random_gemma3(
            shape, args.device, dtype, args.prompts, args.prompt_len
        )
    else:
        model, prompts, pad, stops = load_folder(args.model, args.questions, args.n_questions)
        model.to(args.device, getattr(torch, args.dtype or "float32"))
    layout = resolve_layout(model)
    if args.flops and compiles(args.backend, args.device):
        raise SystemExit("--flops counts eager passes: run it on CPU with --backend auto or none")
    if args.max_batch_rows == "auto":
        longest = max(map(len, prompts))
        args.max_batch_rows, sized_from = auto_rows(model, longest, args.max_new_tokens)
        print(f"max_batch_rows auto: {args.max_batch_rows} ({sized_from or 'off CUDA'})")
    print(
        f"model {args.model} on {args.device} ({torch.get_num_threads()} threads), "
        f"{len(prompts)} questions, max_new_tokens {args.max_new_tokens}, "
        f"max_batch_rows {args.max_batch_rows}, scope {args.scope}, sdpa {args.sdpa}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    records: list[dict] = []

    def save(partial: list[dict]) -> None:  # a stage cut mid config count keeps its repeats
        if args.json:  # whole or not at all: a cut lands between two files, not in one
            part = Path(f"{args.json}.part")
            part.write_text(json.dumps(records + partial, indent=1))
            os.replace(part, args.json)

    for k, n in enumerate(int(c) for c in args.configs.split(",")):
        records += bench(args, model, layout, prompts, pad, stops, n, k == 0, on_repeat=save)
        print(HEADER, *report(records), sep="\n", flush=True)  # so far, in case of a timeout
        if args.flops:
            print(FLOP_HEADER, *flop_report(records), sep="\n", flush=True)
        save([])
    if args.profile:
        profile_static(args, model, layout, prompts, pad, stops, int(args.configs.split(",")[0]))
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    differ = [r for r in records if r["identical_rows"] < 1]
    for r in differ:  # a speed figure is only worth the tokens it computes
        print(
            f"NOT IDENTICAL: {r['way']} at {r['configs']} configs: "
            f"{1 - r['identical_rows']:.1%} of rows differ from the first way's",
            flush=True,
        )
    if differ and args.require_identical:
        raise SystemExit(1)


def profile_static(args, model, layout, prompts, pad, stops, n_configs) -> None:
    """One static pass under torch.profiler: where a decode step's time goes (kernels on
    the device, or the host launching them)."""
    from torch.profiler import ProfilerActivity, profile

    configs = make_configs(layout, n_configs, activation_norm(model, layout, prompts))
    rows = [p for _ in configs for p in prompts]
    table = SteeringTable([[c] for c in configs for _ in prompts])
    cuda = str(model.get_input_embeddings().weight.device).startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    stats = decode.DecodeStats()
    options = decode.StaticLoop(
        backend=None if args.backend == "none" else args.backend, check_every=args.check_every
    )
    started = time.perf_counter()
    with profile(activities=activities) as prof:
        generate_steered(
            model,
            layout,
            rows,
            table,
            pad_token_id=pad,
            stop_ids=stops,
            max_new_tokens=args.max_new_tokens,
            loop="static",
            max_batch_rows=args.max_batch_rows,
            loop_options=options,
            stats=stats,
            scope=args.scope,
        )
        _sync(str(model.get_input_embeddings().weight.device))
    wall = time.perf_counter() - started
    sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    print(
        f"profile of one static pass, {n_configs} configs, {stats.steps} decode steps, "
        f"{stats.prefills} prefills:"
    )
    # Wide names: inductor names a fused kernel after its ops (a `clone`/`expand` of
    # cache-sized tensors, say), which a narrow column cuts off.
    averages = prof.key_averages()
    print(averages.table(sort_by=sort, row_limit=25, max_name_column_width=110))
    steps = max(1, stats.steps)
    if cuda:  # is the step bound by the device's kernels or by the host between them?
        kernels = [e for e in averages if e.device_type == torch.autograd.DeviceType.CUDA]
        busy = sum(e.self_device_time_total for e in kernels) / 1e3  # ms
        launches = sum(e.count for e in kernels)
        print(
            f"pass {wall * 1e3:,.0f} ms under the profiler: {wall * 1e3 / steps:.2f} ms a decode "
            f"step (prefill in); device kernels {busy:,.0f} ms, {busy / steps:.2f} ms and "
            f"{launches / steps:,.0f} kernels a step; the rest is the host or idle device"
        )


if __name__ == "__main__":
    main()
