"""Tracking's share of a small cached `steerops steer` run, MLflow on vs off, in this checkout
and optionally another one (e.g. the code before batched tracking).

The workload: a toy grid (2 methods x 4 layers x 4 coefficients, 20
questions) whose configs are all served from the results log, so what is left is the model
load, the judge-free bookkeeping, the outputs and the tracking. Each variant runs as its own
`python -m steerops steer` process (as DVC runs it) on its own copy of the project, the
four variants alternate, and each is repeated; printed: median wall time and spread, and the
tracking share = (tracked - untracked) / tracked.

    python bench/tracking.py --toy data/toy [--before ../other/src] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

TRAIT, POSITION, METHODS = "toy/refusal", "prompt[-1]", ("mean_diff", "random_baseline")
HERE = Path(__file__).resolve().parents[1] / "src"


def project(toy: Path, folder: Path, tracked: bool) -> Path:
    """A params.yaml on the toy world with random unit vectors for both methods."""
    import json

    import torch

    sys.path.insert(0, str(HERE))
    from steerops.vectors.store import save_vectors, vectors_dir

    model = {"id": str(toy / "model")}
    params = {
        "experiment": "bench-tracking",
        "paths": {"toy": str(toy), "out": str(folder / "outputs")},
        "models": {"base": model, "instruct": model},
        "traits": {"root": str(toy / "traits"), "names": [TRAIT]},
        "judge": {"kind": "toy"},
        "steering": {
            "methods": list(METHODS),
            "positions": [POSITION],
            "coefficients": [0.5, 1.0, 1.5, 2.0],
            "subset": 20,
        },
        "tracking": {"enabled": tracked, "uri": f"sqlite:///{folder / 'mlflow.db'}"},
    }
    folder.mkdir(parents=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    config = json.loads((toy / "model" / "config.json").read_text())
    gen = torch.Generator().manual_seed(0)
    for method in METHODS:
        vectors = {}
        for layer in range(config["num_hidden_layers"]):
            v = torch.randn(config["hidden_size"], generator=gen)
            vectors[layer] = v / v.norm()
        meta = {"method": method, "layers": {str(k): {"mean_norm": 20.0} for k in vectors}}
        where = vectors_dir(folder / "outputs", TRAIT, "base", POSITION, "residual", method)
        save_vectors(where, vectors, meta)
    return folder / "params.yaml"


def steer(src: Path, params: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(src), "DVC_STAGE": "steer", "OMP_NUM_THREADS": "2"}
    env.pop("MLFLOW_TRACKING_URI", None)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "steerops", "steer", "--params", str(params)],
        env=env,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toy", type=Path, required=True, help="a built toy world")
    parser.add_argument(
        "--before", type=Path, default=None, help="src/ of another checkout to compare with"
    )
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-tracking-"))
    codes = [("after", HERE)]
    if args.before is not None:
        codes.insert(0, ("before", args.before.resolve()))
    variants = {
        (code, tracked): (src, project(args.toy, work / f"{code}-{tracked}", tracked))
        for code, src in codes
        for tracked in (True, False)
    }
    for src, params in variants.values():  # fill the results logs (and the stores)
        steer(src, params)
    times: dict[tuple[str, bool], list[float]] = {v: [] for v in variants}
    for _ in range(args.repeats):
        for variant, (src, params) in variants.items():
            times[variant].append(steer(src, params))
    print(f"cached toy steer, {len(METHODS)} cells x 16 configs, {args.repeats} repeats")
    print("| code | MLflow | wall s (median) | spread | tracking share |")
    print("| --- | --- | --- | --- | --- |")
    for code, _ in codes:
        on, off = (statistics.median(times[(code, t)]) for t in (True, False))
        for tracked in (True, False):
            t = times[(code, tracked)]
            share = f"{(on - off) / on:.0%}" if tracked else ""
            print(
                f"| {code} | {'on' if tracked else 'off'} | {statistics.median(t):.1f} | "
                f"{min(t):.1f}-{max(t):.1f} | {share} |"
            )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
