"""The method x position grid that `steerops steer` and `steerops search` sweep.

A flag (`--method`, `--position`) names one cell; without it the stage runs every cell of
the grid listed in params, so one DVC stage covers the whole experiment matrix.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from steerops.cli import overrides_from


def grid_cells(params, args: argparse.Namespace, methods: list[str],
               positions: list[str]) -> Iterator:
    """Params copies with `steering.method`/`steering.position` set, one per grid cell."""
    given = overrides_from(args)
    methods = [params.steering.method] if "steering.method" in given or not methods else methods
    positions = ([params.steering.position] if "steering.position" in given or not positions
                 else positions)
    for position in positions:
        for method in methods:
            cell = params.model_copy(deep=True)
            cell.steering.method = method
            cell.steering.position = position
            yield cell
