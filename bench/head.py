"""A prefill's last logits: the LM head on HF's last-position slice vs a contiguous copy.

HF models slice `hidden[:, -1:, :]` before the head (`logits_to_keep=1`); on CPU torch's
matmul broadcasts the head's weight for that strided input into a batched product.
`models.head.contiguous_head_input` hands the head a copy instead. (Only for a weight that
does not require grad, as loaded models' weights here: otherwise matmul copies the slice
itself.) Both ways run on one
SmolLM2-shaped model's head (real weights from `--model`, else random), alternate
`--repeats` times per row count, and must give the same logits.

    python bench/head.py --model data/smollm2 --threads 2
"""

from __future__ import annotations

import argparse
import time
from types import SimpleNamespace

import torch

from steerops.models.head import contiguous_head_input
from summary import ratios, spread


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="a local model folder (default: a random 49152 x 576 head)")
    ap.add_argument("--rows", default="32,240")
    ap.add_argument("--prompt", type=int, default=18, help="prefill input tokens per row")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.model:
        from transformers import AutoModelForCausalLM

        head = AutoModelForCausalLM.from_pretrained(args.model).get_output_embeddings()
    else:
        head = torch.nn.Linear(576, 49152, bias=False)
    head.requires_grad_(False)  # as `models.loading` leaves every weight (with a weight that
    # requires grad, matmul copies the slice itself)
    model = SimpleNamespace(get_output_embeddings=lambda: head)  # all the context reads
    print("rows | slice ms median [min-max] | contiguous ms | slice / contiguous, paired")
    for rows in map(int, args.rows.split(",")):
        hidden = torch.randn(rows, args.prompt, head.in_features)
        seconds: dict[str, list[float]] = {"slice": [], "contiguous": []}
        with torch.inference_mode():
            plain = head(hidden[:, -1:, :])
            for repeat in range(args.repeats):
                for way in ("slice", "contiguous")[:: 1 if repeat % 2 == 0 else -1]:
                    start = time.perf_counter()
                    if way == "slice":
                        got = head(hidden[:, -1:, :])
                    else:
                        with contiguous_head_input(model):
                            got = head(hidden[:, -1:, :])
                    seconds[way].append(time.perf_counter() - start)
                    torch.testing.assert_close(got, plain, rtol=1e-5, atol=1e-5)
        s, c = seconds["slice"], seconds["contiguous"]
        ms = [1e3 * x for x in s], [1e3 * x for x in c]
        print(
            f"{rows} | {spread(ms[0], '.1f')} | {spread(ms[1], '.1f')}"
            f" | {spread(ratios(s, c), '.1f')}"
        )


if __name__ == "__main__":
    main()
