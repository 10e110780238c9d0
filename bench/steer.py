"""Steered generation throughput: the per-row engine vs one `generate` per config.

The naive way is what common steering libraries do: for each config, register a forward
hook that adds `weight * vector` at its layer and call `generate` on the questions (batch =
questions). The engine generates every config x question row together, each row carrying
its own steering. Both run the same configs in the same process, after a warm-up; the
script prints a table, the ratio of new tokens/s, and whether both produced the same tokens.

    python bench/steer.py                        # toy world on CPU (builds it if needed)
    python bench/steer.py --device cuda --model gemma3-4b [--static]

`gemma3-4b` is a random-weight bf16 model of gemma-3-4b's text shape (hidden 2560, 34
layers, 8 heads, 4 kv heads, head_dim 256, intermediate 10240, vocab 262144) fed random
32-token prompts; `gemma3-tiny` is the same architecture shrunk, to try the path on CPU.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from steerops.models.generation import cut_at_stop
from steerops.models.resolver import resolve_layout
from steerops.steering.engine import SteeringTable, generate_steered

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


def load_toy(path: str | None):
    """The toy model and its chat-formatted steering questions, as token ids."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from steerops.models.generation import encode_prompt, render_prompts, stop_token_ids

    root = Path(path) if path else Path(tempfile.mkdtemp(prefix="bench-toy-"))
    if not (root / "model").is_dir():
        from steerops.toy.build import build_toy_world

        print(f"building the toy world in {root} ...")
        build_toy_world(root, seed=0, progress=True)
    model = AutoModelForCausalLM.from_pretrained(root / "model").eval()
    tok = AutoTokenizer.from_pretrained(root / "model")
    questions = json.loads((root / "traits/toy/refusal/steering.json").read_text())["questions"]
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


def make_configs(model, layout, prompts, n_configs: int, device: str):
    """n_configs (layer, unit vector, weight) configs: random directions at 4 layers, 0.1x
    to 2x of each layer's mean activation norm on the prompts."""
    from steerops.models.capture import forward_capture

    layers = sorted({round(f * (layout.num_layers - 1)) for f in (0.25, 0.4, 0.55, 0.7)})
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    acts = forward_capture(model, layout, ids, mask, layers)
    real = mask.bool()
    norms = {layer: float(acts[layer][real].float().norm(dim=-1).mean()) for layer in layers}
    gen = torch.Generator().manual_seed(1)
    per_layer = -(-n_configs // len(layers))
    configs = []
    for layer in layers:
        v = torch.randn(layout.hidden_size, generator=gen)
        v = v / v.norm()
        for k in range(per_layer):
            configs.append((layer, v, norms[layer] * (0.1 + 1.9 * k / max(1, per_layer - 1))))
    return configs[:n_configs]


def naive(model, layout, prompts, configs, pad, stops, max_new_tokens, cache_impl):
    """One generate per config with a plain forward hook; batch = the prompts."""
    width = max(len(p) for p in prompts)
    device = model.get_input_embeddings().weight.device
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    out = []
    for layer, vector, weight in configs:
        add = (weight * vector).to(device, next(model.parameters()).dtype)

        def hook(module, args, output, add=add):
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
                    cache_implementation=cache_impl,
                )
        finally:
            handle.remove()
        out.extend(cut_at_stop(row, stops)[0] for row in gen[:, width:].tolist())
    return out


def engine(model, layout, prompts, configs, pad, stops, max_new_tokens, cache_impl, max_rows):
    table = SteeringTable([[c] for c in configs for _ in prompts])
    rows = [p for _ in configs for p in prompts]
    return generate_steered(
        model,
        layout,
        rows,
        table,
        pad_token_id=pad,
        stop_ids=stops,
        max_new_tokens=max_new_tokens,
        max_batch_rows=max_rows,
        cache_implementation=cache_impl,
    )


def timed(fn, device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        choices=["toy", "gemma3-4b", "gemma3-tiny"],
        default=None,
        help="default: toy on CPU, gemma3-4b on CUDA",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--toy", metavar="DIR", help="toy world folder (built if missing)")
    parser.add_argument("--configs", type=int, default=64)
    parser.add_argument(
        "--questions", type=int, default=None, help="default: 10 on the toy, 8 on gemma shapes"
    )
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="default: 24 on the toy, 64 on gemma shapes",
    )
    parser.add_argument("--max-batch-rows", type=int, default=256)
    parser.add_argument(
        "--static",
        action="store_true",
        help='cache_implementation="static" for both (compiled on CUDA)',
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    kind = args.model or ("toy" if args.device == "cpu" else "gemma3-4b")
    n_q = args.questions or (10 if kind == "toy" else 8)
    new_tokens = args.max_new_tokens or (24 if kind == "toy" else 64)
    if kind == "toy":
        model, prompts, pad, stops = load_toy(args.toy)
        model.to(args.device)
        prompts = prompts[:n_q]
    else:
        shape = GEMMA3_4B if kind == "gemma3-4b" else GEMMA3_TINY
        dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
        model, prompts, pad, stops = random_gemma3(shape, args.device, dtype, n_q, args.prompt_len)
    layout = resolve_layout(model)
    configs = make_configs(model, layout, prompts, args.configs, args.device)
    cache_impl = "static" if args.static else None
    run_args = (model, layout, prompts, configs, pad, stops, new_tokens, cache_impl)

    # Warm-up: kernels, allocator and (with --static) compilation of the shapes timed below.
    naive(*run_args[:3], configs[:1], *run_args[4:])
    engine(*run_args, args.max_batch_rows)
    slow, t_slow = timed(lambda: naive(*run_args), args.device)
    fast, t_fast = timed(lambda: engine(*run_args, args.max_batch_rows), args.device)

    rows = len(configs) * len(prompts)
    calls_fast = -(-rows // args.max_batch_rows)
    print(
        f"model {kind} on {args.device}, {len(configs)} configs x {len(prompts)} questions, "
        f"max_new_tokens {new_tokens}, cache {cache_impl or 'dynamic'}"
    )
    print(
        f"{'method':<8} {'generate calls':>14} {'seconds':>9} {'new tokens':>10} {'tokens/s':>10}"
    )
    for name, out, secs, calls in (
        ("naive", slow, t_slow, len(configs)),
        ("engine", fast, t_fast, calls_fast),
    ):
        n_tokens = sum(len(r) for r in out)
        print(f"{name:<8} {calls:>14} {secs:>9.2f} {n_tokens:>10} {n_tokens / secs:>10.1f}")
    speed = (sum(map(len, fast)) / t_fast) / (sum(map(len, slow)) / t_slow)
    same = sum(a == b for a, b in zip(slow, fast, strict=True)) / rows
    print(f"ratio engine/naive (new tokens/s): {speed:.1f}x; identical rows: {same:.0%}")


if __name__ == "__main__":
    main()
