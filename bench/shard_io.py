"""Extraction's file work on the critical path: shards written inline vs by the writer thread.

An extraction of 512 prompts at all 34 layers of a gemma-3-4b-shaped model (hidden 2560,
float32 rows) is two shards of 256 examples. The way before the writer thread wrote each
shard (MD5, then the file) before the next one computed, then read both back into the final
file. Now shard 0 is written by a thread while shard 1 computes (off the critical path when
a shard's forwards take longer than its write: on an H200 about 2 s against the write time
printed below), and the last shard goes from memory into the final file. Both ways run here
on the same random shards, alternating, and print median [min-max] seconds.

    python bench/shard_io.py --repeats 5
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from steerops.extract import engine
from steerops.specs import parse_position
from summary import ratios, spread


def shard(rows: range, layers: list[int], hidden: int) -> dict[str, torch.Tensor]:
    tensors = {f"layer_{layer}": torch.randn(len(rows), hidden) for layer in layers}
    tensors |= {
        f"tokennorm_{layer}": torch.rand(len(rows), 4, dtype=torch.float64) for layer in layers
    }
    tensors["rows"] = torch.tensor(list(rows))
    return tensors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=34)
    ap.add_argument("--hidden", type=int, default=2560)
    ap.add_argument("--shard-examples", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    layers = list(range(args.layers))
    n = args.shard_examples
    first, last = shard(range(n), layers, args.hidden), shard(range(n, 2 * n), layers, args.hidden)
    times: dict[str, list[float]] = {"inline": [], "now": [], "write": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        job = engine.Job(root / "out", parse_position("prompt[-1]"), layers)
        job.out_dir.mkdir()
        paths = [root / "shard_00000.safetensors", root / "shard_00001.safetensors"]
        for r in range(args.repeats):
            for way in ("inline", "now") if r % 2 == 0 else ("now", "inline"):
                start = time.perf_counter()
                if way == "inline":
                    engine._write_shard(paths[0], first, "bench")
                    engine._write_shard(paths[1], last, "bench")
                    engine._assemble(job, paths, 2 * n, "bench")
                else:
                    engine._assemble(job, [paths[0], last], 2 * n, "bench")
                times[way].append(time.perf_counter() - start)
            start = time.perf_counter()
            engine._write_shard(paths[0], first, "bench")
            times["write"].append(time.perf_counter() - start)
    mb = sum(t.numel() * t.element_size() for t in first.values()) / 1e6
    for way, label in (
        ("inline", "inline: 2 shard writes + final file from 2 files"),
        ("now", "now: final file from shard 0's file and shard 1 in memory"),
        ("write", f"one shard's write, off the critical path now ({mb:.0f} MB)"),
    ):
        print(f"{label:<62} {spread(times[way], '.3f', ' s')}")
    paired = spread(ratios(times["inline"], times["now"]), unit="x")
    print(f"inline / now: {paired} paired, over {args.repeats} repeats")


if __name__ == "__main__":
    main()
