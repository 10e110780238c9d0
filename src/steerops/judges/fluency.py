"""Text statistics behind the proxy judge's coherence score.

Two signals, each cheap and each blind to what the other catches:
- repetition: loops and repeated sentences ("Scare, Scare, Scare", "1. 1. 1.") show up as
  word n-grams seen before in the same response and as text that compresses very well;
- likelihood: the unsteered model's mean per-token negative log-likelihood of the
  response given the question. Gibberish and text that drifts away from the question are
  unlikely under the model; fluent answers, refusals included, are not. Loops are likely
  once started, which is why repetition is measured separately.
"""

from __future__ import annotations

import contextlib
import re
import zlib
from collections.abc import Sequence

import torch

from steerops.models.batching import pad_batch
from steerops.models.capture import position_ids_for
from steerops.models.decode import covers
from steerops.models.decode_prefill import Prefiller
from steerops.models.generation import encode_prompt, format_prompt
from steerops.models.head import contiguous_head_input
from steerops.models.kv import cache_of
from steerops.models.unsteered import Kept, KeptStates, kept, starting_at

_TOKEN = re.compile(r"\w+|[^\w\s]")
_CHUNK_ELEMENTS = 1 << 21  # logits per log-softmax chunk (8 MiB in float32)


def words(text: str) -> list[str]:
    """Lower-cased words and punctuation marks, the units repetition is counted in."""
    return _TOKEN.findall(text.lower())


def repeated_fraction(text: str, n: int = 3) -> float:
    """Share of the response's word n-grams that already occurred earlier in it (0-1)."""
    units = words(text)
    grams = [tuple(units[i : i + n]) for i in range(len(units) - n + 1)]
    if not grams:
        return 0.0
    seen: set[tuple[str, ...]] = set()
    repeats = 0
    for gram in grams:
        repeats += gram in seen
        seen.add(gram)
    return repeats / len(grams)


def compression_ratio(text: str) -> float:
    """Compressed / raw size of the text (about 0.6-1 for prose this short, lower for loops
    of characters that word n-grams miss, such as runs of symbols or emoji)."""
    raw = text.encode("utf-8")
    if not raw:
        return 1.0
    return min(1.0, len(zlib.compress(raw, 9)) / len(raw))


def response_nll(
    model, tokenizer, questions: Sequence[str], responses: Sequence[str], batch_size: int = 8
) -> list[float | None]:
    """Mean negative log-likelihood (nats per token) of each response given its question
    rendered through the chat template and encoded as generation encodes it (a BOS the
    template does not write is added, as the model saw it); None for an empty response
    (`answer_nll`). An empty question without a template (a base model's empty prompt)
    reads after the BOS token, or the EOS token (the document separator) without one."""
    start = [t for t in (tokenizer.bos_token_id, tokenizer.eos_token_id) if t is not None][:1]
    prompts, answers = [], []
    for question, response in zip(questions, responses, strict=True):
        prompts.append(encode_prompt(tokenizer, format_prompt(tokenizer, question)) or start)
        answers.append(tokenizer(response, add_special_tokens=False)["input_ids"])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return answer_nll(model, prompts, answers, pad, batch_size)


@torch.inference_mode()
def answer_nll(
    model,
    prompts: Sequence[list[int]],
    answers: Sequence[list[int]],
    pad: int,
    batch_size: int = 8,
) -> list[float | None]:
    """Mean NLL of each answer's tokens after its prompt's (None for an empty answer), in
    batches of `batch_size` answers.

    A judge reads many answers to one prompt, so each prompt is read once: the prompts'
    common prefix (template, system prompt) once per call, and the distinct prompts of as
    many consecutive batches as hold `batch_size` of them in one forward (`Prefiller`, as in
    the decode loop: a forward of a few rows costs about as much as reading the weights),
    the answers read on from their prompt's keys and values. Architectures the decode loop
    does not cover read every row whole."""
    if any(not p for p in prompts):
        raise ValueError("answer_nll: an empty prompt (nothing to read an answer after)")
    out: list[float | None] = [None] * len(answers)
    # Equal prompts side by side (one prefill each), shortest first (less padding).
    order = sorted(
        (i for i, a in enumerate(answers) if a),
        key=lambda i: (len(prompts[i]), prompts[i], len(answers[i])),
    )
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    if order and covers(model) is None:
        prefill = Prefiller(model, prompts, [0] * len(prompts), pad, None, order)
        store = kept(model) or KeptStates([])
        found: dict[int, Kept] = {}  # row -> the states generation kept for its answer
        for i in order if store else ():
            if (entry := store.get((tuple(prompts[i]), tuple(answers[i])))) is not None:
                found[i] = entry
        for block in _prompt_blocks(batches, prompts, batch_size):
            prefilled = prefill.read([i for rows in block for i in rows])
            # Rows generation kept states for start where those end (`models.unsteered`),
            # the others at block 0: the block's rows are batched by where they start.
            for depth, same in _by_start([i for rows in block for i in rows], found).items():
                for rows in (same[k : k + batch_size] for k in range(0, len(same), batch_size)):
                    start = (
                        (store.blocks, depth, [found[i].states for i in rows]) if depth else None
                    )
                    batch = [prompts[i] for i in rows], [answers[i] for i in rows]
                    values = _after_prefill(model, prefilled.take(rows), *batch, pad, start)
                    _put(out, rows, values)
            del prefilled  # one block's prompts held at a time, as with one batch's before
    else:
        for rows in batches:
            batch = [prompts[i] for i in rows], [answers[i] for i in rows]
            _put(out, rows, _whole_rows(model, *batch, pad))
    return out


def _prompt_blocks(
    batches: list[list[int]], prompts: Sequence[list[int]], most: int
) -> list[list[list[int]]]:
    """Consecutive batches grouped while their distinct prompts number at most `most` (a
    batch with more is a block of its own)."""
    blocks: list[list[list[int]]] = []
    distinct: set[tuple[int, ...]] = set()
    for rows in batches:
        mine = {tuple(prompts[i]) for i in rows}
        if blocks and len(distinct | mine) <= most:
            blocks[-1].append(rows)
            distinct |= mine
        else:
            blocks.append([rows])
            distinct = mine
    return blocks


def _by_start(rows: list[int], found: dict[int, Kept]) -> dict[int, list[int]]:
    """`rows` by the block their reading starts at (0: no kept states), in order."""
    out: dict[int, list[int]] = {}
    for i in rows:
        out.setdefault(found[i].depth if i in found else 0, []).append(i)
    return out


def _put(out: list[float | None], rows: list[int], values: list[float]) -> None:
    for i, value in zip(rows, values, strict=True):
        out[i] = value


def _after_prefill(model, prefilled, prompts, answers, pad, start=None) -> list[float]:
    """Each answer's first token read from its prompt's last logits, the rest in one
    forward over the answers (right-padded) with the prompts' keys and values as the past.
    `start`: (blocks, depth, per answer [tokens - 1, hidden] states of block depth - 1)
    kept from generation (`models.unsteered`): the forward begins at block `depth`."""
    last_logits, states, prompt_mask = prefilled
    device = prompt_mask.device
    ids, answer_mask, _ = pad_batch(answers, pad, side="right")
    ids, answer_mask = ids.to(device), answer_mask.to(device)
    if ids.shape[1] == 1:  # one-token answers: the prompts' logits are all there is to read
        return _mean_nll([last_logits[:, None]], ids, answer_mask)
    lengths = torch.tensor([len(p) for p in prompts], device=device)[:, None]
    skipping = contextlib.nullcontext()
    if start is not None:
        blocks, depth, kept_states = start
        hidden = kept_states[0].new_zeros(len(answers), ids.shape[1] - 1, kept_states[0].shape[-1])
        for row, rows_states in enumerate(kept_states):
            hidden[row, : rows_states.shape[0]] = rows_states
        skipping = starting_at(blocks, depth, hidden)
    with skipping:
        logits = model(
            input_ids=ids[:, :-1],  # the last column predicts nothing read here
            attention_mask=torch.cat([prompt_mask.long(), answer_mask[:, :-1]], dim=1),
            # padding columns keep the row's last position (never past its real tokens)
            position_ids=lengths + position_ids_for(answer_mask[:, :-1]),
            cache=cache_of(states),
            use_cache=True,
        ).logits
    # Column j predicts answer token j: the prompt's logits, then the answer's own.
    return _mean_nll([last_logits[:, None], logits], ids, answer_mask)


def _whole_rows(model, prompts, answers, pad) -> list[float]:
    """Each row its whole prompt and answer, left-padded; logits only for answer columns."""
    device = model.get_input_embeddings().weight.device
    ids, mask, _ = pad_batch([p + a for p, a in zip(prompts, answers, strict=True)], pad)
    ids, mask = ids.to(device), mask.to(device)
    keep = max(map(len, answers))
    with contiguous_head_input(model):
        logits = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=position_ids_for(mask),
            logits_to_keep=keep + 1,
        ).logits[:, :-1]
    answer_mask = pad_batch(answers, pad)[1].to(device)
    return _mean_nll([logits], ids[:, -keep:], answer_mask)


def _mean_nll(
    logits: Sequence[torch.Tensor], targets: torch.Tensor, mask: torch.Tensor
) -> list[float]:
    """Mean over `mask` of -log p(target), with the column blocks `logits` side by side
    ([rows, columns, vocab] each) predicting `targets[:, j]` at column j.

    Read a few rows at a time: a batch's log-probabilities are as large as its logits
    (about 150 MB for 32 rows of 24 tokens and a 49k vocabulary), and a copy that size
    costs more in fresh pages than the log-softmax itself."""
    # at least float32 (bf16 logits would round the normaliser), float64 kept
    dtype = torch.promote_types(logits[0].dtype, torch.float32)
    token_nll = torch.empty(targets.shape, dtype=dtype, device=targets.device)
    column = 0
    for block in logits:
        width = block.shape[1]
        rows = max(1, _CHUNK_ELEMENTS // max(1, width * block.shape[2]))
        for start in range(0, block.shape[0], rows):
            part = block[start : start + rows]
            logprobs = torch.log_softmax(part.to(dtype), -1)
            picked = targets[start : start + rows, column : column + width, None]
            token_nll[start : start + rows, column : column + width] = -logprobs.gather(
                -1, picked
            ).squeeze(-1)
        column += width
    return (torch.where(mask.bool(), token_nll, 0.0).sum(1) / mask.sum(1)).tolist()
