"""A decode step's greedy tokens: the float32 LM head whole vs screened in bf16.

`models.head_screen.ScreenedHead` takes each row's 16 largest bf16 logits, recomputes them
in float32 and keeps their argmax where its error bound proves no other word can reach
it (other rows get the whole float32 product). Both ways run on real hidden states (the
model's last-block output, after its final norm, at every position of its chat-formatted
steering questions, shuffled), alternate `--repeats` times per row count and must give
the same tokens.

    python bench/head_screen.py --model data/smollm2 --threads 2
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from steerops.models.head_screen import ScreenedHead
from summary import ratios, spread


def hidden_states(path: str, questions: str, rows: int):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from steerops.models.generation import render_prompts

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(path)
    texts = render_prompts(tok, json.loads(open(questions).read())["questions"])
    out = []
    with torch.inference_mode():
        for text in texts:
            ids = tok(text, return_tensors="pt").input_ids
            out.append(model.base_model(input_ids=ids).last_hidden_state[0])
            if sum(map(len, out)) >= rows:
                break
    states = torch.cat(out)
    order = torch.randperm(len(states), generator=torch.Generator().manual_seed(0))
    return model.get_output_embeddings().weight.detach(), states[order[:rows]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="data/smollm2")
    ap.add_argument("--questions", default="traits/behavior/refusal/steering.json")
    ap.add_argument("--rows", default="64,256")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sizes = list(map(int, args.rows.split(",")))
    weight, states = hidden_states(args.model, args.questions, max(sizes))
    print(
        f"head {tuple(weight.shape)}, {args.threads} threads, bf16 instructions:",
        torch.ops.mkldnn._is_mkldnn_bf16_supported(),
    )
    columns = ["rows", "whole ms median [min-max]", "screened ms", "whole / screened, paired"]
    print(" | ".join([*columns, "rows refined", "rows whole"]))
    for rows in sizes:
        hidden = states[:rows].contiguous()
        head = ScreenedHead(weight)
        seconds: dict[str, list[float]] = {"whole": [], "screened": []}
        with torch.inference_mode():
            plain = F.linear(hidden, weight).argmax(-1)
            for repeat in range(args.repeats):
                for way in ("whole", "screened")[:: 1 if repeat % 2 == 0 else -1]:
                    start = time.perf_counter()
                    if way == "whole":
                        got = F.linear(hidden, weight).argmax(-1)
                    else:
                        got = head.argmax(hidden)
                    seconds[way].append(time.perf_counter() - start)
                    assert torch.equal(got, plain), f"{way}: tokens differ"
        w, s = seconds["whole"], seconds["screened"]
        ms = [1e3 * x for x in w], [1e3 * x for x in s]
        print(
            f"{rows} | {spread(ms[0], '.1f')} | {spread(ms[1], '.1f')}"
            f" | {spread(ratios(w, s), '.2f')} | {head.refined_rows / head.rows:.1%}"
            f" | {head.fallback_rows / head.rows:.1%}"
        )


if __name__ == "__main__":
    main()
