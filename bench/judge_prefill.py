"""The proxy judge's prompt prefills: consecutive batches' prompts in one forward vs a
forward per batch.

`judges.fluency.answer_nll` reads each answer on from its prompt's keys and values. It
used to prefill each batch's distinct prompts on their own: a forward over a few rows
(about 7 prompts of 16 tokens in the main job's steer stage) costs about as much as
reading the weights. Now the distinct prompts of as many consecutive batches as hold
`batch_size` of them share one forward. Both ways read the steer stage's three readings
(after the question, the question plus the trait's instruction, the empty question; the
stage reads the last two only where they can change a score) of 40 questions x 7 configs
of random 24-token answers on SmolLM2, alternate `--repeats` times, and must give the same
values to float32 rounding.

    python bench/judge_prefill.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import transformers as T

from steerops.judges import fluency
from steerops.models.generation import format_prompt
from summary import ratios, spread

ROOT = Path(__file__).resolve().parents[1]
TRAIT = ROOT / "traits" / "behavior" / "refusal"


def readings(tokenizer, questions: list[str], configs: int, tokens: int):
    """(prompts, answers) of each reading: every question `configs` times, random answers."""
    instruction = (TRAIT / "instruction.txt").read_text(encoding="utf-8").strip()
    generator = torch.Generator().manual_seed(0)
    out = []
    for asked in (questions, [f"{q}\n\n{instruction}" for q in questions], [""] * len(questions)):
        ids = [
            tokenizer(format_prompt(tokenizer, q), add_special_tokens=False)["input_ids"]
            for q in asked
        ]
        prompts = [p for p in ids for _ in range(configs)]
        vocab = tokenizer.vocab_size
        answers = torch.randint(100, vocab, (len(prompts), tokens), generator=generator)
        out.append((prompts, answers.tolist()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "data" / "smollm2"))
    ap.add_argument("--questions", type=int, default=40, help="steering.subset")
    ap.add_argument("--configs", type=int, default=7, help="the grid's 6 and the baseline")
    ap.add_argument("--tokens", type=int, default=24, help="steering.max_new_tokens")
    ap.add_argument("--batch-size", type=int, default=32, help="judge.batch_size")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tokenizer = T.AutoTokenizer.from_pretrained(args.model)
    model = T.AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    steering = json.loads((TRAIT / "steering.json").read_text(encoding="utf-8"))
    questions = steering["questions"][: args.questions]
    rows = readings(tokenizer, questions, args.configs, args.tokens)
    pad = tokenizer.pad_token_id or 0
    blocks = fluency._prompt_blocks

    def read(per_batch: bool) -> list:
        fluency._prompt_blocks = (lambda b, p, m: [[x] for x in b]) if per_batch else blocks
        return [fluency.answer_nll(model, p, a, pad, args.batch_size) for p, a in rows]

    read(False)  # warm-up
    ways = {"blocks": False, "per_batch": True}
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    values = {}
    for repeat in range(args.repeats):
        for name in list(ways)[repeat % 2 :] + list(ways)[: repeat % 2]:
            start = time.perf_counter()
            values[name] = read(ways[name])
            seconds[name].append(time.perf_counter() - start)
    for name, s in seconds.items():
        print(f"{name:>9}: {spread(s, unit=' s')}")
    paired = spread(ratios(seconds["per_batch"], seconds["blocks"]), unit="x")
    print(f"per_batch / blocks, paired: {paired}")
    pairs = [
        (a, b)
        for mine, theirs in zip(values["blocks"], values["per_batch"], strict=True)
        for a, b in zip(mine, theirs, strict=True)
    ]
    worst = max(abs(a - b) for a, b in pairs)
    # A block's prompts are padded to its longest, not the batch's: more masked columns
    # in attention, float32 rounding apart.
    print(f"answers read: {len(pairs)}, largest difference: {worst:.1e} nats/token")
    fluency._prompt_blocks = blocks
    if worst > 1e-4:
        raise SystemExit("the two ways disagree beyond float32 rounding")


if __name__ == "__main__":
    main()
