"""How the benches print repeated timings: the median and the range over the repeats, and
the paired ratios of two ways measured in the same repeats."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def spread(values: Sequence[float], fmt: str = ".2f", unit: str = "") -> str:
    """'median<unit> [min-max]', e.g. spread(seconds, unit=" s") -> '1.23 s [1.10-1.40]'."""
    return f"{statistics.median(values):{fmt}}{unit} [{min(values):{fmt}}-{max(values):{fmt}}]"


def ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Repeat by repeat: each numerator over the denominator measured beside it."""
    return [a / b for a, b in zip(numerators, denominators, strict=True)]
