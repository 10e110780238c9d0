"""Judging while generating: the steering evaluator with each chunk judged while the next one
generates vs one after the other, same session, same configs, one run.

A session (steered model and judge) is loaded once from a project's params; each pass
evaluates `--configs` configs of the first grid method at the first grid layer, with
coefficients the grid does not use, on a fresh results folder (nothing is served from a
log). The two ways alternate, `--repeats` times each; printed: median seconds with
[min-max], the speed ratio, and the share of the sequential pass spent judging (the most
the overlap can save). Chunks hold `4 x --max-batch-rows / questions` configs; the overlap
needs at least two.

`--endpoint-latency S` judges through the OpenAI-compatible client instead, against an
endpoint on loopback that answers each request after S seconds (a stand-in for a hosted
LLM judge: network-bound, so it does not compete with generation for the cores); each pass
gets a fresh judge cache.

    python bench/judge_overlap.py --params params.yaml --configs 8 --max-batch-rows 40
    python bench/judge_overlap.py --params params.yaml --endpoint-latency 0.5
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch

from steerops.config import load_params
from steerops.judges import make_judge
from steerops.steering.configs import Config, VectorSource
from steerops.steering.evaluate import SteeringEvaluator
from steerops.steering.session import SteeringSession
from steerops.traits import load_trait


def slow_endpoint(latency: float) -> str:
    """A chat-completions endpoint on loopback that answers every request after `latency`
    seconds with the score 50 (probability 0.9) in its top logprobs; returns its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            time.sleep(latency)
            top = [{"token": "50", "logprob": math.log(0.9), "bytes": None}]
            choice = {
                "index": 0,
                "finish_reason": "length",
                "message": {"role": "assistant", "content": "50"},
                "logprobs": {"content": [{**top[0], "top_logprobs": top}]},
            }
            data = json.dumps({"id": "x", "model": body["model"], "choices": [choice]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{httpd.server_address[1]}/v1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--configs", type=int, default=8)
    parser.add_argument("--questions", type=int, default=20)
    parser.add_argument("--max-batch-rows", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument(
        "--endpoint-latency", type=float, default=None, help="judge through a loopback endpoint"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides: dict = {"steering.max_batch_rows": args.max_batch_rows}
    if args.endpoint_latency is not None:
        os.environ["STEEROPS_BENCH_JUDGE_KEY"] = "bench"
        overrides |= {
            "judge.kind": "openai",
            "judge.base_url": slow_endpoint(args.endpoint_latency),
            "judge.model": "bench-judge",
            "judge.api_key_env": "STEEROPS_BENCH_JUDGE_KEY",
        }
    params = load_params(args.params, overrides)
    cfg = params.steering
    trait = params.traits.names[0]
    session = SteeringSession(params, trait, progress=False)
    questions = session.questions[: args.questions]
    method = cfg.methods[0]
    layer = session.layers(cfg.layers)[0]
    source = VectorSource.of(method, cfg.positions[0], cfg.component)
    # odd coefficients: never a grid value, so nothing is served from the grid's log
    configs = [Config.single(source, layer, 0.0513 + 0.0271 * k) for k in range(args.configs)]
    judge_seconds: list[float] = []
    trait_data = load_trait(params.path(params.traits.root), trait)

    def timed(judge):
        score = judge.score

        def timed_score(*a, **kw):
            start = time.perf_counter()
            try:
                return score(*a, **kw)
            finally:
                judge_seconds.append(time.perf_counter() - start)

        judge.score = timed_score
        return judge

    def fresh_judge(folder: Path) -> None:
        """An endpoint judge with an empty cache (the proxy judge keeps none)."""
        if args.endpoint_latency is not None:
            cached = load_params(args.params, {**overrides, "judge.cache_dir": str(folder)})
            session.judge = timed(make_judge(cached, trait_data))

    if args.endpoint_latency is None:  # a copy of its own: it reads while the model steers
        session.judge = timed(make_judge(params, trait_data))

    per_chunk = max(1, 4 * args.max_batch_rows // len(questions))
    print(
        f"{trait}: {method} layer {layer}, {len(configs)} configs x {len(questions)} questions, "
        f"{-(-len(configs) // per_chunk)} chunks of <= {per_chunk} configs, "
        f"{torch.get_num_threads()} torch threads"
    )
    seconds: dict[str, list[float]] = {"overlap": [], "sequential": []}
    judged: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        fresh_judge(Path(tmp) / "warm-cache")
        warm = SteeringEvaluator(session, questions, results_dir=Path(tmp) / "warm")
        warm.evaluate(configs[:1])  # model, judge and baseline warmed up (baseline reused)
        for r in range(args.repeats):
            order = ("overlap", "sequential") if r % 2 == 0 else ("sequential", "overlap")
            for way in order:
                folder = Path(tmp) / f"{way}{r}"
                folder.mkdir()
                (folder / "baselines.jsonl").write_bytes(
                    (Path(tmp) / "warm" / "baselines.jsonl").read_bytes()
                )
                fresh_judge(folder / "cache")
                ev = SteeringEvaluator(
                    session, questions, results_dir=folder, overlap=way == "overlap"
                )
                judge_seconds.clear()
                start = time.perf_counter()
                ev.evaluate(configs)
                seconds[way].append(time.perf_counter() - start)
                if way == "sequential":
                    judged.append(sum(judge_seconds) / seconds[way][-1])
    for way, values in seconds.items():
        print(
            f"{way:>10}: {statistics.median(values):7.1f} s median "
            f"[{min(values):.1f}-{max(values):.1f}] of {len(values)}"
        )
    ratios = [s / o for s, o in zip(seconds["sequential"], seconds["overlap"], strict=True)]
    print(
        f"sequential/overlap: {statistics.median(ratios):.2f}x "
        f"[{min(ratios):.2f}-{max(ratios):.2f}]; judging is "
        f"{100 * statistics.median(judged):.0f}% of the sequential pass"
    )


if __name__ == "__main__":
    main()
