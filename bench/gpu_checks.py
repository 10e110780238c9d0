"""Exactness on a GPU, where the CPU tests cannot look: the compiled step's CUDA graphs, a
kept cache state across calls, the token-norm median and the judge's readings.

Tiny random float32 models of every architecture the static loop covers (tests/tiny.py):
- the static loop gives HF generate's tokens (mixed steering tables, left padding, refills),
  in two calls in a row with two tables (the second reuses the kept cache state and steering
  buffers, and must steer as its own table says). gemma3 runs the CUDA
  default (inductor, CUDA graphs); the others run dynamo only, which keeps state the same way;
- the token-norm median on the device equals the CPU's on bf16, float16 and float32
  batches, and the unit's per-example statistics (its check's median too) match;
- `max_batch_rows: auto` plans at least the memory a row of the loop takes (CUDA only);
- a third static call of one shape records no CUDA graph (gemma3, CUDA graph trees);
- `answer_nll` on the GPU equals the same model's on the CPU;
- the `hf` judge's integer distributions read with tree attention on the GPU equal the
  CPU's fan-out (float32), and the GPU's own fan-out in bf16;
- activations at a position every prompt shares, read in bf16 in batches of five shapes,
  count as constant under `probe train`'s per-feature rule (its worst spread printed
  against the 3e-2 bar: the GPU kernels' rounding, which CPU bf16 does not show).
Prints one line per check and exits non-zero if any fails. A row that differs from HF
generate's is a failure to look at: in float32 (TF32 off) a kernel choice rarely flips an
argmax, a logic error flips many.

    python bench/gpu_checks.py                 # CUDA
    python bench/gpu_checks.py --device cpu    # the same checks on CPU (the script's own check)
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from steerops.extract.token_norm import prompt_median, token_norm_stats  # noqa: E402
from steerops.judges.fluency import answer_nll  # noqa: E402
from steerops.judges.numbers import integer_distributions, number_trie  # noqa: E402
from steerops.models import decode  # noqa: E402
from steerops.models.resolver import resolve_layout  # noqa: E402
from steerops.steering.engine import SteeringTable, generate_steered  # noqa: E402
from tiny import ARCHS, digit_tokenizer, tiny_model  # noqa: E402

DEVICE = "cuda"
HEAD = [1, 30, 31, 32, 33, 34, 35, 36, 37]  # a shared chat-template-like head
TAILS = [[5, 9, 14, 22, 31, 40], [7, 8], [11, 12, 13, 50], [60, 61, 62, 63], [44], [70, 71, 72]]
PROMPTS = [HEAD + tail for tail in TAILS]


def unit(seed: int, hidden: int) -> torch.Tensor:
    v = torch.randn(hidden, generator=torch.Generator().manual_seed(seed))
    return v / v.norm()


def grid(
    hidden: int, scale: float = 1.0, skip: int | None = None
) -> tuple[SteeringTable, list[list[int]]]:
    """Every prompt under five configs (none, one layer, another, two layers, two vectors
    at one layer; weights times `scale`, none at layer `skip`), rows in an order unrelated
    to config or length, twice over."""
    a, b, c = unit(1, hidden), unit(2, hidden), unit(3, hidden)
    configs = [
        [],
        [(1, a, 6.0)],
        [(2, b, -5.0)],
        [(0, c, 4.0), (2, a, 3.0)],
        [(1, a, 2.0), (1, b, 5.0)],
    ]
    configs = [[(at, v, w * scale) for at, v, w in config if at != skip] for config in configs]
    rows = [(k, p) for k in range(len(configs)) for p in range(len(PROMPTS))][::-1] * 2
    return SteeringTable([configs[k] for k, _ in rows]), [PROMPTS[p] for _, p in rows]


def check_loop(arch: str, capture: bool = False) -> tuple[bool, str]:
    model = tiny_model(arch).to(DEVICE)
    if decode.covers(model) is not None:
        return True, "not covered by the static loop (HF generate serves it)"
    layout = resolve_layout(model)
    settings = dict(pad_token_id=0, stop_ids=[2], max_new_tokens=10)
    backend = "auto" if arch == "gemma3" else "eager"
    options = decode.StaticLoop(backend=backend, capture=capture)
    same, stats = [], decode.DecodeStats()
    # two static calls in a row, each with its own table (the second leaves layer 0, which
    # the first steers, alone): a graph recorded or captured in the first, reading the
    # steering buffers the loop keeps, must steer the second's rows as its table says
    grids = [grid(layout.hidden_size), grid(layout.hidden_size, -0.7, skip=0)]
    wants = [
        generate_steered(model, layout, prompts, table, loop="hf", max_batch_rows=7, **settings)
        for table, prompts in grids
    ]
    for (table, prompts), want in zip(grids, wants, strict=True):
        got = generate_steered(
            model, layout, prompts, table, loop="static", max_batch_rows=16,
            loop_options=options, stats=stats, **settings,
        )  # fmt: skip
        same.append(sum(g == w for g, w in zip(got, want, strict=True)) / len(want))
    # on CUDA the capture must have happened (elsewhere it changes nothing)
    ok = all(s == 1.0 for s in same) and (stats.graphs > 0 or not capture or "cuda" not in DEVICE)
    how = f"backend {backend}" + (f", {stats.graphs} graphs captured" if capture else "")
    return ok, f"{how}: rows equal to HF generate {same[0]:.0%}, {same[1]:.0%}"


def check_no_rerecording() -> tuple[bool, str]:
    """gemma3 on the CUDA default (CUDA graph trees): three static calls of one shape with
    three tables; the first records each slot count's graph, the third must record none (a
    steering buffer at a new address, or a cache rebuilt, records them again every call)."""
    from torch._inductor import cudagraph_trees

    model = tiny_model("gemma3").to(DEVICE)
    layout = resolve_layout(model)
    manager = cudagraph_trees.CUDAGraphTreeManager
    real, counts = manager.record_function, [0]

    def counted(self, *args, **kwargs):
        counts[0] += 1
        return real(self, *args, **kwargs)

    recorded = []
    manager.record_function = counted
    try:
        for scale in (1.0, -0.7, 0.4):
            table, prompts = grid(layout.hidden_size, scale)
            before = counts[0]
            generate_steered(
                model, layout, prompts, table, loop="static", max_batch_rows=16,
                pad_token_id=0, stop_ids=[2], max_new_tokens=10,
            )  # fmt: skip
            recorded.append(counts[0] - before)
    finally:
        manager.record_function = real
    if "cuda" not in DEVICE:
        return True, f"no CUDA graphs on {DEVICE} (recordings {recorded})"
    ok = recorded[0] > 0 and recorded[2] == 0
    return ok, f"CUDA graph recordings per call: {recorded} (the third must be 0)"


def check_auto_rows() -> tuple[bool, str]:
    """`max_batch_rows: auto` on the device: the rows `auto_rows` plans from the free memory,
    and its memory a row against the peak a bf16 gemma-3-like model allocates above its
    weights while the loop decodes twice its rows, then a question subset with shorter
    prompts (one cache length: `prompt_room`), states of every bucket kept."""
    import transformers as T

    from steerops.models.decode_memory import DecoderShape, auto_rows, row_bytes

    config = T.Gemma3TextConfig(
        vocab_size=32_000, hidden_size=256, intermediate_size=1024, num_hidden_layers=6,
        num_attention_heads=4, num_key_value_heads=2, head_dim=64, pad_token_id=0,
        bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    torch.manual_seed(0)
    model = T.AutoModelForCausalLM.from_config(config).to(DEVICE, torch.bfloat16).eval()
    layout = resolve_layout(model)
    longest, new = 40, 24
    rows, sized_from = auto_rows(model, longest, new)
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, 31_000, (int(n),), generator=gen).tolist() for n in
               torch.randint(20, longest + 1, (2 * rows,), generator=gen)]  # fmt: skip
    prompts[0] = prompts[0][:1] * longest  # the longest question
    additions = [[(2, unit(k % 7, 256), 4.0)] for k in range(len(prompts))]
    options = decode.StaticLoop(backend="eager", prompt_room=longest)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    weights = torch.cuda.memory_allocated()
    for subset in (prompts, [p[:25] for p in prompts[: rows // 2]]):
        generate_steered(
            model, layout, subset, SteeringTable(additions[: len(subset)]), pad_token_id=0,
            stop_ids=[2], max_new_tokens=new, loop="static", max_batch_rows=rows,
            loop_options=options,
        )  # fmt: skip
    peak = (torch.cuda.max_memory_allocated() - weights) / rows
    shape = DecoderShape.of(config)
    assert shape is not None, "a gemma-3 config has an attention shape"
    planned = row_bytes(shape, 2, longest, new)
    ratio = peak / planned
    return 0.25 <= ratio <= 1.0, (
        f"auto: {rows} rows ({sized_from}); peak {peak / 2**20:.2f} MiB a row above the "
        f"weights, {ratio:.0%} of the {planned / 2**20:.2f} planned (0.25-1 passes)"
    )


def check_median() -> tuple[bool, str]:
    """The prompt median and the unit's per-example statistics on the device against the
    CPU's."""
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    notes, ok = [], True
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        hidden = (torch.randn(16, 40, 64, generator=gen, device=DEVICE) * 3).to(dtype)
        hidden[3, 7, :4] = float("nan")
        lengths = torch.randint(0, 41, (16,), generator=gen, device=DEVICE)
        prompt = torch.arange(40, device=DEVICE) >= (40 - lengths)[:, None]
        magnitude = hidden.abs()
        want = prompt_median(magnitude.cpu(), prompt.cpu())
        got = prompt_median(magnitude, prompt).cpu()  # sorted in `dtype` there, float32 here
        equal = torch.equal(got.isnan(), want.isnan()) and torch.equal(
            got.nan_to_num(-1.0), want.nan_to_num(-1.0)
        )
        # the unit's per-example statistics, its check's median among them, as on the CPU
        # (sums of float32 norms: equal to the kernels' rounding)
        window = prompt & (torch.arange(40, device=DEVICE) >= 37)
        stats = token_norm_stats(hidden, prompt, window, 8.0, 3.0).cpu()
        cpu = token_norm_stats(hidden.cpu(), prompt.cpu(), window.cpu(), 8.0, 3.0)
        close = torch.equal(stats.isnan(), cpu.isnan()) and torch.allclose(
            stats.nan_to_num(-1.0), cpu.nan_to_num(-1.0), rtol=1e-5
        )
        ok &= equal and close
        said = "equal" if equal else "DIFFERENT"
        said += ", stats close" if close else ", stats DIFFER"
        notes.append(f"{str(dtype).removeprefix('torch.')} {said}")
    return ok, ", ".join(notes)


def check_shared_position_constant() -> tuple[bool, str]:
    """Activations at a position every prompt shares (the chat head), read in batches of
    other shapes in bfloat16, differ only by the kernels' rounding: `probe train` must call
    such a layer constant (`ridge.constant_features` at the bf16 spread), not fit the noise.
    Prints the largest feature spread against the feature's size (the rule's 3e-2 bar)."""
    from steerops.probes import ridge

    model = copy.deepcopy(tiny_model("llama")).to(DEVICE, torch.bfloat16)
    width = max(len(p) for p in PROMPTS)
    ids = torch.tensor([p + [0] * (width - len(p)) for p in PROMPTS], device=DEVICE)
    lengths = torch.tensor([len(p) for p in PROMPTS], device=DEVICE)
    mask = (torch.arange(width, device=DEVICE) < lengths[:, None]).long()
    rows: list[torch.Tensor] = []  # [layers, hidden] per prompt and batch shape
    with torch.no_grad():
        for chosen in ([0, 1, 2, 3, 4, 5], [0, 1, 2], [3, 4], [5], [2, 4, 0, 5]):
            out = model(ids[chosen], attention_mask=mask[chosen], output_hidden_states=True)
            states = torch.stack(out.hidden_states[1:], dim=1)  # [batch, layers, seq, hidden]
            rows += list(states[:, :, len(HEAD) - 1].float().cpu())
    x = torch.stack(rows).double().numpy()  # [rows, layers, hidden]
    spread = ridge.rounding_spread("bfloat16")
    notes, ok = [], True
    for layer in range(x.shape[1]):
        values = x[:, layer]
        size = abs(values).max(axis=0)
        # the rule's own measure: each feature's spread over its size (or the median's)
        worst = float((np.ptp(values, axis=0) / np.maximum(size, np.median(size))).max())
        constant = ridge.constant_features(values, spread)
        ok &= constant
        notes.append(f"layer {layer} {'constant' if constant else 'VARIES'} ({worst:.1e})")
    return ok, (
        f"{len(rows)} rows of one shared position, 5 batch shapes, bar {spread:g}: "
        + ", ".join(notes)
    )


def check_answer_nll() -> tuple[bool, str]:
    model = tiny_model("llama")
    gen = torch.Generator().manual_seed(3)
    answers = [torch.randint(3, 90, (n,), generator=gen).tolist() for n in (1, 4, 9, 6, 2, 7)]
    prompts = [PROMPTS[i % 3] for i in range(len(answers))]
    want = answer_nll(model, prompts, answers, pad=0, batch_size=4)
    got = answer_nll(copy.deepcopy(model).to(DEVICE), prompts, answers, pad=0, batch_size=4)
    worst = max(abs(g - w) for g, w in zip(got, want, strict=True))
    return worst < 1e-4, f"largest difference from the CPU's: {worst:.1e} nats"


def check_judge_trie() -> tuple[bool, str]:
    tokenizer = digit_tokenizer()
    texts = [
        f"<bos> <|user|> rate {q} : {a} <eos> <|assistant|>"
        for q in ("how do i bake bread ?", "help 7 ?")
        for a in ("sure . first get flour .", "sorry no", "12 bread 40")
    ]
    trie = number_trie(tokenizer, texts[0])
    model = tiny_model("gemma3_text")
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(30.0)  # answers that differ by prompt

    def read(m, tree: bool) -> torch.Tensor:
        dists = integer_distributions(m, tokenizer, texts, trie, prune_prob=0.0, tree=tree)
        return torch.tensor([[d[n] for n in range(101)] for d in dists], dtype=torch.float64)

    def apart(a: torch.Tensor, b: torch.Tensor) -> float:  # relative to each row's largest
        return float(((a - b).abs().max(-1).values / b.max(-1).values).max())

    want = read(model, tree=False)
    on_device = copy.deepcopy(model).to(DEVICE)
    worst = apart(read(on_device, tree=True), want)
    half = on_device.to(torch.bfloat16)
    worst_bf16 = apart(read(half, tree=True), read(half, tree=False))
    return worst < 1e-4 and worst_bf16 < 5e-2, (
        f"tree vs the CPU's fan-out {worst:.1e}, bf16 tree vs fan-out {worst_bf16:.1e} "
        "of the likeliest integer's probability"
    )


def main() -> None:
    global DEVICE
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    DEVICE = ap.parse_args().device
    if DEVICE.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("gpu_checks: no CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = False  # float32 means float32 here
    # the quick checks first: a run cut at its time limit still has them
    checks = [("token-norm median", check_median), ("judge readings", check_answer_nll)]
    checks += [("judge integer trie", check_judge_trie)]
    checks += [("probe constant-layer rule, bf16 shared position", check_shared_position_constant)]
    if DEVICE.startswith("cuda"):
        checks += [("max_batch_rows auto, memory a row", check_auto_rows)]
    checks += [(f"static loop, {arch}", lambda arch=arch: check_loop(arch)) for arch in ARCHS]
    checks += [("static loop, gemma3, steps captured by hand", lambda: check_loop("gemma3", True))]
    checks += [("static loop, gemma3, no graph recorded again", check_no_rerecording)]
    failed = 0
    for name, check in checks:
        start = time.perf_counter()
        try:
            ok, note = check()
        except Exception as exc:  # one broken check must not hide the others
            ok, note = False, f"{type(exc).__name__}: {exc}"
        failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name}: {note} ({time.perf_counter() - start:.1f} s)")
    print(f"{len(checks) - failed} of {len(checks)} checks passed")
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
