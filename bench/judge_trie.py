"""The `hf` judge's integer reading: tree attention vs rows fanned out with cache copies.

`judges.numbers.integer_distributions` reads P(answer = n), n in 0-100, as a trie of the
integers' tokens after each judge prompt. Ways, on the same prompts:
- tree: each level appends a text's live trie nodes to the text's own row, under a mask
  that shows a node its prompt, its ancestors and itself (the prompt's cache read in place);
- fanout: every live node becomes a row of its own with a copy of its prompt's keys and
  values (the beam-search reorder; how the judge read before, and its path where a custom
  mask cannot reach the attention).
The prompts are the built-in trait and coherence templates of `--trait` filled with the
labelled SmolLM2 responses of the proxy judge's test data. The ways alternate, `--repeats`
times; printed: median seconds [min-max] per way, the paired ratio, and the largest
difference between the two ways' probabilities.

    python bench/judge_trie.py --model data/smollm2 --threads 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from steerops.judges.numbers import encode, integer_distributions, number_trie
from steerops.judges.prompts import prompts_for
from steerops.models.generation import format_prompt
from steerops.traits import load_trait
from summary import ratios, spread

ROOT = Path(__file__).resolve().parents[1]
LABELLED = ROOT / "tests/judges/data/proxy_labelled.jsonl"


def main() -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="data/smollm2")
    parser.add_argument("--trait", default="behavior/refusal")
    parser.add_argument("--responses", type=int, default=16, help="labelled responses read")
    parser.add_argument("--batch-size", type=int, default=32, help="prompts per call")
    parser.add_argument("--prune-prob", type=float, default=1e-4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model, padding_side="left")
    prompts = prompts_for(load_trait(ROOT / "traits", args.trait, need_prompts=False))
    rows = [json.loads(line) for line in LABELLED.read_text().splitlines() if line.strip()]
    texts = [
        format_prompt(tokenizer, prompts.messages(kind, row["question"], row["response"]))
        for row in rows[: args.responses]
        for kind in ("trait", "coherence")
    ]
    trie = number_trie(tokenizer, texts[0])
    tokens = [len(encode(tokenizer, t)) for t in texts]
    print(
        f"{len(texts)} judge prompts, {statistics.mean(tokens):.0f} tokens on average, "
        f"{len(trie.value_of)} integers in a trie of depth {max(map(len, trie.value_of))}"
    )
    batches = [texts[i : i + args.batch_size] for i in range(0, len(texts), args.batch_size)]
    seconds: dict[str, list[float]] = {"tree": [], "fanout": []}
    values: dict[str, list[dict[int, float]]] = {}
    for repeat in range(args.repeats):
        for way in ("tree", "fanout") if repeat % 2 == 0 else ("fanout", "tree"):
            start = time.perf_counter()
            values[way] = [
                dist
                for batch in batches
                for dist in integer_distributions(
                    model, tokenizer, batch, trie, args.prune_prob, tree=way == "tree"
                )
            ]
            seconds[way].append(time.perf_counter() - start)
    diff = max(
        abs(a.get(n, 0.0) - b.get(n, 0.0))
        for a, b in zip(values["tree"], values["fanout"], strict=True)
        for n in range(101)
    )
    print(
        ", ".join(f"{way} {spread(s, unit=' s')}" for way, s in seconds.items())
        + f"; fanout / tree {spread(ratios(seconds['fanout'], seconds['tree']))}; "
        f"largest difference {diff:.1e} in a probability"
    )


if __name__ == "__main__":
    main()
