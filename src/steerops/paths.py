"""The folder scheme of the per-cell artifacts vectors, steering results and searches share:

<out>/<kind>/<cat>/<trait>/<variant>/<position>/<component>/<method>/
"""

from __future__ import annotations

from pathlib import Path

from steerops.io import check_folder_name, check_trait_name
from steerops.specs import MethodName, Position, position_slug

PositionLike = str | Position
MethodLike = str | MethodName


def cell_dir(
    kind: str,
    out: Path,
    trait: str,
    variant: str,
    position: PositionLike,
    component: str,
    method: MethodLike,
) -> Path:
    check_trait_name(trait)
    check_folder_name(variant, "variant")
    return Path(out) / kind / trait / variant / position_slug(position) / component / str(method)
