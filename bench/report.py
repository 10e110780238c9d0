"""The report's tables on a run's results: bootstrap draws shared across the configs of a
half (`stats.intervals._draws`, kept between calls) against drawn anew on every call (the
naive way), and what the choice redone on other splits (`report.resplits`) adds.

Both ways run in the same process, alternating, `--repeats` times each; the draw cache is
emptied before every shared repeat, so its first draw is counted. Both must give the same
gap analysis. Reads the results logs the params point at; writes nothing.

    python bench/report.py --params params.yaml --repeats 5
"""

from __future__ import annotations

import argparse
import time
from unittest import mock

import pandas as pd

from steerops.config import load_params
from steerops.report import tables
from steerops.report.load import load_results
from steerops.report.resplit import resplits
from steerops.stats import intervals
from steerops.steering.best import protocol
from summary import ratios, spread


def tables_of(params, threshold: float, seed: int) -> pd.DataFrame:
    """The report's per-config intervals (read with the results) and its gap analysis."""
    return tables.gap_analysis(load_results(params), threshold, seed)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    params = load_params(args.params)
    proto = protocol(params)  # the split the report reads the halves with
    threshold, seed, fraction = params.steering.min_coherence, proto.seed, proto.heldout_fraction
    splits = params.report.resplits
    shared, fresh, resplit_s = [], [], []
    frame = load_results(params)
    gap = tables.gap_analysis(frame, threshold, seed)
    print(f"{len(frame)} configs, report.resplits {splits}")
    for _ in range(args.repeats):
        intervals._draws.cache_clear()
        t, ours = timed(lambda: tables_of(params, threshold, seed))
        shared.append(t)
        with mock.patch.object(intervals, "_draws", intervals._draw):  # every call draws anew
            t, theirs = timed(lambda: tables_of(params, threshold, seed))
        fresh.append(t)
        pd.testing.assert_frame_equal(ours, theirs)  # the same intervals either way
        t, _ = timed(lambda: resplits(frame, gap, threshold, fraction, seed, splits))
        resplit_s.append(t)
    print("| way | seconds, median [range] |")
    print("| --- | --- |")
    print(f"| load + gap analysis, shared draws | {spread(shared, unit=' s')} |")
    print(f"| load + gap analysis, fresh draws | {spread(fresh, unit=' s')} |")
    print(f"| fresh / shared, paired | {spread(ratios(fresh, shared), unit='x')} |")
    print(f"| resplits ({splits} splits) | {spread(resplit_s, unit=' s')} |")


if __name__ == "__main__":
    main()
