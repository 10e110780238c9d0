"""The probability that a local causal LM answers each integer 0-100, when an integer may
span several tokens ("1","0","0" for digit tokenizers, "10","0" after a merge).

P(n) = P(token sequence of n | prompt) * P(next token does not extend the number), the
second factor so that "1" does not also count the mass of "10"-"19" and "100". Every
integer's tokens form a trie; one prompt forward gives the root's distribution, then each
level feeds one more token per live trie node, reusing the prompt's KV cache (reordered
with the beam-search API, so rows can fan out). Prefixes less likely than `prune_prob` are
not expanded: the mass they hide is below prune_prob each.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field

import torch

from steerops.errors import SteeropsError
from steerops.judges.scoring import MAX_SCORE
from steerops.models.batching import pad_batch
from steerops.models.capture import position_ids_for
from steerops.models.head import contiguous_head_input

Path = tuple[int, ...]


@dataclass
class NumberTrie:
    """Token sequences of the integers 0-100 as a trie of token-id prefixes."""

    value_of: dict[Path, int]  # full sequence -> the integer it spells
    children: dict[Path, list[int]] = field(default_factory=dict)
    extends: torch.Tensor | None = None  # [vocab] bool: tokens that continue a number

    @property
    def child_tokens(self) -> list[int]:
        return sorted({t for kids in self.children.values() for t in kids})


def adds_special_tokens(tokenizer) -> bool:
    # Chat templates already write the special tokens (bos); plain prompts need them added.
    return not getattr(tokenizer, "chat_template", None)


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=adds_special_tokens(tokenizer))["input_ids"]


def number_trie(tokenizer, prompt_text: str) -> NumberTrie:
    """How each integer is tokenised right after a rendered prompt (the generation prompt
    is the same for every judge prompt, so one sample prompt fixes it)."""
    base = encode(tokenizer, prompt_text)
    unk = tokenizer.unk_token_id
    value_of: dict[Path, int] = {}
    for n in range(MAX_SCORE + 1):
        full = encode(tokenizer, prompt_text + str(n))
        seq = full[len(base) :] if full[: len(base)] == base else []
        if not seq:  # merged across the boundary: fall back to the bare number
            seq = tokenizer(str(n), add_special_tokens=False)["input_ids"]
        if seq and unk not in seq:
            value_of.setdefault(tuple(seq), n)
    if not value_of:
        raise SteeropsError("judge: the judge's tokenizer cannot spell the integers 0-100")
    children: dict[Path, list[int]] = {}
    for seq in value_of:
        for k in range(len(seq)):
            kids = children.setdefault(seq[:k], [])
            if seq[k] not in kids:
                kids.append(seq[k])
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    extends = torch.tensor([bool(p) and p[0].isascii() and p[0].isdigit() for p in pieces])
    return NumberTrie(value_of, children, extends)


def _accepts_logits_to_keep(model) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


@torch.no_grad()
def integer_distributions(
    model, tokenizer, texts: list[str], trie: NumberTrie, prune_prob: float = 0.0
) -> list[dict[int, float]]:
    """P(answer = n) for n in 0-100 after each rendered text, as one left-padded batch."""
    if tokenizer.padding_side != "left":
        raise ValueError("integer_distributions needs a left-padding tokenizer")
    device = model.get_input_embeddings().weight.device
    ids, mask, _ = pad_batch([encode(tokenizer, t) for t in texts], tokenizer.pad_token_id or 0)
    mask = mask.to(device)
    extra = {"logits_to_keep": 1} if _accepts_logits_to_keep(model) else {}
    with contiguous_head_input(model):
        out = model(
            input_ids=ids.to(device),
            attention_mask=mask,
            position_ids=position_ids_for(mask),
            use_cache=True,
            **extra,
        )
    child_ids = trie.child_tokens
    column = {t: i for i, t in enumerate(child_ids)}
    # One model row per live trie node: (text index, token path, log P(path | text)).
    rows: list[tuple[int, Path, float]] = [(b, (), 0.0) for b in range(len(texts))]
    dists: list[dict[int, float]] = [{} for _ in texts]
    while True:
        child_logp, stop_logp = _node_stats(out.logits[:, -1], trie.extends, child_ids)
        next_rows, parents = [], []
        for r, (b, path, logp) in enumerate(rows):
            if path in trie.value_of:
                dists[b][trie.value_of[path]] = math.exp(logp + stop_logp[r])
            for t in trie.children.get(path, []):
                child_logp_rt = logp + child_logp[r][column[t]]
                if math.exp(child_logp_rt) >= prune_prob:
                    next_rows.append((b, (*path, t), child_logp_rt))
                    parents.append(r)
        if not next_rows:
            return dists
        index = torch.tensor(parents, device=device)
        cache = out.past_key_values
        cache.reorder_cache(index)  # fan each parent row out to its live children
        mask = torch.cat([mask[index], mask.new_ones(len(parents), 1)], dim=1)
        tokens = torch.tensor([path[-1] for _, path, _ in next_rows], device=device)
        out = model(
            input_ids=tokens[:, None],
            attention_mask=mask,
            position_ids=position_ids_for(mask)[:, -1:],
            past_key_values=cache,
            use_cache=True,
            **extra,
        )
        rows = next_rows


def _node_stats(
    logits: torch.Tensor, extends: torch.Tensor, child_ids: list[int]
) -> tuple[list[list[float]], list[float]]:
    """Per row: log-probs of the trie's child tokens, and log P(the number stops here)."""
    logp = logits.float().log_softmax(-1)
    vocab = logp.shape[-1]
    # The model's vocab may be padded past the tokenizer's: those ids never extend a number.
    extends = torch.nn.functional.pad(extends[:vocab], (0, max(0, vocab - extends.numel())))
    stop = logp.masked_fill(extends.to(logp.device), float("-inf")).logsumexp(-1)
    kids = logp[:, torch.tensor(child_ids, device=logp.device)]
    return kids.cpu().tolist(), stop.cpu().tolist()
