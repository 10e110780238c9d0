"""The main job's steer stage as it runs now vs two earlier ways, one run.

Every way runs `steerops steer` on the same params as a fresh scratch run (its own output
folder, judge cache and tracking store, so nothing is served from a log):
- now: the stage as configured (the static decode loop, its eager steps attending only to
  the live part of the cache; the proxy judge reads with the steered model, the prompts
  of consecutive batches in one forward and the common chat prefix once per call, each
  response after its question from the block its steering began at, with the states
  generation kept);
- whole: the static loop attending to the whole cache, and the proxy judge loading its own
  copy of the model and reading every row whole, prompt and response (`judges.fluency`'s
  path for architectures the decode loop does not cover) with one log-softmax over each
  batch's logits, every reading of every row (equal rows again), and the baseline
  generated and judged first, on its own;
- hf: as `whole`, on HF generate (`--loop hf`), the reference loop;
- own: as `now`, with every row computing the blocks below its steering itself (without
  `models.decode_trunk`'s sharing);
- unkept: as `now`, with the proxy judge reading every response from block 0 (without
  starting from the states generation kept, `models.unsteered`).
Each run is a subprocess timed from start to exit: imports, model loading, tracking and
plots included, as under DVC. The ways alternate, `--repeats` times, in rotating order.
Printed: median seconds [min-max] per way, paired ratios to `now`, and whether every way
wrote the same metrics (metrics/steer.json; coherence to 0.01).

    python bench/steer_stage.py --params params.yaml --repeats 3 [--ways now,whole,hf,own,unkept]
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from summary import ratios, spread

WAYS = ("now", "whole", "hf", "own", "unkept")


def child(way: str, params: str, out: str) -> int:
    """One stage run in this process (`--child`)."""
    from steerops import cli, judges
    from steerops.judges import fluency, proxy
    from steerops.models import decode, decode_step, unsteered
    from steerops.steering.evaluate import SteeringEvaluator

    argv = ["steer", "--params", params, "--out", out]
    if way in ("whole", "hf"):
        make_judge = judges.make_judge
        judges.make_judge = lambda params, trait, loaded=None: make_judge(params, trait)
        fluency.covers = lambda model: "read whole rows"
        decode_step.SlotState.attend = lambda self, window: None  # type: ignore[method-assign]
        proxy.ProxyJudge._nll_at = _every_row  # type: ignore[method-assign]
        proxy.ProxyJudge.explain = _every_reading  # type: ignore[method-assign]
        fluency._mean_nll = _one_log_softmax

        def baseline_first(self, configs, evaluate=SteeringEvaluator.evaluate):
            self.baseline()  # generated and judged on its own
            return evaluate(self, configs)

        SteeringEvaluator.evaluate = baseline_first  # type: ignore[method-assign]
    if way == "hf":
        argv += ["--loop", "hf"]
    if way == "own":  # the loop's default options, every row prefilling its own blocks
        decode.StaticLoop = functools.partial(decode.StaticLoop, share_trunk=False)
    if way in ("whole", "hf", "unkept"):  # nothing kept for the judge
        unsteered.keep = lambda model, blocks: None
    return cli.main(argv)


def _every_row(judge, rows, questions, responses):
    """The proxy judge's readings before equal pairs were read once."""
    rows = list(rows)
    out = [None] * len(responses)
    values = judge._nll([questions[i] for i in rows], [responses[i] for i in rows])
    for i, value in zip(rows, values, strict=True):
        out[i] = value
    return out


def _one_log_softmax(logits, targets, mask):
    """The judge's likelihood before it took the log-softmax a few rows at a time: the
    column blocks `logits` concatenated (one block: whole rows), one log-softmax over them."""
    import torch

    block = logits[0] if len(logits) == 1 else torch.cat(list(logits), dim=1)
    logprobs = torch.log_softmax(block.to(torch.promote_types(block.dtype, torch.float32)), -1)
    token_nll = -logprobs.gather(-1, targets[..., None]).squeeze(-1)
    return (torch.where(mask.bool(), token_nll, 0.0).sum(1) / mask.sum(1)).tolist()


def _every_reading(judge, questions, responses):
    """The proxy judge's signals before readings that cannot change a score were left out:
    the empty question's reading wherever the answer reading is not hopeless, the trait
    reading wherever a phrase shows."""
    from steerops.judges.proxy import _ramp

    phrases = [judge.phrases.find(r) for r in responses]
    answer = judge._nll_at(range(len(responses)), questions, responses)
    plausible = [
        i for i, a in enumerate(answer) if a is not None and _ramp(a, *judge.scale.answer_nll) > 0
    ]
    neutral = judge._nll_at(plausible, [""] * len(responses), responses)
    showing = [i for i, p in enumerate(phrases) if p is not None and judge.instruction]
    asked = [f"{q}\n\n{judge.instruction}" for q in questions]
    trait_nll = judge._nll_at(showing, asked, responses)
    return [
        {
            "trait": 100.0 if phrase is not None else 0.0,
            "coherence": judge.scale.score(text, a, n, t),
        }
        for text, phrase, a, n, t in zip(
            responses, phrases, answer, neutral, trait_nll, strict=True
        )
    ]


def metrics(out: Path) -> dict:
    found = json.loads((out / "metrics" / "steer.json").read_text())
    return {
        cell: {k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}
        for cell, row in found.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ways", default="now,whole,hf", help="comma-separated, `now` first")
    parser.add_argument("--child", choices=WAYS, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sys.exit(child(args.child, args.params, args.out))
    ways = args.ways.split(",")
    if ways[0] != "now" or not set(ways) <= set(WAYS):
        parser.error(f"--ways: `now` first, then any of {', '.join(WAYS[1:])}")
    seconds: dict[str, list[float]] = {w: [] for w in ways}
    found: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="steer-stage-") as tmp:
        for repeat in range(args.repeats):
            for way in ways[repeat % len(ways) :] + ways[: repeat % len(ways)]:
                out = Path(tmp) / f"{way}-{repeat}"
                command = [sys.executable, __file__, "--child", way]
                command += ["--params", args.params, "--out", str(out)]
                start = time.perf_counter()
                subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
                seconds[way].append(time.perf_counter() - start)
                found[way] = metrics(out)
                print(f"repeat {repeat} {way}: {seconds[way][-1]:.1f} s", flush=True)
    for way in ways:
        s = seconds[way]
        print(f"{way:>6}: {spread(s, '.1f', ' s')}")
    for way in ways[1:]:
        print(f"{way} / now, paired: {spread(ratios(seconds[way], seconds['now']))}")
    print(f"same metrics: {all(found[w] == found['now'] for w in ways)}")


if __name__ == "__main__":
    main()
