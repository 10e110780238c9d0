"""`answer_nll` on tiny random models: reading each prompt once gives the NLL of one plain
forward per (prompt, answer), for sliding-window layers too, and architectures the decode
loop does not cover read whole rows."""

from __future__ import annotations

import pytest
import torch
import transformers as T

from decode_data import windowed
from steerops.judges import fluency
from steerops.judges.fluency import answer_nll
from steerops.models.decode import covers
from tiny import CONFIGS, tiny_model

PREFIX = list(range(3, 14))  # 11 tokens every prompt starts with, like a chat template
PROMPTS = [PREFIX + [20, 21], PREFIX + [22, 23, 24, 25, 26, 27], PREFIX + [30]]
ANSWERS = {0: [[40, 41, 42], [43], [44, 45, 46, 47, 48, 49]], 1: [[40, 41, 42], [50, 51]], 2: [[]]}


def _rows() -> tuple[list[list[int]], list[list[int]]]:
    """Answers scattered over the input order, one prompt's answers not side by side."""
    pairs = [(PROMPTS[p], a) for p, answers in ANSWERS.items() for a in answers]
    pairs = pairs[1::2] + pairs[::2]
    return [p for p, _ in pairs], [a for _, a in pairs]


def _plain(model, prompt: list[int], answer: list[int]) -> float:
    with torch.inference_mode():
        logits = model(torch.tensor([prompt + answer])).logits[0]
    logprobs = torch.log_softmax(logits[len(prompt) - 1 : -1].double(), dim=-1)
    return -logprobs[torch.arange(len(answer)), torch.tensor(answer)].mean().item()


def _fed(model, prompts, answers, batch_size: int) -> tuple[list[int], list[float | None]]:
    """The tokens each forward fed (in order), and `answer_nll`'s readings."""
    fed: list[int] = []
    hook = model.get_input_embeddings().register_forward_hook(
        lambda module, args, out: fed.append(args[0].numel())
    )
    try:
        return fed, answer_nll(model, prompts, answers, pad=0, batch_size=batch_size)
    finally:
        hook.remove()


def _windowed(arch: str):
    return windowed(arch).double()


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma2", "gemma3_text", "falcon"])
def test_answer_nll_equals_a_plain_forward_per_pair(arch):
    windowed = arch.startswith("gemma")
    model = _windowed(arch) if windowed else tiny_model(arch, dtype=torch.float64)
    # Gemma's norms compute in float32 even in a float64 model: float32 rounding, which
    # differs between batch shapes by about 1e-8 on some CPUs.
    tol = 1e-6 if windowed else 1e-9
    assert (covers(model) is None) == (arch != "falcon")  # falcon: whole rows
    prompts, answers = _rows()
    got = answer_nll(model, prompts, answers, pad=0, batch_size=3)
    alone = answer_nll(model, prompts, answers, pad=0, batch_size=1)  # one-token answers too
    for prompt, answer, value, single in zip(prompts, answers, got, alone, strict=True):
        if not answer:
            assert value is None and single is None
            continue
        assert value == pytest.approx(_plain(model, prompt, answer), abs=tol)
        assert single == pytest.approx(value, abs=tol)
    # The readings depend on the prompt (and, for gemma, on the window) far beyond tol.
    same_answer = [_plain(model, p, [40, 41, 42]) for p in PROMPTS[:2]]
    assert abs(same_answer[0] - same_answer[1]) > 1e-5
    if windowed:
        wide = T.AutoModelForCausalLM.from_config(CONFIGS[arch]()).double().eval()
        wide.load_state_dict(model.state_dict())
        assert abs(_plain(wide, PROMPTS[1], [40, 41, 42]) - same_answer[1]) > 1e-5


def test_answer_nll_reads_each_prompt_once():
    prompts, answers = _rows()
    fed, _ = _fed(tiny_model("llama", dtype=torch.float64), prompts, answers, len(prompts))
    # the common prefix once (11 tokens: the shortest prompt keeps its last 2 as input),
    # then the two distinct prompts' tails (the longer one's 6 tokens), then 5 answers of
    # <= 6 tokens but their last (which predicts nothing read here)
    assert fed == [len(PREFIX), 2 * 6, 5 * 5]


@pytest.mark.parametrize(
    ("batch_size", "expected"),
    [
        # both prompts fit one prefill: 11 prefix tokens, then 2 tails of <= 6, then the
        # batches [p0: 1 and 3 tokens], [p0: 6, p1: 2], [p1: 3] (their last token not fed)
        (2, [len(PREFIX), 2 * 6, 2 * 2, 2 * 5, 1 * 2]),
        # one prompt a prefill: prompt 0's tail (2 tokens) for its three batches (the
        # one-token answer reads the prompt's logits alone), then prompt 1's (6) for its two
        (1, [len(PREFIX), 2, 2, 5, 6, 1, 2]),
    ],
)
def test_consecutive_batches_share_one_prefill_of_their_prompts(batch_size, expected):
    """A forward over a few rows costs about as much as reading the weights: the distinct
    prompts of consecutive batches, up to `batch_size` of them, are prefilled together."""
    model = tiny_model("llama", dtype=torch.float64)
    prompts, answers = _rows()
    fed, got = _fed(model, prompts, answers, batch_size)
    assert fed == expected
    for prompt, answer, value in zip(prompts, answers, got, strict=True):
        if answer:
            assert value == pytest.approx(_plain(model, prompt, answer), abs=1e-9)


def test_answer_padding_never_takes_a_position_past_its_rows_tokens():
    """GPT-2 has 20 absolute positions: a long prompt with a short answer, batched with a
    long answer, must not give the short row's padding positions 20 and beyond."""
    config = CONFIGS["gpt2"]()
    config.n_positions = 20
    torch.manual_seed(0)
    model = T.AutoModelForCausalLM.from_config(config).double().eval()
    prompts = [PREFIX + list(range(20, 27)), PREFIX + [30, 31]]  # 18 and 13 tokens
    answers = [[40], [41, 42, 43, 44, 45, 46, 47]]  # rows end at positions 18 and 19
    got = answer_nll(model, prompts, answers, pad=0, batch_size=2)
    for prompt, answer, value in zip(prompts, answers, got, strict=True):
        assert value == pytest.approx(_plain(model, prompt, answer), abs=1e-9)


def test_readings_in_row_chunks_equal_one_whole_log_softmax(monkeypatch):
    """The log-softmax is taken a few rows at a time (no vocabulary-sized copy of a
    batch's logits): the values are those of one log-softmax over the whole batch."""
    model = tiny_model("llama", dtype=torch.float64)
    prompts, answers = _rows()
    whole = answer_nll(model, prompts, answers, pad=0, batch_size=len(prompts))
    vocab = model.config.vocab_size
    monkeypatch.setattr(fluency, "_CHUNK_ELEMENTS", vocab * 5)  # one row of 5 columns
    chunked = answer_nll(model, prompts, answers, pad=0, batch_size=len(prompts))
    assert chunked == whole
    for prompt, answer, value in zip(prompts, answers, chunked, strict=True):
        if answer:
            assert value == pytest.approx(_plain(model, prompt, answer), abs=1e-9)


def _bos_adding_tokenizer(template: bool):
    """A tokenizer that adds <bos> itself, with a chat template that does not write it
    (or none): the prompt generation encodes starts with <bos>."""
    from tokenizers import processors

    from tiny import digit_tokenizer

    tok = digit_tokenizer()
    tok.chat_template = tok.chat_template.replace("{{ bos_token }}", "") if template else None
    tok._tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", tok.bos_token_id)]
    )
    return tok


@pytest.mark.parametrize("template", [True, False])
def test_response_nll_reads_after_the_prompt_generation_encoded(template):
    """The response is read after the prompt ids generation fed the model (`encode_prompt`:
    a <bos> the template does not write is added), not after the template text alone;
    an empty question of a model without a template reads after <bos>."""
    from steerops.judges.fluency import response_nll
    from steerops.models.generation import encode_prompt, format_prompt

    tok = _bos_adding_tokenizer(template)
    model = tiny_model("llama", dtype=torch.float64)
    response = "sure 1 2 : 10 0 ."
    answer = tok(response, add_special_tokens=False)["input_ids"]
    for question in ["how do i bake bread ?", ""]:
        prompt = encode_prompt(tok, format_prompt(tok, question))
        assert prompt[0] == tok.bos_token_id
        got = response_nll(model, tok, [question], [response])[0]
        assert got == pytest.approx(_plain(model, prompt, answer), abs=1e-9)
