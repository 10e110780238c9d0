"""The proxy judge's likelihood reading: each prompt read once vs every row read whole.

`judges.fluency.response_nll` on the labelled SmolLM2 responses of the proxy judge's test
data (real greedy responses, several per question), in two of the judge's readings: as an
answer (question + response) and after an empty question (the judge makes that reading
only for plausible answers; here every row). Ways:
- shared: the common chat prefix once per call, each distinct prompt once per batch, the
  responses read on from the prompt's keys and values (what the judge does);
- whole: every row its whole prompt and response (the judge's path for architectures the
  decode loop does not cover, and how it read before).
The ways alternate, `--repeats` times; printed: median seconds [min-max] per way and
reading, the paired ratio, and the largest difference between the two ways' values.

    python bench/judge_nll.py --model data/smollm2 --threads 2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from steerops.judges import fluency
from summary import ratios, spread

LABELLED = Path(__file__).parents[1] / "tests/judges/data/proxy_labelled.jsonl"


def main() -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="data/smollm2")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model, padding_side="left")
    rows = [json.loads(line) for line in LABELLED.read_text().splitlines() if line.strip()]
    responses = [r["response"] for r in rows]
    readings = {"answer": [r["question"] for r in rows], "neutral": [""] * len(rows)}
    print(f"{len(rows)} responses to {len(set(readings['answer']))} questions")
    covers = fluency.covers
    ways = {"shared": covers, "whole": lambda model: "every row read whole"}
    for reading, questions in readings.items():
        seconds: dict[str, list[float]] = {w: [] for w in ways}
        values = {}
        for repeat in range(args.repeats):
            for way in list(ways)[repeat % 2 :] + list(ways)[: repeat % 2]:
                fluency.covers = ways[way]
                start = time.perf_counter()
                values[way] = fluency.response_nll(
                    model, tokenizer, questions, responses, args.batch_size
                )
                seconds[way].append(time.perf_counter() - start)
        fluency.covers = covers
        diff = max(
            abs(a - b)
            for a, b in zip(values["shared"], values["whole"], strict=True)
            if a is not None
        )
        print(
            f"{reading}: "
            + ", ".join(f"{w} {spread(s, unit=' s')}" for w, s in seconds.items())
            + f"; whole / shared {spread(ratios(seconds['whole'], seconds['shared']))}; "
            f"largest difference {diff:.1e} nats"
        )


if __name__ == "__main__":
    main()
