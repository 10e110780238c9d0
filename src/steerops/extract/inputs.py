"""Turn a trait's prompts (or its generated responses) into token ids with an exact
prompt/response boundary, and assign the seeded train/val split.

The prompt is rendered through the chat template with the generation prompt and encoded as
`steerops generate` encodes it; the response is encoded on its own without special tokens
and appended, so the prompt frame ends exactly where the response frame starts.
"""

from __future__ import annotations

import numpy as np

from steerops.extract.engine import Example
from steerops.models.generation import encode_prompt, format_prompt
from steerops.traits import POLARITIES, Trait


def encode(
    tokenizer,
    prompt: str | list[dict],
    system_prompt: str | None = None,
    response: str | None = None,
) -> tuple[np.ndarray, int]:
    """(prompt ids + response ids, number of prompt ids)."""
    prompt_ids = encode_prompt(tokenizer, format_prompt(tokenizer, prompt, system_prompt))
    response_ids = []
    if response:
        response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    ids = np.asarray(list(prompt_ids) + list(response_ids), dtype=np.int64)
    return ids, len(prompt_ids)


def prompt_examples(tokenizer, trait: Trait) -> list[Example]:
    """One example per positive then negative prompt (no response)."""
    examples = []
    for polarity in POLARITIES:
        for source, p in enumerate(getattr(trait, polarity)):
            ids, n_prompt = encode(tokenizer, p.prompt, p.system_prompt)
            info = {
                "index": len(examples),
                "polarity": polarity,
                "source_index": source,
                "rollout": 0,
            }
            examples.append(Example(ids, n_prompt, info))
    return examples


def response_examples(tokenizer, rows: list[dict]) -> list[Example]:
    examples = []
    for i, row in enumerate(rows):
        ids, n_prompt = encode(tokenizer, row["prompt"], row.get("system_prompt"), row["response"])
        info = {
            "index": int(row.get("index", i)),
            "polarity": row["polarity"],
            "source_index": int(row["source_index"]),
            "rollout": int(row.get("rollout", 0)),
        }
        examples.append(Example(ids, n_prompt, info))
    return examples


def assign_splits(
    examples: list[Example], seed: int, val_fraction: float, n_sources: dict[str, int]
) -> None:
    """Set `info["split"]`: a seeded share of source prompts goes to val, so all rollouts of a
    prompt share a split and every position of a trait agrees on it.

    A paired trait (`is_paired`: positive i and negative i written from the same source
    prompt) draws one split per source, so a pair is never torn across train and val (`pca`
    subtracts pair members); an unpaired trait draws each polarity's split on its own."""
    val: dict[str, set[int]] = {}
    paired = is_paired(n_sources)
    for k, polarity in enumerate(POLARITIES):
        n = n_sources.get(polarity, 0)
        n_val = round(val_fraction * n)
        if val_fraction > 0 and n >= 2:
            n_val = min(max(n_val, 1), n - 1)
        order = np.random.default_rng([seed, 0 if paired else k]).permutation(n)
        val[polarity] = {int(i) for i in order[:n_val]}
    for ex in examples:
        inside = ex.info["source_index"] in val[ex.info["polarity"]]
        ex.info["split"] = "val" if inside else "train"


def is_paired(n_sources: dict[str, int]) -> bool:
    """Equal, non-zero prompt counts per polarity: the trait layout's pairing convention."""
    counts = [n_sources.get(p, 0) for p in POLARITIES]
    return counts[0] > 0 and len(set(counts)) == 1


def split_counts(examples: list[Example]) -> dict[str, int]:
    counts = {key: 0 for key in (*POLARITIES, "train", "val")}
    for ex in examples:
        counts[ex.info["polarity"]] += 1
        counts[ex.info["split"]] += 1
    return counts
