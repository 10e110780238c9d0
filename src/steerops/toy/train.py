"""Train the toy chat model: a small Llama on chat-formatted conversations of the corpus.

Deterministic for a seed on one machine: the data order comes from `random.Random(seed)`,
the initialisation and dropout-free training from `torch.manual_seed(seed)`, and the number
of CPU threads is pinned for the duration of training (float sums depend on it).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass

import torch
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

from steerops.toy import corpus


@dataclass
class TrainConfig:
    # Chosen by sweeping size/steps/weight decay over seeds 0-3: the cheapest setting where,
    # for each seed, a layer-2 mean-difference vector at 1x the mean last-prompt-token norm
    # turned >= 80% of held-out benign answers into refusals and 2x collapsed coherence.
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 384
    steps: int = 400
    batch_size: int = 64
    lr: float = 4e-3
    warmup: int = 30
    weight_decay: float = 0.1
    system_batches: float = 0.25  # share of batches whose examples carry system prompts
    strict_share: float = 0.2  # of those examples, share with the refuse-all prompt
    # Also predict prompt tokens. Off: it grows huge-norm outlier positions (a few dims at
    # <bos>) whose norm swamps the mean activation norm that steering is scaled by.
    prompt_loss: bool = False
    num_threads: int = 2


def model_config(tokenizer, cfg: TrainConfig) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=tokenizer.model_max_length,
        rms_norm_eps=1e-5,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )


def generation_config(tokenizer, max_new_tokens: int = 32) -> GenerationConfig:
    return GenerationConfig(
        do_sample=False,
        max_new_tokens=max_new_tokens,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def encode_example(tokenizer, req: corpus.Request) -> tuple[list[int], int]:
    """Token ids of the whole conversation and the length of its prompt part (everything up
    to and including the assistant marker), computed with the chat template itself so
    training sees exactly what generation will be prompted with."""
    prompt = tokenizer.apply_chat_template(
        req.messages(), tokenize=False, add_generation_prompt=True
    )
    full = tokenizer.apply_chat_template(
        req.messages(corpus.reference_response(req)), tokenize=False
    )
    prompt_ids = tokenizer(prompt)["input_ids"]
    full_ids = tokenizer(full)["input_ids"]
    assert full_ids[: len(prompt_ids)] == prompt_ids, "chat template is not prefix-stable"
    return full_ids, len(prompt_ids)


def _batch(examples: list[tuple[list[int], int]], pad_id: int, prompt_loss: bool = False):
    """Right-padded batch; labels are -100 outside the assistant turn (response + eos).
    Right padding needs no attention mask: causal attention never looks at later pads."""
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    for row, (ids, n_prompt) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        first = 1 if prompt_loss else n_prompt
        labels[row, first : len(ids)] = torch.tensor(ids[first:])
    return input_ids, labels


def _lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def train_model(
    tokenizer,
    split: corpus.Split,
    seed: int = 0,
    cfg: TrainConfig | None = None,
    progress: bool = True,
) -> tuple[LlamaForCausalLM, dict]:
    """Train a fresh model on training-side requests; returns it (eval mode) and stats."""
    cfg = cfg or TrainConfig()
    rng = random.Random(seed)
    # System prompts go to whole batches, so the other batches stay short (less padding).
    requests = []
    for _ in range(cfg.steps):
        sys_rate = 1.0 if rng.random() < cfg.system_batches else 0.0
        requests += corpus.sample_requests(
            rng,
            cfg.batch_size,
            split,
            system_rate=sys_rate * (1 - cfg.strict_share),
            strict_rate=sys_rate * cfg.strict_share,
        )
    cache: dict[corpus.Request, tuple[list[int], int]] = {}
    examples = []
    for r in requests:
        if r not in cache:  # few thousand distinct conversations among ~40k draws
            cache[r] = encode_example(tokenizer, r)
        examples.append(cache[r])

    old_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.num_threads)
    try:
        torch.manual_seed(seed)
        model = LlamaForCausalLM(model_config(tokenizer, cfg))
        model.generation_config = generation_config(tokenizer)
        opt = torch.optim.AdamW(
            model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98)
        )
        losses = _train_loop(model, opt, examples, tokenizer.pad_token_id, cfg, progress)
    finally:
        torch.set_num_threads(old_threads)
    model.eval()
    stats = {
        "steps": cfg.steps,
        "batch_size": cfg.batch_size,
        "lr": cfg.lr,
        "n_params": sum(p.numel() for p in model.parameters()),
        "n_unique_conversations": len(cache),
        "final_loss": sum(losses[-20:]) / len(losses[-20:]),
        "loss_curve": [
            round(sum(losses[i : i + 50]) / len(losses[i : i + 50]), 5)
            for i in range(0, len(losses), 50)
        ],
    }
    return model, stats


def _train_loop(model, opt, examples, pad_id, cfg: TrainConfig, progress: bool) -> list[float]:
    from tqdm.auto import tqdm

    model.train()
    losses: list[float] = []
    bar = tqdm(range(cfg.steps), desc="toy: training", disable=not progress, leave=False)
    start = time.perf_counter()
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg)
        chunk = examples[step * cfg.batch_size : (step + 1) * cfg.batch_size]
        input_ids, labels = _batch(chunk, pad_id, cfg.prompt_loss)
        loss = model(input_ids=input_ids, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}", s=f"{time.perf_counter() - start:.0f}")
    bar.close()
    return losses
