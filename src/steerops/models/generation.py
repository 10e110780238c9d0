"""Plain (unsteered) batched generation through the chat template, with HF `generate`.

Prompts are tokenized one by one, sorted by length and batched with left padding, so new
tokens line up at the right edge and padding is minimal. Greedy decoding generates each
prompt once and copies it to every rollout (they would be identical); sampling seeds each
batch from `seed`, so a run is reproducible for the same batch size. Batches and the
out-of-memory rule are `steerops.models.batching`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from steerops.errors import SteeropsError
from steerops.models.batching import Batcher, pad_batch
from steerops.models.head import contiguous_head_input
from steerops.models.kept_jobs import KeptJobs
from steerops.models.resolver import module_device
from steerops.traits import Prompt


@dataclass(frozen=True)
class Completion:
    index: int  # position of the prompt in the input list
    rollout: int
    prompt_text: str  # the prompt as rendered through the chat template
    prompt_ids: list[int]
    response: str
    response_ids: list[int]  # generated tokens before the first stop token
    stopped: bool  # ended on a stop token (False: hit max_new_tokens)


def format_prompt(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str | list[dict],
    system_prompt: str | None = None,
    add_generation_prompt: bool = True,
) -> str:
    """Render a user prompt (or a message list) through the chat template, as text.

    Tokenizers without a chat template (base models; `load_tokenizer` warns) get the raw
    prompt, with the system prompt prepended as plain text so it is not silently dropped.
    """
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if system_prompt is not None and not any(m["role"] == "system" for m in messages):
        messages = [{"role": "system", "content": system_prompt}, *messages]
    if getattr(tokenizer, "chat_template", None):
        try:
            return _render(tokenizer, messages, add_generation_prompt)
        except Exception as exc:  # jinja raises TemplateError for unsupported roles
            problem = " ".join(str(exc).split())[:200]
        if messages[0]["role"] == "system" and len(messages) > 1:
            # Templates without a system role (Gemma-2, Mistral v0.1, which says "roles
            # must alternate"): fold it into the first user turn.
            system, first = messages[0]["content"], messages[1]["content"]
            merged = {**messages[1], "content": f"{system}\n\n{first}"}
            try:
                return _render(tokenizer, [merged, *messages[2:]], add_generation_prompt)
            except Exception:  # noqa: BLE001 - the first error says more
                pass
        raise SteeropsError(
            f"the chat template cannot render a prompt ({problem}); give the model variant "
            "a template that can (models.<variant>.chat_template)"
        )
    return "\n\n".join(m["content"] for m in messages)


def _render(tokenizer, messages: list[dict], add_generation_prompt: bool) -> str:
    return cast(
        str,
        tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        ),
    )


def render_prompts(tokenizer, prompts: Sequence[Prompt | str]) -> list[str]:
    """Chat-formatted text of each prompt (system prompt included when set)."""
    out = []
    for p in prompts:
        p = Prompt(p) if isinstance(p, str) else p
        out.append(format_prompt(tokenizer, p.prompt, p.system_prompt))
    return out


def encode_prompt(tokenizer, text: str) -> list[int]:
    # Chat templates usually write the BOS token themselves; add it only when they did not.
    bos = tokenizer.bos_token
    add_special = not (bos and text.startswith(bos))
    return tokenizer(text, add_special_tokens=add_special)["input_ids"]


def stop_token_ids(model, tokenizer) -> list[int]:
    """The tokenizer's EOS plus the model's own (chat models often end turns on another id)."""
    ids = []
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (tokenizer.eos_token_id, configured):
        for i in value if isinstance(value, list | tuple) else [value]:
            if i is not None and int(i) not in ids:
                ids.append(int(i))
    if not ids:
        raise SteeropsError("the tokenizer has no eos token: cannot tell when a response ends")
    return ids


def generate_responses(
    model,
    tokenizer,
    prompts: Sequence[Prompt | str],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    rollouts: int = 1,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
    desc: str = "generate",
    kept: KeptJobs | None = None,
) -> list[Completion]:
    """Complete every prompt `rollouts` times; results ordered by (prompt index, rollout).
    With `kept`, jobs it holds are taken from it and each batch decoded is added to it (see
    `steerops.models.kept_jobs`)."""
    if max_new_tokens < 1 or rollouts < 1 or batch_size < 1:
        raise SteeropsError("max_new_tokens, rollouts and batch_size must be >= 1")
    texts = render_prompts(tokenizer, prompts)
    encoded = [encode_prompt(tokenizer, t) for t in texts]
    sampled = temperature > 0
    # One job per (prompt, rollout) when sampling; greedy rollouts share one decode.
    jobs = [(i, r) for i in range(len(texts)) for r in range(rollouts if sampled else 1)]
    jobs.sort(key=lambda job: -len(encoded[job[0]]))
    stops = stop_token_ids(model, tokenizer)
    settings = {
        "max_new_tokens": max_new_tokens,
        "eos_token_id": stops,
        "pad_token_id": pad_id(tokenizer, stops),
        "do_sample": sampled,
    }
    if sampled:  # plain temperature sampling (`generate_batch` switches off top-k/top-p...)
        settings["temperature"] = temperature

    results: dict[tuple[int, int], list[int]] = {}
    lengths = [len(encoded[i]) for i, _ in jobs]
    batcher = Batcher(
        max_rows=batch_size, what="prompt", hint="lower max_new_tokens or use a smaller model"
    )
    bar = tqdm(total=len(jobs), desc=desc, unit="seq", disable=None if progress else True)

    def compute(batch: list[int]) -> dict[int, list[int]]:
        held = kept.jobs if kept is not None else {}
        stored = {k: held[jobs[k]] for k in batch if jobs[k] in held}
        missing = [k for k in batch if k not in stored]
        rows = {}
        if missing:
            # Seeded by the position of the batch's first job, as for a fixed batch size (a
            # rerun's batches are the interrupted run's: `Batcher.resume_rows`)
            new = generate_batch(
                model,
                [encoded[jobs[k][0]] for k in missing],
                settings,
                seed=seed + missing[0] if sampled else None,
            )
            rows = dict(zip(missing, new, strict=True))
        if kept is not None:
            kept.served += len(stored)
            kept.add({jobs[k]: ids for k, ids in rows.items()}, batcher.max_rows)
        return stored | rows

    def done(batch: list[int], rows: dict[int, list[int]]) -> None:
        for k in batch:
            results[jobs[k]] = rows[k]
        bar.update(len(batch))

    if kept is not None:  # planned at batch_size, split at the limit the run got down to
        batcher.resume_rows = kept.max_rows
    with bar:
        batcher.run(range(len(jobs)), lengths, compute, done)

    out = []
    for i, text in enumerate(texts):
        for r in range(rollouts):
            ids = results[(i, r if sampled else 0)]
            response_ids, stopped = cut_at_stop(ids, stops)
            response = tokenizer.decode(response_ids, skip_special_tokens=True).strip()
            out.append(Completion(i, r, text, encoded[i], response, response_ids, stopped))
    return out


# Logits processing a checkpoint's generation_config may ship (Qwen2.5-Instruct's
# repetition_penalty, a no_repeat_ngram_size, suppress_tokens, min_new_tokens, Gemma-3's
# top_k/top_p...), which HF generate applies unless told otherwise. steerops decodes
# plainly, as its static loop does: greedy argmax, or temperature sampling over the whole
# vocabulary, whatever the checkpoint ships; one sequence by one beam, no contrastive, DoLa
# or prompt-lookup decoding. None switches each off.
PLAIN_DECODING = {"num_beams": 1, "num_return_sequences": 1} | dict.fromkeys(
    (
        "num_beam_groups",
        "diversity_penalty",
        "penalty_alpha",
        "dola_layers",
        "prompt_lookup_num_tokens",
        "repetition_penalty",
        "encoder_repetition_penalty",
        "no_repeat_ngram_size",
        "encoder_no_repeat_ngram_size",
        "bad_words_ids",
        "sequence_bias",
        "min_length",
        "min_new_tokens",
        "forced_bos_token_id",
        "forced_eos_token_id",
        "exponential_decay_length_penalty",
        "suppress_tokens",
        "begin_suppress_tokens",
        "guidance_scale",
        "remove_invalid_values",
        "renormalize_logits",
        "watermarking_config",
        "top_k",
        "top_p",
        "min_p",
        "typical_p",
        "epsilon_cutoff",
        "eta_cutoff",
        "top_h",
    )
)

# The value at which a setting of PLAIN_DECODING changes nothing (None, 0, False and empty
# always do); the sampling-only ones change no greedy token; the others never change one.
_NO_EFFECT = dict.fromkeys(
    (
        "num_beams",
        "num_beam_groups",
        "repetition_penalty",
        "encoder_repetition_penalty",
        "guidance_scale",
        "top_p",
        "typical_p",
    ),
    1,
)
_SAMPLING_ONLY = {"top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff", "top_h"}
_NO_TOKEN_CHANGE = {"num_return_sequences", "remove_invalid_values", "renormalize_logits"}
# sampled decodes switched these off (top_k=0, top_p=1) before plain decoding did
_SWITCHED_OFF_BEFORE = {"top_k", "top_p"}


def overridden_decoding(generation_config, sampled: bool) -> dict[str, Any]:
    """The logits processing a checkpoint's `generation_config` asks for that would change
    a greedy decode's tokens (or, `sampled`, a sampled one's) and that plain decoding
    switches off: {setting: value}. Responses steerops decoded through HF generate before
    it decoded plainly applied them, so a cache key of responses carries this when it is
    not empty (the keys of checkpoints that ship none are unchanged)."""
    out: dict[str, Any] = {}
    for key in PLAIN_DECODING:
        if key in _NO_TOKEN_CHANGE | _SWITCHED_OFF_BEFORE:
            continue
        if key in _SAMPLING_ONLY and not sampled:
            continue
        value = getattr(generation_config, key, None)
        if value is None or value == _NO_EFFECT.get(key, 0):
            continue
        if isinstance(value, list | tuple | dict) and not value:
            continue
        out[key] = value if isinstance(value, int | float | str) else repr(value)
    return out


@torch.inference_mode()
def generate_batch(
    model,
    prompt_ids: Sequence[Sequence[int]],
    settings: dict,
    seed: int | None = None,
    min_width: int = 1,
) -> list[list[int]]:
    """New token ids (stop and pad tokens included) for one left-padded batch, at least
    `min_width` tokens wide; `settings` are `model.generate` keyword arguments (with
    `pad_token_id`), decoded plainly (`PLAIN_DECODING`)."""
    ids, mask, _ = pad_batch(prompt_ids, settings["pad_token_id"], "left", min_width)
    device = module_device(model.get_input_embeddings(), model)  # not `meta` when offloaded
    if seed is not None:
        torch.manual_seed(seed)
    with contiguous_head_input(model):  # the prefill's last logits
        out = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            **{**PLAIN_DECODING, **settings},
        )
    return out[:, ids.shape[1] :].tolist()


class GenerationInterrupted(KeyboardInterrupt):
    """An interrupt (Ctrl-C) during generation, carrying the rows that had finished:
    {row index in the call: new tokens}, so a caller can keep them."""

    def __init__(self, finished: dict[int, list[int]]):
        super().__init__(finished)  # in args too: the exception pickles and copies
        self.finished = finished

    def __str__(self) -> str:
        return f"generation interrupted with {len(self.finished)} rows finished"


def cut_at_stop(ids: list[int], stops: Sequence[int]) -> tuple[list[int], bool]:
    """The tokens before the first stop id, and whether one was found."""
    for k, token in enumerate(ids):
        if token in stops:
            return ids[:k], True
    return ids, False


def pad_id(tokenizer, stops: list[int]) -> int:
    # Finished rows are filled with pad; with no pad token any stop id works (it is cut).
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
