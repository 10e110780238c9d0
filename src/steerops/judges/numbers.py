"""The probability that a local causal LM answers each integer 0-100, when an integer may
span several tokens ("1","0","0" for digit tokenizers, "10","0" after a merge).

P(n) = P(token sequence of n | prompt) * P(next token does not extend the number), the
second factor so that "1" does not also count the mass of "10"-"19" and "100", nor a number
the mass of an answer on another scale: a fraction ("7/10": a next token starting "/") or,
after 0 or 1, a 0-1 decimal ("0.9": one starting "."), read as no number as the `openai`
judge reads them (it sees the tokens that follow; here only the next one is read, so
"85/100" and a final "1." count as another scale too). Every
integer's tokens form a trie; one prompt forward gives the root's distribution, then each
level feeds one more token per live trie node, reusing the prompt's KV cache. With tree
attention (`tree_fits`: an architecture it is tested on, sdpa or eager attention, the
prompt and the whole trie inside any sliding window) a level appends its text's live
nodes to the text's own row, under a mask that shows each node only its prompt, its
ancestors and itself; otherwise every node becomes a row of its own, with a copy of its
prompt's cache (the beam-search reorder). Prefixes less likely than
`prune_prob` are not expanded: the mass they hide is below prune_prob each.
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
from steerops.models.decode import LOOP_ARCHITECTURES
from steerops.models.head import contiguous_head_input

Path = tuple[int, ...]


@dataclass
class NumberTrie:
    """Token sequences of the integers 0-100 as a trie of token-id prefixes."""

    value_of: dict[Path, int]  # full sequence -> the integer it spells
    children: dict[Path, list[int]] = field(default_factory=dict)
    extends: torch.Tensor | None = None  # [vocab] bool: tokens that continue a number
    decimal: torch.Tensor | None = None  # [vocab] bool: tokens that make 0 or 1 a decimal

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
    extends = torch.tensor(
        [bool(p) and ((p[0].isascii() and p[0].isdigit()) or p[0] == "/") for p in pieces]
    )
    decimal = torch.tensor([bool(p) and p[0] == "." for p in pieces])
    return NumberTrie(value_of, children, extends, decimal)


def _accepts_logits_to_keep(model) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


# Architectures read exactly with tree attention: every one is tested against full forwards
# (tests/judges/test_hf.py), the same set the decode loop covers.
TREE_ARCHITECTURES = LOOP_ARCHITECTURES

# A live trie node: (text index, token path, log P(path | text), cache columns of the path).
Node = tuple[int, Path, float, tuple[int, ...]]


@torch.no_grad()
def integer_distributions(
    model,
    tokenizer,
    texts: list[str],
    trie: NumberTrie,
    prune_prob: float = 0.0,
    tree: bool | None = None,
) -> list[dict[int, float]]:
    """P(answer = n) for n in 0-100 after each rendered text, as one left-padded batch.
    `tree`: read the trie's levels with tree attention (None: wherever the model allows,
    `tree_fits`), else fan rows out with copies of the prompt's cache."""
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
    nodes: list[Node] = [(b, (), 0.0, ()) for b in range(len(texts))]
    dists: list[dict[int, float]] = [{} for _ in texts]
    logits = out.logits[:, -1]
    level: _FanOut | _TreeLevels
    if tree_fits(model, ids.shape[1], trie) if tree is None else tree:
        level = _TreeLevels(model, out.cache, mask, tokenizer.pad_token_id or 0)
    else:
        level = _FanOut(model, out.cache, mask, extra)
    while True:
        nodes, parents = _expand(nodes, logits, trie, prune_prob, dists)
        if not nodes:
            return dists
        logits, nodes = level(nodes, parents)


def _expand(
    nodes: list[Node], logits: torch.Tensor, trie: NumberTrie, prune_prob: float, dists
) -> tuple[list[Node], list[int]]:
    """Record the integers the nodes spell (`logits`: one row per node); their children
    likelier than `prune_prob`, with the index of each one's parent in `nodes`."""
    child_ids = trie.child_tokens
    column = {t: i for i, t in enumerate(child_ids)}
    child_logp, stop_logp, unit_stop_logp = _node_stats(
        logits, trie.extends, trie.decimal, child_ids
    )
    children: list[Node] = []
    parents: list[int] = []
    for r, (b, path, logp, cols) in enumerate(nodes):
        if path in trie.value_of:
            value = trie.value_of[path]
            stop = unit_stop_logp[r] if value in (0, 1) else stop_logp[r]
            dists[b][value] = math.exp(logp + stop)
        for t in trie.children.get(path, []):
            child = logp + child_logp[r][column[t]]
            if math.exp(child) >= prune_prob:
                children.append((b, (*path, t), child, cols))
                parents.append(r)
    return children, parents


def tree_fits(model, prompt_columns: int, trie: NumberTrie) -> bool:
    """Whether tree attention reads this model exactly: an architecture whose every layer
    attends through the custom 4D mask (tested for each one: not recurrent or linear
    layers, not ALiBi), sdpa or eager attention (not flash), and the prompt plus every
    node of the trie inside any sliding window (then the window hides nothing and no
    sliding cache layer drops a column)."""
    config = model.config.get_text_config(decoder=True)
    if getattr(model.config, "model_type", None) not in TREE_ARCHITECTURES:
        return False
    if getattr(config, "_attn_implementation", None) not in ("sdpa", "eager"):
        return False
    if not set(getattr(config, "layer_types", None) or []) <= {
        "full_attention",
        "sliding_attention",
    }:
        return False
    nodes = len({seq[:k] for seq in trie.value_of for k in range(1, len(seq) + 1)})
    windows = [getattr(config, name, None) for name in ("sliding_window", "attention_chunk_size")]
    return all(prompt_columns + nodes + 1 < w for w in windows if w)


class _FanOut:
    """Each level feeds one token per live node as its own row, fanning each parent's
    cache out to its children (`reorder_cache` copies the prompt's keys and values)."""

    def __init__(self, model, cache, mask: torch.Tensor, extra: dict):
        self.model, self.cache, self.mask, self.extra = model, cache, mask, extra

    def __call__(self, nodes: list[Node], parents: list[int]) -> tuple[torch.Tensor, list[Node]]:
        """The next-token logits of each node (one row each), and the nodes."""
        device = self.mask.device
        index = torch.tensor(parents, device=device)
        self.cache.reorder_cache(index)  # the last level's rows are its nodes, in order
        self.mask = torch.cat([self.mask[index], self.mask.new_ones(len(nodes), 1)], dim=1)
        tokens = torch.tensor([path[-1] for _, path, _, _ in nodes], device=device)
        out = self.model(
            input_ids=tokens[:, None],
            attention_mask=self.mask,
            position_ids=position_ids_for(self.mask)[:, -1:],
            cache=self.cache,
            use_cache=True,
            **self.extra,
        )
        return out.logits[:, -1], nodes


class _TreeLevels:
    """Each level appends every live node's token to its own text's row, and a 4D mask
    lets a node see only its text's prompt, its ancestors and itself: the prompt's keys
    and values are read in place, never copied per node. A node of depth d sits at
    position (real prompt length + d - 1), as in the unbranched sequence."""

    def __init__(self, model, cache, mask: torch.Tensor, pad_id: int):
        self.model, self.cache, self.pad_id = model, cache, pad_id
        self.prompt = mask.bool()  # [texts, prompt columns]
        self.lengths = mask.long().sum(-1)  # real prompt tokens per text
        self.columns = mask.shape[1]  # columns in the cache so far
        self.dtype = model.get_input_embeddings().weight.dtype

    def __call__(self, nodes: list[Node], parents: list[int]) -> tuple[torch.Tensor, list[Node]]:
        """The next-token logits of each node, and the nodes with their own columns added."""
        texts, device = self.prompt.shape[0], self.prompt.device
        slot = [0] * texts  # the next free query slot of each text's row
        where = []
        for b, *_ in nodes:
            where.append((b, slot[b]))
            slot[b] += 1
        width, past = max(slot), self.columns
        total = past + width
        tokens = torch.full((texts, width), self.pad_id, dtype=torch.long)
        depth = torch.zeros(texts, width, dtype=torch.long)
        sees = torch.zeros(texts, width, total, dtype=torch.bool)
        prompt = self.prompt.cpu()
        placed: list[Node] = []
        for (b, j), (_, path, logp, cols) in zip(where, nodes, strict=True):
            tokens[b, j], depth[b, j] = path[-1], len(path) - 1
            sees[b, j, : prompt.shape[1]] = prompt[b]
            sees[b, j, list(cols)] = True  # its ancestors' columns
            placed.append((b, path, logp, (*cols, past + j)))
        sees[:, torch.arange(width), past + torch.arange(width)] = True  # itself (spare: only)
        mask = torch.zeros(sees.shape, dtype=self.dtype)
        mask.masked_fill_(~sees, torch.finfo(self.dtype).min)
        positions = self.lengths[:, None].cpu() + depth
        out = self.model(
            input_ids=tokens.to(device),
            attention_mask=mask[:, None].to(device),
            position_ids=positions.to(device),
            cache=self.cache,
            use_cache=True,
        )
        self.columns = total
        rows = torch.tensor([b for b, _ in where], device=out.logits.device)
        slots = torch.tensor([j for _, j in where], device=out.logits.device)
        return out.logits[rows, slots], placed


def _node_stats(
    logits: torch.Tensor, extends: torch.Tensor, decimal: torch.Tensor, child_ids: list[int]
) -> tuple[list[list[float]], list[float], list[float]]:
    """Per row: log-probs of the trie's child tokens, log P(the number stops here), and the
    same for 0 or 1, which a decimal point also continues."""
    logp = logits.float().log_softmax(-1)
    vocab = logp.shape[-1]

    def sized(mask: torch.Tensor) -> torch.Tensor:
        # The model's vocab may be padded past the tokenizer's: those ids continue nothing.
        return torch.nn.functional.pad(mask[:vocab], (0, max(0, vocab - mask.numel()))).to(
            logp.device
        )

    extends = sized(extends)
    stop = logp.masked_fill(extends, float("-inf")).logsumexp(-1)
    unit_stop = logp.masked_fill(extends | sized(decimal), float("-inf")).logsumexp(-1)
    kids = logp[:, torch.tensor(child_ids, device=logp.device)]
    return kids.cpu().tolist(), stop.cpu().tolist(), unit_stop.cpu().tolist()
