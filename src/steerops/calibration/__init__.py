"""Massive-activation calibration: streaming per-layer statistics, the global-dims rule and
the heatmap. The `steerops calibrate` stage lives in `steerops.calibrate`."""

from steerops.calibration.stats import (
    LayerSums,
    global_dims,
    layer_stats,
    median_last,
    relative_magnitude,
    summarize,
)

__all__ = ["LayerSums", "global_dims", "layer_stats", "median_last", "relative_magnitude",
           "summarize"]
