"""How long a killed search worker's trials wait before they are evaluated again.

A worker process starts a batch whose evaluation never ends and is killed (SIGKILL) while
it evaluates; a resumed worker is then opened and timed from its start to the first
evaluation of the killed batch's coefficients. Two cases, alternated and repeated:

- this node: the killed worker ran on this machine, so the resume sees at once that the
  holder of the trials has ended (the new behaviour);
- other node: the killed worker pretends to run elsewhere, so the resume must wait for its
  heartbeat to go stale (grace period), as every resume did before.

The evaluator is a closed-form stand-in (no model), so the figures are the study's own.

    python bench/search_workers.py                           # heartbeat 2 s, grace 10 s
    python bench/search_workers.py --heartbeat 30 --grace 120 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SETTINGS = {"layers": [2], "min_coherence": 68.0}


@dataclass
class Result:
    trait_mean: float
    coherence_mean: float
    responses: tuple = ()
    weights: tuple = ()


class Evaluator:
    """Closed-form scores; `hang` makes evaluation never end; records when each batch
    started."""

    settings_hash = "bench"

    def __init__(self, hang: bool = False):
        self.questions, self.hang, self.calls = ["q1", "q2"], hang, []

    def weight_for(self, method, position, component, layer, coefficient):
        return coefficient

    def baseline(self):
        return Result(5.0, 100.0)

    def served(self, configs):
        return [False] * len(configs)

    def evaluate(self, configs):
        self.calls.append((time.monotonic(), [c.coefficient for c in configs]))
        if self.hang:
            time.sleep(3600)
        return [
            Result(
                50.0 * min(1.0, c.coefficient / 2),
                100.0 - 30.0 * c.coefficient,
                weights=(c.coefficient,),
            )
            for c in configs
        ]


def open_study(url: str, heartbeat: int, grace: int):
    from steerops.search.study import SearchStudy, Space

    return SearchStudy(
        url,
        "bench",
        Space(0.0, 3.0, (2,)),
        68.0,
        SETTINGS,
        sampler="tpe",
        startup_trials=2,
        heartbeat_s=heartbeat,
        grace_s=grace,
    )


def search(study, evaluator) -> None:
    from steerops.search.loop import VectorSource, run_search

    run_search(
        study,
        evaluator,
        VectorSource("mean_diff", "prompt[-1]", "residual"),
        4,
        2,
        "positive",
        progress=False,
        poll_s=0.2,
    )


def worker(url: str, heartbeat: int, grace: int, elsewhere: bool) -> None:
    """Subprocess entry: search with an evaluation that never ends."""
    from steerops import liveness

    if elsewhere:
        liveness.node_id = lambda: "another-node"
    search(open_study(url, heartbeat, grace), Evaluator(hang=True))


def one_case(folder: Path, heartbeat: int, grace: int, elsewhere: bool) -> float:
    """Seconds from the resumed worker's start until every trial of the killed batch is
    being evaluated again."""
    url = f"sqlite:///{folder / 'optuna.db'}"
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        f"from search_workers import worker; worker({url!r}, {heartbeat}, {grace}, "
        f"{elsewhere})"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        while True:
            time.sleep(0.2)
            if (folder / "optuna.db").exists():
                watch = open_study(url, heartbeat, grace)
                killed = sorted(r.coefficient for r in watch.records() if r.state == "running")
                if len(killed) == 2:
                    break
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    start = time.monotonic()
    evaluator = Evaluator()
    search(open_study(url, heartbeat, grace), evaluator)
    started = {
        c: min((t for t, coefs in evaluator.calls if c in coefs), default=None) for c in killed
    }
    if None in started.values():
        raise SystemExit(f"bench: the killed batch {killed} was not taken over: {evaluator.calls}")
    return max(started.values()) - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--heartbeat", type=int, default=2)
    parser.add_argument("--grace", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"this node": [], "other node": []}
    with tempfile.TemporaryDirectory() as tmp:
        # warm-up: the first search in a process pays the samplers' imports
        search(open_study(f"sqlite:///{tmp}/warm.db", args.heartbeat, args.grace), Evaluator())
        for i in range(args.repeats):
            for case in times:
                folder = Path(tmp) / f"{case.replace(' ', '-')}-{i}"
                folder.mkdir()
                times[case].append(
                    one_case(folder, args.heartbeat, args.grace, case == "other node")
                )
    print(
        f"heartbeat {args.heartbeat} s, grace {args.grace} s, {args.repeats} repeats: "
        "seconds from the resume's start to the killed batch's evaluation"
    )
    for case, values in times.items():
        spread = f"{min(values):.2f}-{max(values):.2f}"
        print(
            f"  {case:10s} median {statistics.median(values):7.2f}  range {spread}  "
            f"({', '.join(f'{v:.2f}' for v in values)})"
        )


if __name__ == "__main__":
    main()
