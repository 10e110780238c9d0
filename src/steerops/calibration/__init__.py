"""Massive-activation calibration (`steerops calibrate`): streaming per-layer statistics
(`stats`), the heatmap (`heatmap`) and the stage (`command`).

Importing the package is cheap; import the submodule you need."""
