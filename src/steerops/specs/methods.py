"""Method names: a base method plus an optional cleaning suffix, one grammar everywhere.

Every stage that takes a method (`vectors`, `clean`, `steer`, `search`, `report`) parses
it here (params when they load), so a cleaned variant is a method like any other and the
vectors directory is named after it. The base methods are the built-in ones
(`BASE_METHODS`, known before their torch implementations are imported, so params parse
without torch) plus any registered with `steerops.vectors.methods.register`.

    NAME    := BASE | BASE "_" CLEAN
    BASE    := a built-in or registered method (mean_diff, probe, gradient, ...)
    CLEAN   := SELECT | "cleaned" | "preclean" | "preclean_" SELECT
    SELECT  := "top" N | "layertop" N | "dims" D ("-" D)*       (N >= 1, D >= 0)

Post-extraction cleaning (compute the vector, zero dims, renormalise to unit norm):

    mean_diff_top2         the calibration's top-2 global dims (of the set cleaning.dim_set
                           names: massive_dims, or global_dims for top_mean)
    mean_diff_layertop2    each layer's own top-2 (of that layer's set)
    mean_diff_cleaned      every global dim of the set (a dim massive at any layer is
                           zeroed at every layer; layertopN follows each layer's own set)
    mean_diff_dims12-345   dims 12 and 345 (needs no calibration)

Pre-extraction cleaning (zero the dims in every activation, then run the method):

    probe_preclean         every global dim
    probe_preclean_top2    top-2 global dims (likewise _preclean_layertopN, _preclean_dimsA-B)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from steerops.errors import SteeropsError

BASE_METHODS = ("mean_diff", "probe", "gradient", "random_baseline", "pca")
# name -> implementation; filled by steerops.vectors.methods.register
IMPLEMENTATIONS: dict[str, Callable[..., Any]] = {}
_SELECT = re.compile(r"^(?:(top|layertop)([1-9][0-9]*)|dims([0-9]+(?:-[0-9]+)*))$")
GRAMMAR_HINT = (
    "expected _topN, _layertopN, _dimsA-B-..., _cleaned, _preclean or "
    "_preclean_<topN|layertopN|dimsA-B>"
)


@dataclass(frozen=True)
class Cleaning:
    """Which dims to zero (`select`), and whether before (`pre`) or after (`post`) fitting."""

    mode: Literal["pre", "post"]
    select: Literal["global", "top", "layertop", "dims"]
    n: int | None = None  # for top / layertop
    dims: tuple[int, ...] = ()  # for an explicit list

    @property
    def needs_calibration(self) -> bool:
        return self.select != "dims"

    @property
    def spec(self) -> str:
        """The suffix without the mode, e.g. `top2`, `dims12-345`, `global`."""
        if self.select in ("top", "layertop"):
            return f"{self.select}{self.n}"
        if self.select == "dims":
            return "dims" + "-".join(map(str, self.dims))
        return "global"


@dataclass(frozen=True)
class MethodName:
    name: str  # canonical spelling, also the vectors directory name
    base: str  # registered method that computes the direction
    cleaning: Cleaning | None = None

    def __str__(self) -> str:
        return self.name


def known_methods() -> list[str]:
    return sorted(set(BASE_METHODS) | set(IMPLEMENTATIONS))


def parse_method(name: str | MethodName) -> MethodName:
    """Split `name` into its base method and cleaning; one-line error naming the bad part."""
    if isinstance(name, MethodName):
        return name
    if not isinstance(name, str):
        raise SteeropsError(f"method {name!r}: expected a method name such as mean_diff")
    known = known_methods()
    base = next(
        (m for m in sorted(known, key=len, reverse=True) if name == m or name.startswith(m + "_")),
        None,
    )
    if base is None:
        raise SteeropsError(
            f"unknown method {name!r} (known: {', '.join(known)}; add a "
            f"cleaning suffix such as _top1 or _preclean)"
        )
    if name == base:
        return MethodName(name, base)
    cleaning = _parse_cleaning(name, name[len(base) + 1 :])
    # one spelling per cleaning (`dims07-3` is `dims3-7`), as positions: one folder, one cell
    return MethodName(_canonical(base, cleaning), base, cleaning)


def _canonical(base: str, cleaning: Cleaning) -> str:
    if cleaning.select == "global":
        return f"{base}_{'preclean' if cleaning.mode == 'pre' else 'cleaned'}"
    return f"{base}_{'preclean_' if cleaning.mode == 'pre' else ''}{cleaning.spec}"


def _parse_cleaning(name: str, suffix: str) -> Cleaning:
    mode: Literal["pre", "post"] = "post"
    if suffix == "cleaned":
        return Cleaning("post", "global")
    if suffix == "preclean":
        return Cleaning("pre", "global")
    if suffix.startswith("preclean_"):
        mode, suffix = "pre", suffix[len("preclean_") :]
    match = _SELECT.match(suffix)
    if not match:
        raise SteeropsError(f"method {name!r}: bad cleaning suffix {suffix!r} ({GRAMMAR_HINT})")
    kind, n, dims = match.groups()
    select: Literal["top", "layertop"] = "top" if kind == "top" else "layertop"
    if dims is not None:
        values = tuple(int(d) for d in dims.split("-"))
        if len(set(values)) != len(values):
            raise SteeropsError(f"method {name!r}: dim repeated in {suffix!r}")
        return Cleaning(mode, "dims", dims=tuple(sorted(values)))
    return Cleaning(mode, select, n=int(n))
