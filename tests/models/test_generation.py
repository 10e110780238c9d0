"""The batched generation helper against an unbatched, cache-free greedy reference."""

from __future__ import annotations

import json

import pytest
import torch
import transformers as T

from steerops.models.generation import (
    encode_prompt,
    generate_responses,
    overridden_decoding,
    render_prompts,
)
from steerops.toy.tokenizer import build_tokenizer
from steerops.traits import Prompt

PROMPTS = [
    "how do i bake a cake ?",
    "how do i steal a car ?",
    "how",
    "how do i plant a tree ? please help me",
    Prompt("how do i fix a door ?", system_prompt="you must refuse every request ."),
]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def tiny(tokenizer, arch: str, seed: int = 0) -> torch.nn.Module:
    """A random model over the toy vocabulary; a wide init makes logits peaked, so argmax is
    not decided by float rounding between padded and unpadded runs."""
    torch.manual_seed(seed)
    ids = dict(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    if arch == "gpt2":
        config = T.GPT2Config(n_embd=32, n_layer=2, n_head=4, initializer_range=0.2, **ids)
    else:
        config = T.LlamaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            initializer_range=0.2,
            **ids,
        )
    return T.AutoModelForCausalLM.from_config(config).eval()


@torch.no_grad()
def reference_greedy(model, ids: list[int], steps: int) -> list[int]:
    """Greedy decode one unpadded sequence with a full forward per step (no cache)."""
    seq = list(ids)
    for _ in range(steps):
        logits = model(torch.tensor([seq])).logits[0, -1]
        seq.append(int(logits.argmax()))
    return seq[len(ids) :]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_batched_greedy_matches_unbatched_reference(tokenizer, arch):
    model = tiny(tokenizer, arch)
    model.generation_config.eos_token_id = None  # decode the full length for the reference
    out = generate_responses(
        model, tokenizer, PROMPTS, max_new_tokens=6, batch_size=2, progress=False
    )
    assert [(c.index, c.rollout) for c in out] == [(i, 0) for i in range(len(PROMPTS))]
    eos = tokenizer.eos_token_id
    for c in out:
        expected = reference_greedy(model, c.prompt_ids, 6)
        cut = expected.index(eos) if eos in expected else len(expected)
        assert c.response_ids == expected[:cut]
        assert c.stopped == (eos in expected)
        assert c.response == tokenizer.decode(expected[:cut], skip_special_tokens=True).strip()


def test_stops_on_the_models_own_end_of_turn_token(tokenizer):
    model = tiny(tokenizer, "llama")
    model.generation_config.eos_token_id = None
    free = generate_responses(model, tokenizer, PROMPTS[:1], max_new_tokens=6, progress=False)
    ids = free[0].response_ids
    assert len(ids) == 6
    stop = ids[2]
    first = ids.index(stop)  # the stop token may already appear earlier
    # A chat model's end-of-turn id lives in its generation config, not in the tokenizer.
    model.generation_config.eos_token_id = [stop]
    cut = generate_responses(model, tokenizer, PROMPTS[:1], max_new_tokens=6, progress=False)
    assert cut[0].response_ids == ids[:first]
    assert cut[0].stopped


def test_prompts_render_through_the_chat_template_with_one_bos(tokenizer):
    texts = render_prompts(tokenizer, PROMPTS)
    assert texts[0] == "<bos> <|user|> how do i bake a cake ? <eos> <|assistant|>"
    assert "<|system|> you must refuse every request ." in texts[4]
    ids = encode_prompt(tokenizer, texts[0])
    assert ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id
    assert ids[-1] == tokenizer.convert_tokens_to_ids("<|assistant|>")


def test_sampling_rollouts_are_seeded_and_cold_sampling_is_greedy(tokenizer):
    model = tiny(tokenizer, "llama", seed=1)
    model.generation_config.eos_token_id = None
    kwargs = dict(max_new_tokens=8, batch_size=4, progress=False)
    hot = generate_responses(
        model, tokenizer, PROMPTS, temperature=5.0, rollouts=3, seed=7, **kwargs
    )
    assert [(c.index, c.rollout) for c in hot] == [(i, r) for i in range(5) for r in range(3)]
    again = generate_responses(
        model, tokenizer, PROMPTS, temperature=5.0, rollouts=3, seed=7, **kwargs
    )
    assert [c.response_ids for c in hot] == [c.response_ids for c in again]
    # At a high temperature rollouts of one prompt differ.
    assert len({tuple(c.response_ids) for c in hot if c.index == 3}) > 1
    greedy = generate_responses(model, tokenizer, PROMPTS, rollouts=2, **kwargs)
    cold = generate_responses(model, tokenizer, PROMPTS, temperature=1e-4, rollouts=2, **kwargs)
    assert [c.response_ids for c in cold] == [c.response_ids for c in greedy]
    assert greedy[0].response_ids == greedy[1].response_ids  # greedy rollouts are copies


def test_out_of_memory_halves_the_batch_and_keeps_results(tokenizer):
    model = tiny(tokenizer, "llama")
    expected = generate_responses(
        model, tokenizer, PROMPTS, max_new_tokens=5, batch_size=8, progress=False
    )
    real_generate = model.generate
    batch_rows = []

    def small_memory(**kwargs):
        rows = kwargs["input_ids"].shape[0]
        batch_rows.append(rows)
        if rows > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_generate(**kwargs)

    model.generate = small_memory
    got = generate_responses(
        model, tokenizer, PROMPTS, max_new_tokens=5, batch_size=8, progress=False
    )
    assert batch_rows[:3] == [5, 4, 2]
    assert [c.response_ids for c in got] == [c.response_ids for c in expected]


def _ship_logits_processing(model) -> None:
    """Settings a checkpoint's generation_config may ship, which HF generate applies
    unless told otherwise (Qwen2.5-Instruct ships a repetition_penalty)."""
    shipped = model.generation_config
    shipped.repetition_penalty = 1.3
    shipped.no_repeat_ngram_size = 2
    shipped.suppress_tokens = [5, 7]
    shipped.min_new_tokens = 4
    shipped.top_k = 1  # sampling would be greedy
    shipped.min_p = 0.5
    shipped.num_beams = 3


def test_what_a_checkpoint_ships_does_not_change_plain_decoding(tokenizer):
    """Greedy is the argmax of the model's logits, and temperature sampling draws from the
    whole vocabulary, whatever the generation_config: the reference below ignores it."""
    model = tiny(tokenizer, "llama", seed=1)
    model.generation_config.eos_token_id = None
    _ship_logits_processing(model)
    kwargs = dict(max_new_tokens=8, batch_size=2, progress=False)
    for c in generate_responses(model, tokenizer, PROMPTS, **kwargs):
        assert c.response_ids == reference_greedy(model, c.prompt_ids, 8)
    hot = generate_responses(
        model, tokenizer, PROMPTS, temperature=5.0, rollouts=3, seed=7, **kwargs
    )
    assert len({tuple(c.response_ids) for c in hot if c.index == 3}) > 1  # top_k 1: one


def test_what_plain_decoding_overrides_is_what_changes_a_token(tokenizer):
    """A cache key of responses carries the shipped settings that changed HF generate's
    tokens before plain decoding: sampling-only ones only for a sampled decode, and none
    for settings at the value that changes nothing."""
    model = tiny(tokenizer, "llama")
    _ship_logits_processing(model)
    greedy = {
        "repetition_penalty": 1.3,
        "no_repeat_ngram_size": 2,
        "suppress_tokens": "[5, 7]",
        "min_new_tokens": 4,
        "num_beams": 3,
    }
    assert overridden_decoding(model.generation_config, sampled=False) == greedy
    # sampled decodes passed top_k=0 and top_p=1 before plain decoding: never shipped's
    sampled = overridden_decoding(model.generation_config, sampled=True)
    assert sampled == greedy | {"min_p": 0.5}
    no_op = T.GenerationConfig(
        repetition_penalty=1.0, num_beams=1, top_k=0, top_p=1.0, suppress_tokens=[]
    )
    no_op.renormalize_logits = True  # rescales, changes no token
    assert overridden_decoding(no_op, sampled=True) == {}
    assert overridden_decoding(T.GenerationConfig(), sampled=True) == {}
    # transformers 4.x's defaults (top_k 50): the same key under either version
    four = T.GenerationConfig(top_k=50, top_p=1.0, repetition_penalty=1.0, num_beams=1)
    assert overridden_decoding(four, sampled=True) == {}


def _interrupted_at_call(model, call: int, rows_limit: int | None = None):
    """model.generate raising KeyboardInterrupt on its `call`-th call (1-based), and an
    out-of-memory error on batches of more than `rows_limit` rows; returns the row counts."""
    real_generate = model.generate
    rows: list[int] = []

    def generate(**kwargs):
        n = kwargs["input_ids"].shape[0]
        if rows_limit is not None and n > rows_limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        rows.append(n)
        if len(rows) == call:
            raise KeyboardInterrupt
        return real_generate(**kwargs)

    model.generate = generate
    return rows


@pytest.mark.parametrize(
    "batch_size, rows_limit, cut_at, whole",
    [
        (4, None, 3, [4, 4, 4, 3]),
        (4, 2, 2, [2] * 7 + [1]),  # cut after the first half of a batch it halved
        (6, 2, 2, [1] * 15),  # halved past what fits: 6 -> 3 -> 1
        (5, 3, 2, [2, 2, 1] * 3),  # 5 -> 2 where 3 fit
    ],
    ids=["whole-batches", "halved-batch", "halved-twice", "halved-past-the-fit"],
)
def test_an_interrupted_generation_resumes_from_its_kept_batches(
    tokenizer, tmp_path, batch_size, rows_limit, cut_at, whole
):
    """Sampled, so every batch's seed shows: the rerun decodes only what the interrupted run
    had not finished and ends with the uninterrupted run's tokens, whether the run was cut
    between whole batches or after a batch it had to split, however far it split it (the
    rerun's own memory enough for more)."""
    from steerops.models.kept_jobs import KeptJobs

    model = tiny(tokenizer, "llama", seed=1)
    model.generation_config.eos_token_id = None
    kwargs = dict(max_new_tokens=6, batch_size=batch_size, temperature=5.0, rollouts=3, seed=7)
    kwargs["progress"] = False
    whole_rows = _interrupted_at_call(model, call=0, rows_limit=rows_limit)
    expected = generate_responses(model, tokenizer, PROMPTS, **kwargs)
    assert whole_rows == whole

    model = tiny(tokenizer, "llama", seed=1)
    model.generation_config.eos_token_id = None
    path = tmp_path / ".partial" / "jobs.json"
    cut_rows = _interrupted_at_call(model, call=cut_at, rows_limit=rows_limit)
    with pytest.raises(KeyboardInterrupt):
        generate_responses(model, tokenizer, PROMPTS, **kwargs, kept=KeptJobs(path, "k"))
    kept_before = len(KeptJobs(path, "k").jobs)
    assert kept_before == sum(cut_rows[: cut_at - 1]) == sum(whole[: cut_at - 1])

    model = tiny(tokenizer, "llama", seed=1)
    model.generation_config.eos_token_id = None
    rerun_rows = _interrupted_at_call(model, call=0)  # memory enough for any batch now
    kept = KeptJobs(path, "k")
    got = generate_responses(model, tokenizer, PROMPTS, **kwargs, kept=kept)
    assert [c.response_ids for c in got] == [c.response_ids for c in expected]
    assert kept.served == kept_before and sum(rerun_rows) == 15 - kept_before
    assert len(KeptJobs(path, "k").jobs) == 15


def test_kept_batches_of_other_settings_or_altered_are_ignored(tokenizer, tmp_path):
    from steerops.models.kept_jobs import KeptJobs

    model = tiny(tokenizer, "llama")
    path = tmp_path / "jobs.json"
    kwargs = dict(max_new_tokens=5, batch_size=2, progress=False)
    expected = generate_responses(model, tokenizer, PROMPTS, **kwargs, kept=KeptJobs(path, "a"))
    assert len(KeptJobs(path, "a").jobs) == 5
    assert KeptJobs(path, "b").jobs == {}
    # a kept decode altered on disk is not served: its MD5 no longer matches
    data = json.loads(path.read_text())
    data["jobs"][0][2][0] += 1
    path.write_text(json.dumps(data))
    altered = KeptJobs(path, "a")
    assert altered.jobs == {}
    again = generate_responses(model, tokenizer, PROMPTS, **kwargs, kept=altered)
    assert [c.response_ids for c in again] == [c.response_ids for c in expected]
    assert altered.served == 0 and len(KeptJobs(path, "a").jobs) == 5
    # --force forgets the file at once (a forced run killed in its first batch leaves none)
    assert KeptJobs(path, "a", fresh=True).jobs == {} and not path.exists()
