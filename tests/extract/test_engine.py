"""The extraction engine on tiny random models: pooled activations equal a plain forward's, early
stop, out-of-memory recovery, resumable shards."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from steerops.extract import engine, store
from steerops.io import read_json
from steerops.models.resolver import resolve_layout
from steerops.specs import parse_position
from tiny import ARCHS, VOCAB, tiny_model

POSITIONS = ["prompt[-1]", "response[:3]", "all[1:-1]", "response[-3::2]"]


def random_examples(n: int = 11, seed: int = 0) -> list[engine.Example]:
    rng = np.random.default_rng(seed)
    examples = []
    for i in range(n):
        length = int(rng.integers(2, 15))
        prompt_len = length if i % 5 == 4 else int(rng.integers(1, length))  # some: no response
        ids = rng.integers(3, VOCAB - 4, size=length)
        examples.append(engine.Example(ids, prompt_len, {"i": i}))
    return examples


def reference_states(model, layout, example) -> dict[tuple[int, str], np.ndarray]:
    """Unpadded full forward: residual from `output_hidden_states`, the last block's
    residual and attn/mlp outputs from hooks (hidden_states[-1] is after the final norm)."""
    hooked, handles = {}, []
    last = layout.num_layers - 1
    targets = [(last, "residual")] + [
        (layer, c) for layer in range(layout.num_layers) for c in ("attn_out", "mlp_out")
    ]
    for layer, component in targets:

        def hook(module, args, output, key=(layer, component)):
            hooked[key] = (output[0] if isinstance(output, tuple) else output)[0].float()

        handles.append(layout.component_module(layer, component).register_forward_hook(hook))
    try:
        with torch.no_grad():
            out = model(input_ids=torch.as_tensor(example.ids)[None], output_hidden_states=True)
    finally:
        for h in handles:
            h.remove()
    states = {key: v.numpy() for key, v in hooked.items()}
    for layer in range(last):
        states[(layer, "residual")] = out.hidden_states[layer + 1][0].float().numpy()
    return states


def run(
    model,
    layout,
    examples,
    out_dir,
    position,
    layers,
    side="right",
    budget=10_000,
    component="residual",
    dtype="float32",
    shard_examples=4,
    **kwargs,
):
    job = engine.Job(
        out_dir,
        parse_position(position),
        layers,
        component,
        dtype,
        settings={"test": True},
        shard_examples=shard_examples,
        token_budget=budget,
    )
    meta = engine.run_job(
        engine.Extractor(model, layout, 0, side),
        examples,
        job,
        lambda kept: {"rows": [ex.info["i"] for ex in kept]},
        progress=False,
        **kwargs,
    )
    return meta, load_file(out_dir / store.TENSORS_FILE)


@pytest.mark.parametrize("arch", ARCHS)
def test_matches_plain_forward_on_every_architecture(arch, tmp_path):
    model = tiny_model(arch)
    layout = resolve_layout(model)
    examples = random_examples()
    refs = [reference_states(model, layout, ex) for ex in examples]
    layers = [0, 1, 2]
    k = 0
    for position in POSITIONS:
        pos = parse_position(position)
        for side in ("left", "right"):
            for budget in (1, 10_000):  # one example per batch, and all in one batch
                k += 1
                meta, tensors = run(
                    model, layout, examples, tmp_path / str(k), position, layers, side, budget
                )
                rows = meta["rows"]
                windows = {
                    ex.info["i"]: list(pos.window(ex.prompt_len, len(ex.ids) - ex.prompt_len))
                    for ex in examples
                }
                assert rows == [i for i in range(len(examples)) if windows[i]]
                assert meta["counts"]["dropped_empty"] == len(examples) - len(rows)
                for layer in layers:
                    got = tensors[f"layer_{layer}"].numpy()
                    want = np.stack(
                        [refs[i][(layer, "residual")][windows[i]].mean(0) for i in rows]
                    )
                    np.testing.assert_allclose(
                        got,
                        want,
                        rtol=1e-4,
                        atol=2e-5,
                        err_msg=f"{position} {side} {budget} L{layer}",
                    )
                    # the unit: every example's prompt tokens after the first, dropped
                    # examples' included
                    prompt_norms = np.concatenate(
                        [
                            np.linalg.norm(refs[i][(layer, "residual")][1 : ex.prompt_len], axis=-1)
                            for i, ex in enumerate(examples)
                        ]
                    )
                    unit = meta["token_norm"][str(layer)]
                    assert unit["tokens"] == len(prompt_norms) and unit["window_massive"] == 0
                    assert unit["token_norm"] == pytest.approx(prompt_norms.mean(), rel=1e-4)
                    # its check: the lower median over examples of each one's lower median
                    medians = [
                        np.sort(
                            np.linalg.norm(refs[i][(layer, "residual")][1 : ex.prompt_len], axis=-1)
                        )[(ex.prompt_len - 2) // 2]
                        for i, ex in enumerate(examples)
                        if ex.prompt_len > 1
                    ]
                    median = np.sort(medians)[(len(medians) - 1) // 2]
                    assert unit["example_median"] == pytest.approx(median, rel=1e-4)
    for component in ("attn_out", "mlp_out"):
        k += 1
        meta, tensors = run(
            model,
            layout,
            examples,
            tmp_path / str(k),
            "all[:]",
            layers,
            "left",
            40,
            component=component,
        )
        for layer in layers:
            want = np.stack([refs[i][(layer, component)].mean(0) for i in meta["rows"]])
            np.testing.assert_allclose(
                tensors[f"layer_{layer}"].numpy(), want, rtol=1e-4, atol=2e-5
            )
            # the unit is the residual's (what the steering adds to), not the component's
            residual = np.concatenate(
                [
                    np.linalg.norm(refs[i][(layer, "residual")][1 : ex.prompt_len], axis=-1)
                    for i, ex in enumerate(examples)
                ]
            )
            unit = meta["token_norm"][str(layer)]["token_norm"]
            assert unit == pytest.approx(residual.mean(), rel=1e-4)


def test_bfloat16_model_and_output(tmp_path):
    model = tiny_model("llama", dtype=torch.bfloat16)
    layout = resolve_layout(model)
    examples = random_examples(9, seed=3)
    meta, tensors = run(
        model, layout, examples, tmp_path, "response[:4]", [1, 2], "left", dtype="bfloat16"
    )
    for layer in (1, 2):
        got = tensors[f"layer_{layer}"]
        assert got.dtype == torch.bfloat16
        for row, i in enumerate(meta["rows"]):
            ex = examples[i]
            window = list(
                parse_position("response[:4]").window(ex.prompt_len, len(ex.ids) - ex.prompt_len)
            )
            ref = reference_states(model, layout, ex)[(layer, "residual")][window].mean(0)
            np.testing.assert_allclose(
                got[row].float().numpy(), ref, rtol=0.05, atol=0.05 * np.abs(ref).max()
            )


def test_early_stop_never_runs_later_blocks_or_the_head(tmp_path):
    model = tiny_model("llama")
    layout = resolve_layout(model)
    calls = []
    handles = [
        layout.layers[2].register_forward_hook(lambda *a: calls.append("block2")),
        model.lm_head.register_forward_hook(lambda *a: calls.append("head")),
    ]
    run(model, layout, random_examples(), tmp_path, "prompt[-1]", [0, 1])
    for h in handles:
        h.remove()
    assert calls == []


def test_engine_survives_out_of_memory(tmp_path, monkeypatch):
    model = tiny_model("qwen2")
    layout = resolve_layout(model)
    examples = random_examples(13, seed=5)
    _, want = run(model, layout, examples, tmp_path / "plain", "all[:]", [0, 2])
    real = engine.forward_capture

    def flaky(model, layout, input_ids, *args, **kwargs):
        if input_ids.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(model, layout, input_ids, *args, **kwargs)

    monkeypatch.setattr(engine, "forward_capture", flaky)
    meta, got = run(
        model, layout, examples, tmp_path / "oom", "all[:]", [0, 2], budget=10**4, shard_examples=8
    )
    assert meta["timing"]["batch_halvings"] >= 2
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=2e-5)


class Killed(Exception):
    pass


def test_killed_run_resumes_to_identical_bytes(tmp_path, monkeypatch):
    model = tiny_model("gemma2")
    layout = resolve_layout(model)
    examples = random_examples(30, seed=7)
    fresh_meta, _ = run(model, layout, examples, tmp_path / "fresh", "response[:3]", [0, 2])
    assert fresh_meta["counts"]["dropped_empty"] > 0  # their prompts ride along (token norms)
    n_shards = -(-len(examples) // 4)
    out = tmp_path / "resumed"
    partial = out / store.PARTIAL_DIR

    def kill_after_three(k):
        # Shards stream to disk one by one; the final file does not exist yet.
        assert sorted(p.name for p in partial.glob("shard_*")) == [
            f"shard_{i:05d}.safetensors" for i in range(k + 1)
        ]
        assert not (out / store.TENSORS_FILE).exists()
        if k == 2:
            raise Killed

    with pytest.raises(Killed):
        run(model, layout, examples, out, "response[:3]", [0, 2], on_shard=kill_after_three)
    assert len(list(partial.glob("shard_*"))) == 3

    computed = []
    real = engine._compute_shard

    def counting(extractor, batcher, kept, windows, lengths, rows, job, bar):
        computed.append(len(rows))
        assert len(rows) <= 4  # memory holds one shard, never the whole dataset
        return real(extractor, batcher, kept, windows, lengths, rows, job, bar)

    monkeypatch.setattr(engine, "_compute_shard", counting)
    meta, _ = run(model, layout, examples, out, "response[:3]", [0, 2])
    assert len(computed) == n_shards - 3 and meta["timing"]["reused_shards"] == 3
    fresh = (tmp_path / "fresh" / store.TENSORS_FILE).read_bytes()
    assert (out / store.TENSORS_FILE).read_bytes() == fresh
    # the file holds no timing (the run's speed is the MLflow run's): the same bytes
    assert (out / store.METADATA_FILE).read_bytes() == (
        tmp_path / "fresh" / store.METADATA_FILE
    ).read_bytes()
    assert "timing" not in read_json(out / store.METADATA_FILE) and "timing" in fresh_meta
    assert not partial.exists()


def test_a_shard_is_written_while_the_next_one_computes(tmp_path, monkeypatch):
    """Shard 0's write must start before shard 1's forwards finish (a writer thread); the
    last shard goes into the final file without a shard file; activations as unpatched."""
    model = tiny_model("llama")
    layout = resolve_layout(model)
    examples = random_examples(12, seed=3)
    second_computed = threading.Event()
    waited: list[bool] = []
    real_write, real_compute = engine._write_shard, engine._compute_shard

    def write(path, tensors, shard_hash):
        written.append(path.name)
        if not waited:  # shard 0's write holds until shard 1 is computed: only a thread can
            waited.append(second_computed.wait(timeout=10))
        real_write(path, tensors, shard_hash)

    def compute(extractor, batcher, kept, windows, lengths, rows, job, bar):
        result = real_compute(extractor, batcher, kept, windows, lengths, rows, job, bar)
        computed.append(len(rows))
        if len(computed) == 2:
            second_computed.set()
        return result

    computed: list[int] = []
    written: list[str] = []
    monkeypatch.setattr(engine, "_write_shard", write)
    monkeypatch.setattr(engine, "_compute_shard", compute)
    _, got = run(model, layout, examples, tmp_path / "a", "prompt[-1]", [0, 1])
    assert waited == [True] and len(computed) == 3
    assert written == ["shard_00000.safetensors", "shard_00001.safetensors"]
    monkeypatch.undo()
    _, want = run(model, layout, examples, tmp_path / "b", "prompt[-1]", [0, 1])
    assert all(torch.equal(got[name], want[name]) for name in want)


def test_a_failed_shard_write_stops_the_run(tmp_path, monkeypatch):
    model = tiny_model("llama")
    layout = resolve_layout(model)
    examples = random_examples(12, seed=3)

    def full_disk(path, specs, produce, metadata=None):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(engine, "write_streamed", full_disk)
    reported = []
    with pytest.raises(OSError, match="No space"):
        run(model, layout, examples, tmp_path, "prompt[-1]", [0], on_shard=reported.append)
    assert reported == [] and not (tmp_path / store.TENSORS_FILE).exists()


def test_stale_shards_are_recomputed(tmp_path):
    model = tiny_model("llama")
    layout = resolve_layout(model)
    examples = random_examples(12, seed=2)

    def kill(k):
        if k == 1:
            raise Killed

    with pytest.raises(Killed):
        run(model, layout, examples, tmp_path / "a", "prompt[-1]", [0, 1], on_shard=kill)
    meta, got = run(model, layout, examples, tmp_path / "a", "prompt[-1]", [1, 2])
    assert meta["timing"]["reused_shards"] == 0
    _, want = run(model, layout, examples, tmp_path / "b", "prompt[-1]", [1, 2])
    assert got.keys() == want.keys() == {"layer_1", "layer_2"}
    for name in want:
        assert torch.equal(got[name], want[name])


def test_compiled_blocks_give_the_eager_activations(tmp_path):
    """`extraction.compile`: the blocks run through torch.compile (inductor), the capture
    hooks stay outside the graphs; the pooled activations equal the eager run's, and the
    blocks' eager forwards come back afterwards."""
    from torch._dynamo.utils import counters

    model = tiny_model("llama")
    layout = resolve_layout(model)
    examples = random_examples()
    position, layers = "all[1:-1]", [0, 2]
    _, eager = run(model, layout, examples, tmp_path / "eager", position, layers, budget=40)
    job = engine.Job(
        tmp_path / "compiled",
        parse_position(position),
        layers,
        settings={"test": True},
        shard_examples=4,
        token_budget=40,
    )
    extractor = engine.Extractor(model, layout, 0, "right", compile=True)
    counters.clear()
    engine.run_job(extractor, examples, job, lambda kept: {}, progress=False)
    compiled = load_file(tmp_path / "compiled" / store.TENSORS_FILE)
    assert compiled.keys() == eager.keys()
    assert counters["stats"]["unique_graphs"] >= 1  # dynamo did compile the blocks
    for layer in layers:
        torch.testing.assert_close(
            compiled[f"layer_{layer}"], eager[f"layer_{layer}"], rtol=1e-5, atol=1e-5
        )
    assert all("forward" not in block.__dict__ for block in layout.layers)
    assert all(block.__dict__["_steerops_compiled"] for block in layout.layers[:3])
    # a hook inside a block would be traced into its graph: attn_out/mlp_out run eager
    for component in ("mlp_out", "attn_out"):
        _, want = run(
            model,
            layout,
            examples,
            tmp_path / f"e-{component}",
            position,
            layers,
            component=component,
        )
        job = engine.Job(
            tmp_path / f"c-{component}",
            parse_position(position),
            layers,
            component,
            settings={"test": True},
            shard_examples=4,
            token_budget=40,
        )
        engine.run_job(extractor, examples, job, lambda kept: {}, progress=False)
        got = load_file(tmp_path / f"c-{component}" / store.TENSORS_FILE)
        for layer in layers:
            torch.testing.assert_close(got[f"layer_{layer}"], want[f"layer_{layer}"])


def test_shards_of_another_shard_size_are_not_reused(tmp_path):
    """A run killed with `shard_examples` 2 leaves shard 2 = sorted rows 4-5; resumed with
    4, shard 2 is the last one (rows 8-9, also 2 rows): the old file must not stand in for
    it, or rows 8-9 of the final file are never written."""
    model = tiny_model("llama")
    layout = resolve_layout(model)
    examples = random_examples(10, seed=4)
    _, want = run(model, layout, examples, tmp_path / "fresh", "all[:]", [0, 1], shard_examples=4)

    def kill(k):
        if k == 3:
            raise Killed

    out = tmp_path / "resumed"
    with pytest.raises(Killed):
        run(model, layout, examples, out, "all[:]", [0, 1], shard_examples=2, on_shard=kill)
    meta, got = run(model, layout, examples, out, "all[:]", [0, 1], shard_examples=4)
    assert meta["timing"]["reused_shards"] == 0
    for name in want:
        assert torch.equal(got[name], want[name]), name
